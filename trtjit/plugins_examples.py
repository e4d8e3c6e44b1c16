"""An example plugin: GroupNorm followed by SiLU, fused in two Triton kernels (the op table has neither).

    import trtjit.plugins_examples   # registers the plugin and the torch custom op

* ONNX: a node ``GroupNormSiLU`` in domain ``trtjit.examples`` (attributes ``num_groups``, ``epsilon``;
  inputs X (N, C, H, W), scale (C), bias (C)).
* torch: ``torch.ops.trtjit_examples.group_norm_silu(x, weight, bias, num_groups, eps)``, a
  ``torch.library`` custom op whose CPU/CUDA implementation is PyTorch's group_norm + silu; inside a model
  compiled by trtjit it becomes the plugin.

The plugin accepts fp32 NCHW, fp16 NCHW and fp16 NHWC (the builder picks fp32 NCHW for fp32 networks); it
keeps the per-(sample, group) mean and reciprocal standard deviation in its workspace between the two
kernels: statistics, then normalize + scale/shift + SiLU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from trtjit.ir import TensorSpec
from trtjit.plugins import FP16_NCHW, FP16_NHWC, FP32_NCHW, NHWC, Plugin, PluginFormat, register

DOMAIN = "trtjit.examples"


@triton.jit
def _gn_stats(x_ptr, ws_ptr, C, HW, G, s_n, s_c, s_hw, eps, BLOCK: tl.constexpr):
    """One program per (sample, group): mean and 1/std over the group's C/G channels x H*W pixels."""
    pid = tl.program_id(0)
    n = pid // G
    g = pid % G
    cg = C // G
    count = cg * HW
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, count, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        m = idx < count
        c = g * cg + idx // HW
        hw = idx % HW
        v = tl.load(x_ptr + n * s_n + c * s_c + hw * s_hw, mask=m, other=0.0).to(tl.float32)
        acc += v
        acc2 += v * v
    mean = tl.sum(acc, axis=0) / count
    var = tl.maximum(tl.sum(acc2, axis=0) / count - mean * mean, 0.0)
    tl.store(ws_ptr + 2 * pid, mean)
    tl.store(ws_ptr + 2 * pid + 1, 1.0 / tl.sqrt(var + eps))


@triton.jit
def _gn_apply(x_ptr, w_ptr, b_ptr, y_ptr, ws_ptr, C, HW, G, s_n, s_c, s_hw, BLOCK: tl.constexpr):
    """Program (sample*group, block): y = silu((x - mean) * rstd * w[c] + b[c])."""
    pid = tl.program_id(0)
    blk = tl.program_id(1)
    n = pid // G
    g = pid % G
    cg = C // G
    count = cg * HW
    idx = blk * BLOCK + tl.arange(0, BLOCK)
    m = idx < count
    c = g * cg + idx // HW
    hw = idx % HW
    off = n * s_n + c * s_c + hw * s_hw
    mean = tl.load(ws_ptr + 2 * pid)
    rstd = tl.load(ws_ptr + 2 * pid + 1)
    x = tl.load(x_ptr + off, mask=m, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + c, mask=m, other=1.0).to(tl.float32)
    b = tl.load(b_ptr + c, mask=m, other=0.0).to(tl.float32)
    y = (x - mean) * rstd * w + b
    y = y * tl.sigmoid(y)
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=m)


class GroupNormSiLUPlugin(Plugin):
    """silu(group_norm(x, num_groups, weight, bias, eps)) for NCHW (or NHWC) tensors."""

    name = "GroupNormSiLU"
    version = "1"
    namespace = DOMAIN
    torch_op = "trtjit_examples::group_norm_silu"
    FORMATS = (FP32_NCHW, FP16_NCHW, FP16_NHWC)
    BLOCK = 256

    def __init__(self, num_groups: int, epsilon: float = 1e-5, **_ignored: Any) -> None:
        super().__init__(num_groups=int(num_groups), epsilon=float(epsilon))
        self.num_groups = int(num_groups)
        self.eps = float(epsilon)
        self.shape: tuple[int, ...] | None = None
        self.fmt: PluginFormat | None = None

    @classmethod
    def fields_from_torch(cls, args: dict[str, Any]) -> dict[str, Any]:
        return {"num_groups": args["num_groups"], "epsilon": args.get("eps", 1e-5)}

    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        x = inputs[0]
        if len(x.shape) != 4 or x.shape[1] % self.num_groups:
            raise ValueError(f"GroupNormSiLU needs an (N, C, H, W) input with C divisible by num_groups="
                             f"{self.num_groups}, got {list(x.shape)}")
        return [TensorSpec(x.shape, x.dtype)]

    def supports_format(self, fmt: PluginFormat) -> bool:
        return fmt in self.FORMATS

    def configure(self, inputs: list[TensorSpec], outputs: list[TensorSpec], fmt: PluginFormat,
                  max_batch: int) -> None:
        self.shape = inputs[0].shape
        self.fmt = fmt

    def workspace_size(self, max_batch: int) -> int:
        return 2 * max_batch * self.num_groups * 4  # fp32 (mean, rstd) per sample and group

    def enqueue(self, inputs: list[torch.Tensor], outputs: list[torch.Tensor], workspace: torch.Tensor,
                stream: Any) -> None:
        x, w, b = inputs
        (y,) = outputs
        n, c, h, wd = self.shape
        hw = h * wd
        if self.fmt.layout == NHWC:  # physical (N, H, W, C)
            s_n, s_c, s_hw = hw * c, 1, c
        else:
            s_n, s_c, s_hw = c * hw, hw, 1
        ws = workspace[: 2 * n * self.num_groups * 4].view(torch.float32)
        groups = n * self.num_groups
        count = (c // self.num_groups) * hw
        _gn_stats[(groups,)](x, ws, c, hw, self.num_groups, s_n, s_c, s_hw, self.eps, BLOCK=self.BLOCK)
        _gn_apply[(groups, triton.cdiv(count, self.BLOCK))](x, w, b, y, ws, c, hw, self.num_groups, s_n, s_c,
                                                              s_hw, BLOCK=self.BLOCK)


register(GroupNormSiLUPlugin, replace=True)


def _define_torch_op() -> Any:
    try:
        return torch.ops.trtjit_examples.group_norm_silu
    except (AttributeError, RuntimeError):
        pass

    @torch.library.custom_op("trtjit_examples::group_norm_silu", mutates_args=())
    def group_norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int,
                        eps: float = 1e-5) -> torch.Tensor:
        return F.silu(F.group_norm(x, num_groups, weight, bias, eps))

    @group_norm_silu.register_fake
    def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int,
          eps: float = 1e-5) -> torch.Tensor:
        return torch.empty_like(x)

    return torch.ops.trtjit_examples.group_norm_silu


group_norm_silu = _define_torch_op()


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int,
              eps: float = 1e-5) -> torch.Tensor:
    """PyTorch's result, for tests."""
    return F.silu(F.group_norm(x, num_groups, weight, bias, eps))


def onnx_node(inputs: list[str], outputs: list[str], num_groups: int, epsilon: float = 1e-5, **kw: Any) -> Any:
    """An ONNX NodeProto using the plugin."""
    import onnx.helper

    return onnx.helper.make_node("GroupNormSiLU", inputs, outputs, domain=DOMAIN, num_groups=num_groups,
                                 epsilon=epsilon, **kw)


__all__ = ["DOMAIN", "GroupNormSiLUPlugin", "group_norm_silu", "onnx_node", "reference"]
