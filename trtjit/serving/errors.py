"""Serving errors: one exception type whose ``code`` picks the HTTP status and the gRPC status code."""

from __future__ import annotations

from trtjit.errors import TrtjitError

# code -> (HTTP status, gRPC status code name)
CODES = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "NOT_FOUND": (404, "NOT_FOUND"),
    "TOO_LARGE": (413, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "UNSUPPORTED": (400, "UNIMPLEMENTED"),
    "INTERNAL": (500, "INTERNAL"),
}


class ServingError(TrtjitError):
    """A request the server answers with an error; ``code`` is one of ``CODES``."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        if code not in CODES:
            raise ValueError(f"unknown serving error code {code!r}")
        super().__init__(message)
        self.code = code

    @property
    def http_status(self) -> int:
        return CODES[self.code][0]

    @property
    def grpc_code(self) -> str:
        return CODES[self.code][1]


def invalid(message: str) -> ServingError:
    return ServingError(message, "INVALID_ARGUMENT")


def not_found(message: str) -> ServingError:
    return ServingError(message, "NOT_FOUND")


def unavailable(message: str) -> ServingError:
    return ServingError(message, "UNAVAILABLE")
