"""Build options: one frozen dataclass; nothing deeper in trtjit reads environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from trtjit.errors import InputError

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class BuildOptions:
    """Settings for one build.

    opt_level: 0 runs every op as its own kernel (no folding, no fusion); 1 folds and cleans up;
        2 (default) also fuses GEMM epilogues, reductions and pointwise chains.
    precision: "fp32", or "fp16"/"bf16": tensors stored in 16 bits, math in fp32 inside kernels.
    keep_fp32: node names, name prefixes or op types that stay fp32 under a 16-bit precision.
    tf32: let fp32 GEMMs use TF32 tensor cores (faster, ~1e-3 relative error).
    verify: check the graph after every pass (tests and debug builds); a failure names pass and node.
    dump_dir: write the graph after each pass and every kernel's Triton source there.
    """

    opt_level: int = 2
    precision: str = "fp32"
    keep_fp32: tuple[str, ...] = ()
    tf32: bool = False
    verify: bool = False
    dump_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_fp32", tuple(self.keep_fp32))
        if self.opt_level not in (0, 1, 2):
            raise InputError(f"opt_level must be 0, 1 or 2, got {self.opt_level!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r} is not supported; choose one of {PRECISIONS}")

    @staticmethod
    def make(options: BuildOptions | None = None, **overrides: Any) -> BuildOptions:
        """Options from an object plus keyword overrides plus the TRTJIT_DEBUG / TRTJIT_DUMP environment."""
        base = options or BuildOptions()
        known = {f.name for f in fields(BuildOptions)}
        bad = set(overrides) - known
        if bad:
            raise InputError(f"unknown build option(s) {sorted(bad)}; known: {sorted(known)}")
        if os.environ.get("TRTJIT_DEBUG") and "verify" not in overrides:
            overrides["verify"] = True
        if os.environ.get("TRTJIT_DUMP") and "dump_dir" not in overrides:
            overrides["dump_dir"] = os.environ["TRTJIT_DUMP"]
        return replace(base, **overrides)
