"""trtjit's exceptions: every user-facing failure is one of these, with a message that says what and where."""

from __future__ import annotations


class TrtjitError(Exception):
    """Base class of every error trtjit raises on purpose."""


class InputError(TrtjitError, ValueError):
    """The caller passed something trtjit cannot use (wrong type, count, shape or dtype)."""


class UnsupportedOpError(TrtjitError):
    """The model uses operators trtjit has no definition for; the message lists all of them at once."""

    def __init__(self, unsupported: dict[str, list[str]]):
        self.unsupported = unsupported
        lines = [f"model uses {len(unsupported)} unsupported operator(s):"]
        for op, where in sorted(unsupported.items()):
            shown = ", ".join(where[:8]) + (f", ... ({len(where)} places)" if len(where) > 8 else "")
            lines.append(f"  {op}: at {shown}")
        lines.append("run `trtjit ops` to list the supported operators")
        super().__init__("\n".join(lines))


class GraphError(TrtjitError):
    """The IR is inconsistent (found by verify()); names the node and, when known, the pass."""


class BuildError(TrtjitError):
    """A node cannot be lowered to a kernel; names the node."""


class KernelCompileError(BuildError):
    """Triton could not compile a generated kernel for a target; ``kernel`` and ``target`` name them (the
    builder uses them to drop a tactic that does not compile, as TensorRT skips a failing tactic)."""

    def __init__(self, message: str, kernel: str = "?", target: str = "?"):
        super().__init__(message)
        self.kernel, self.target = kernel, target


class EngineError(TrtjitError):
    """An engine cannot run or be loaded."""


class CalibrationError(InputError):
    """INT8 calibration cannot proceed: empty or malformed calibration data, or a cache that does not fit
    (another graph, another algorithm, changed data); names the batch, tensor or cache file."""
