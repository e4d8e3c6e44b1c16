"""KServe v2 tensor datatypes and the conversions between wire formats and torch tensors.

Binary tensor data (the binary tensor data extension, and gRPC ``raw_*_contents``) is the tensor's
elements in row-major order, little endian, with no padding; BOOL is one byte per element and BF16
two bytes (the upper half of the float32).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import torch

from trtjit.serving.errors import invalid

TORCH_OF: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "BF16": torch.bfloat16,
    "FP32": torch.float32,
    "FP64": torch.float64,
}
DATATYPE_OF: dict[torch.dtype, str] = {v: k for k, v in TORCH_OF.items()}
# Datatypes of the protocol that no trtjit engine takes: named in errors, never accepted.
KNOWN = set(TORCH_OF) | {"UINT16", "UINT32", "UINT64", "BYTES"}

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little endian
    raise ImportError("trtjit.serving assumes a little-endian host (binary tensor data is little endian)")


def datatype_of(dtype: torch.dtype) -> str:
    try:
        return DATATYPE_OF[dtype]
    except KeyError:
        raise invalid(f"tensors of dtype {dtype} cannot be served") from None


def config_type(datatype: str) -> str:
    """The model configuration's name of a datatype (``FP32`` -> ``TYPE_FP32``)."""
    return "TYPE_" + ("STRING" if datatype == "BYTES" else datatype)


def numel(shape: list[int] | tuple[int, ...]) -> int:
    return math.prod(shape)


def check_shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                       for s in shape):
        raise invalid(f"input {name!r}: 'shape' must be a list of integers, got {shape!r}")
    if any(s < 0 for s in shape):
        raise invalid(f"input {name!r}: shape {list(shape)} has a negative dimension")
    return [int(s) for s in shape]


def check_datatype(name: str, datatype: Any) -> torch.dtype:
    if not isinstance(datatype, str) or datatype not in KNOWN:
        raise invalid(f"input {name!r}: unknown datatype {datatype!r} (KServe v2 datatypes: "
                      f"{', '.join(sorted(KNOWN))})")
    if datatype not in TORCH_OF:
        raise invalid(f"input {name!r}: datatype {datatype} is not supported by trtjit engines")
    return TORCH_OF[datatype]


def from_bytes(name: str, datatype: str, shape: list[int], data: bytes | memoryview) -> torch.Tensor:
    """A CPU tensor over ``data`` (raw little-endian elements); checks the byte count."""
    dtype = check_datatype(name, datatype)
    want = numel(shape) * dtype.itemsize
    if len(data) != want:
        raise invalid(f"input {name!r}: {len(data)} bytes of binary data for shape {shape} {datatype}, "
                      f"expected {want}")
    if want == 0:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)


def _flatten(data: Any, out: list) -> None:
    for x in data:
        if isinstance(x, list):
            _flatten(x, out)
        else:
            out.append(x)


def from_json(name: str, datatype: str, shape: list[int], data: Any) -> torch.Tensor:
    """A CPU tensor from the JSON ``data`` of an input (flat or nested, row-major)."""
    dtype = check_datatype(name, datatype)
    if not isinstance(data, list):
        data = [data]
    flat: list = []
    _flatten(data, flat)
    if len(flat) != numel(shape):
        raise invalid(f"input {name!r}: {len(flat)} data elements for shape {shape} (expected {numel(shape)})")
    if dtype == torch.bool:
        if not all(isinstance(x, bool) for x in flat):
            raise invalid(f"input {name!r}: BOOL data must be true/false values")
    elif dtype.is_floating_point:
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in flat):
            raise invalid(f"input {name!r}: {datatype} data must be numbers")
    else:
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
            raise invalid(f"input {name!r}: {datatype} data must be integers")
        info = torch.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise invalid(f"input {name!r}: a value is out of range for {datatype}")
    if dtype == torch.bfloat16:
        return torch.tensor(flat, dtype=torch.float32).to(torch.bfloat16).reshape(shape)
    return torch.from_numpy(np.asarray(flat, dtype=_numpy_dtype(dtype))).reshape(shape)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


def to_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def to_json(t: torch.Tensor) -> list:
    """The flat row-major element list of a tensor, as the JSON ``data`` of an output."""
    t = t.detach().cpu().reshape(-1)
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.tolist()
