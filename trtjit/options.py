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
        2 (default) also fuses GEMM epilogues, reductions and pointwise chains, with deterministic GEMM/conv
        tiles (or the tuning cache's, when ``tuning_cache`` is given); 3 also times candidate tiles of every
        GEMM/conv on the GPU and keeps the fastest (slower builds; needs a GPU, else it is level 2).
    precision: "fp32", or "fp16"/"bf16": tensors stored in 16 bits, math in fp32 inside kernels.
    keep_fp32: node names, name prefixes or op types that stay fp32 under a 16-bit precision.
    tf32: let fp32 GEMMs use TF32 tensor cores (faster, ~1e-3 relative error).
    verify: check the graph after every pass (tests and debug builds); a failure names pass and node.
    dump_dir: write the graph after each pass and every kernel's Triton source there.
    targets: GPU archs ("sm_80", "sm_90", ...) to cross-compile every kernel for (cubin + PTX, no GPU
        needed); the engine file stores them and loads without Triton's JIT on those GPUs.
    tuning_cache: a tuning cache file (``trtjit.tuning``): tiles measured by earlier builds are reused, and
        opt_level 3 adds what it measures. Default: none at level 2; ``~/.cache/trtjit/tuning_cache.json``
        at level 3.
    shapes: input shape ranges, ``{input name or position: (min_shape, opt_shape, max_shape)}``: one engine
        serves every batch in [min, max], tuned for opt (one dynamic dim, shared by the inputs given; see
        ``trtjit.dynamic``). Empty: static shapes, those of the example inputs.
    """

    opt_level: int = 2
    precision: str = "fp32"
    keep_fp32: tuple[str, ...] = ()
    tf32: bool = False
    verify: bool = False
    dump_dir: str | None = None
    targets: tuple[str, ...] = ()
    tuning_cache: str | None = None
    shapes: tuple = ()

    def __post_init__(self) -> None:
        from trtjit.dynamic import normalize_shapes
        object.__setattr__(self, "targets", normalize_targets(self.targets))
        object.__setattr__(self, "shapes", normalize_shapes(self.shapes))
        object.__setattr__(self, "keep_fp32", tuple(self.keep_fp32))
        if self.opt_level not in (0, 1, 2, 3):
            raise InputError(f"opt_level must be 0, 1, 2 or 3, got {self.opt_level!r}")
        if self.tuning_cache is not None:
            object.__setattr__(self, "tuning_cache", str(self.tuning_cache))
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


TARGETS = ("sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90", "sm_100", "sm_103", "sm_120")


def normalize_targets(targets: Any) -> tuple[str, ...]:
    """``["sm_90", "sm80"]`` -> ``("sm_80", "sm_90")``; a bad name raises InputError listing the known ones."""
    if isinstance(targets, str):
        targets = [t for t in targets.replace(",", " ").split() if t]
    if not isinstance(targets, (list, tuple)):
        raise InputError(f"targets must be a list of GPU archs like ['sm_80', 'sm_90'], got {type(targets).__name__}")
    out = set()
    for t in targets:
        name = str(t).strip().lower()
        if name.startswith("sm") and not name.startswith("sm_"):
            name = "sm_" + name[2:]
        if name.endswith("a") and name[:-1] in TARGETS:
            name = name[:-1]  # Triton compiles sm_90+ for the arch-specific variant (sm_90a) anyway
        if not isinstance(t, str) or name not in TARGETS:
            raise InputError(f"unknown GPU target {t!r}; known targets: {', '.join(TARGETS)}")
        out.add(name)
    return tuple(sorted(out, key=lambda n: int(n[3:])))
