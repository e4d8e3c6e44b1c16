"""Torch converters for explicit quantization: quantize/dequantize ops become IR ``quantize`` /
``dequantize`` nodes, which ``passes/quantize_int8.py`` folds into int8 GEMM/conv kernels.

Covered: ``quantized_decomposed.{quantize,dequantize}_per_tensor`` (what PT2E's ``convert_pt2e`` emits),
and ``aten.fake_quantize_per_tensor_affine`` (QAT models: a quantize-dequantize pair). trtjit's int8 is
symmetric: zero point 0 and the int8 range [-128, 127] (or [-127, 127]); anything else is refused
naming the node. Registered when ``trtjit`` is imported.
"""

from __future__ import annotations

from typing import Any

import torch

from trtjit.errors import BuildError
from trtjit.frontend_torch import Ctx, converter
from trtjit.ir import Value


def _qparams(c: Ctx, a: dict[str, Any]) -> float:
    scale, zp = a.get("scale"), a.get("zero_point", 0)
    lo, hi = a.get("quant_min", -128), a.get("quant_max", 127)
    dtype = a.get("dtype", torch.int8)
    if isinstance(scale, Value) or isinstance(zp, Value):
        raise BuildError(f"node {c.name!r}: quantization with tensor-valued scale/zero point is not supported "
                         "(trtjit's int8 takes a constant per-tensor scale)")
    if zp != 0 or (lo, hi) not in ((-128, 127), (-127, 127)) or dtype not in (torch.int8, None):
        raise BuildError(f"node {c.name!r}: only symmetric int8 quantization is supported (zero point 0, range "
                         f"[-128, 127]); got zero point {zp}, range [{lo}, {hi}], dtype {dtype}")
    if not float(scale) > 0:
        raise BuildError(f"node {c.name!r}: quantization scale must be positive, got {scale}")
    return float(scale)


@converter("quantized_decomposed.quantize_per_tensor.default")
def _quantize(c: Ctx, a: dict[str, Any]) -> Value:
    x = a["input"]
    if c.spec(x).dtype != torch.float32:
        x = c.add("cast", [x], dtype="float32")
    return c.add("quantize", [x], scale=_qparams(c, a))


@converter("quantized_decomposed.dequantize_per_tensor.default")
def _dequantize(c: Ctx, a: dict[str, Any]) -> Value:
    if c.spec(a["input"]).dtype != torch.int8:
        raise BuildError(f"node {c.name!r}: dequantize of {c.spec(a['input']).dtype}; trtjit dequantizes int8")
    out = a.get("out_dtype")
    if out not in (None, torch.float32):
        raise BuildError(f"node {c.name!r}: dequantize to {out} is not supported (float32 only)")
    return c.add("dequantize", [a["input"]], scale=_qparams(c, a))


@converter("aten.fake_quantize_per_tensor_affine")
def _fake_quantize(c: Ctx, a: dict[str, Any]) -> Value:
    s = _qparams(c, a)
    x = a["input"]
    if c.spec(x).dtype != torch.float32:
        raise BuildError(f"node {c.name!r}: fake quantization of {c.spec(x).dtype}; float32 only")
    return c.add("dequantize", [c.add("quantize", [x], scale=s)], scale=s)
