"""Shared test helpers: fresh random inputs and the relative-error check every test uses."""

from __future__ import annotations

import pytest
import torch

import trtjit  # noqa: F401  (turns the Triton interpreter on before anything imports triton)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30)) if ref.numel() else 0.0


def assert_close_rel(out: torch.Tensor, ref: torch.Tensor, tol: float | None = None) -> None:
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == ref.dtype, (out.dtype, ref.dtype)
    tol = TOL.get(ref.dtype, 0.0) if tol is None else tol
    err = rel_error(out, ref)
    assert err <= tol, f"max relative error {err:.3e} > {tol:.0e}"


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded from the test's name: fresh inputs per test, reproducible per test."""
    import zlib
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))
