"""Repeated blocks of a network compile once: kernels whose sources differ only in name, docstring and
comments (which name their nodes) share one launchable function and one cross-compiled binary."""

from __future__ import annotations

import copy

import torch
from trtjit.codegen.common import kernel_identity

import trtjit
from tests.conftest import assert_close_rel


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 16)
        self.norm = torch.nn.LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.fc2(torch.nn.functional.gelu(self.fc1(x))))


def test_identity_ignores_names_docstrings_and_comments_only():
    a = 'import triton\n\n@triton.jit\ndef k_a(in0, out0):\n    """layer a"""\n    v1 = in0 * 2  # a.mul\n'
    b = 'import triton\n\n@triton.jit\ndef k_b(in0, out0):\n    """layer b"""\n    v1 = in0 * 2  # b.mul\n'
    c = 'import triton\n\n@triton.jit\ndef k_c(in0, out0):\n    """layer a"""\n    v1 = in0 * 3  # a.mul\n'
    assert kernel_identity(a, "k_a") == kernel_identity(b, "k_b") != kernel_identity(c, "k_c")
    # a helper written above the kernel (TL_HELPERS) keeps its docstring; the kernel's own is what differs
    helper = '@triton.jit\ndef _gelu(x):\n    """erf GELU"""\n    return x\n\n\n'
    ha, hb = (s.replace("@triton.jit\ndef k_", helper + "@triton.jit\ndef k_") for s in (a, b))
    assert kernel_identity(ha, "k_a") == kernel_identity(hb, "k_b") != kernel_identity(a, "k_a")
    assert '"""erf GELU"""' in kernel_identity(ha, "k_a") and '"""layer a"""' not in kernel_identity(ha, "k_a")


def test_repeated_blocks_share_functions_and_binaries(gen):
    model = torch.nn.Sequential(*(Block() for _ in range(4))).eval()
    x = torch.randn(2, 6, 16, generator=gen)
    engine = trtjit.compile(model, (x,), targets=["sm_90"])
    distinct = {kernel_identity(k.source, k.name) for k in engine.kernels}
    assert len(engine.kernels) >= 8 and len(distinct) == len(engine.kernels) // 4  # one compilation per block's kernel
    assert any("_gelu" in k.source for k in engine.kernels)  # a kernel with a helper above it shares too
    bins = engine.binaries["sm_90"]
    assert len({b.cubin for b in bins}) == len(distinct)
    fns = engine._functions()
    assert len({id(f) for f in fns}) == len(distinct)
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
        assert_close_rel(engine(x).double(), ref, 1e-4)
