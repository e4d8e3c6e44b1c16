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


def test_kernels_of_one_source_with_other_buffer_dtypes_get_their_own_binary(gen):
    """Two gathers with the same source but int32 / int64 indices: a cubin is compiled for its pointer dtypes,
    so each needs its own (sharing one would read int64 indices as int32 on the GPU)."""
    from trtjit.ir import dtype_name

    class TwoGathers(torch.nn.Module):
        def forward(self, x, y, i32, i64):
            return x[i32], y[i64]

    x, y = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    idx = torch.randint(0, 8, (3,), generator=gen)
    engine = trtjit.compile(TwoGathers(), (x, y, idx.int(), idx), targets=["sm_90"])
    gathers = [(k, b) for k, b in zip(engine.kernels, engine.binaries["sm_90"]) if any(
        engine.graph.spec(a).dtype in (torch.int32, torch.int64) for a in k.args)]
    assert len(gathers) == 2
    for k, b in gathers:
        assert [p[1][1:] for p in b.params[:len(k.args)]] == [dtype_name(engine.graph.spec(a).dtype).replace(
            "float", "fp").replace("int", "i") for a in k.args]
    a, b = engine(x, y, idx.int(), idx)
    assert torch.equal(a, x[idx]) and torch.equal(b, y[idx])
