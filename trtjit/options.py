"""Build options: one frozen dataclass; nothing deeper in trtjit reads environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from trtjit.errors import InputError

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}  # the 16-bit storage precisions and their dtypes
GEMM_TACTICS = ("auto", "pingpong", "triton")
FP8_TARGETS = ("sm_89", "sm_90", "sm_100", "sm_103", "sm_120")  # GPUs with fp8 (e4m3) tensor cores


@dataclass(frozen=True)
class BuildOptions:
    """Settings for one build.

    opt_level: 0 runs every op as its own kernel (no folding, no fusion); 1 folds and cleans up;
        2 (default) also fuses GEMM epilogues, reductions and pointwise chains, with deterministic GEMM/conv
        tiles (or the tuning cache's, when ``tuning_cache`` is given); 3 also times candidate tiles of every
        GEMM/conv on the GPU and keeps the fastest (slower builds; needs a GPU, else it is level 2).
    precision: "fp32", or "fp16"/"bf16": tensors stored in 16 bits, math in fp32 inside kernels.
    precision "int8": post-training quantization (``passes/quantize_int8.py``): every matmul/conv with
        constant weights runs int8 x int8 -> int32 with per-channel weight scales and per-tensor activation
        scales from the calibrator passed to ``trtjit.compile(..., calibrator=...)`` (the calibrator is an
        argument of the build, not an option: options stay frozen and serializable; its result, the scales,
        lives in the IR), unless the layer is kept in fp32 (below) or fails the precision check; every
        other op runs in ``fallback_precision``.
    precision "fp8": the same with float8_e4m3fn matmuls (scales = calibrated threshold / 448, accumulation
        in fp32; convolutions stay fp32): for GPUs with fp8 tensor cores (sm_89, sm_90 and newer); other
        ``targets`` are refused, and so is a GPU without them at run time.
    fallback_precision: with "int8"/"fp8", the precision of everything that is not an int8/fp8 layer (the
        tensors between layers, pointwise ops, reductions, layers kept out of int8): "fp32" (default), or
        "fp16"/"bf16" as with that precision (TensorRT's INT8 + FP16 builder flags; a model already in fp16
        gets it anyway). The int8 layers' dequantize math stays fp32 inside their kernels.
    keep_fp32: node names, name prefixes or op types that stay fp32 under a lower precision.
    int8_tolerance: a layer stays int8 only if, on the calibration data, its int8 output is within this
        relative error (||int8 - fp32|| / ||fp32||) of its fp32 output and finite.
    strict_precision: obey the requested precision for every layer not in ``keep_fp32``: the precision
        check still runs and is reported, but never moves a layer back to fp32.
    tf32: let fp32 GEMMs use TF32 tensor cores (faster, ~1e-3 relative error).
    verify: check the graph after every pass (tests and debug builds); a failure names pass and node.
    dump_dir: write the graph after each pass and every kernel's Triton source there.
    targets: GPU archs ("sm_80", "sm_90", ...) to cross-compile every kernel for (cubin + PTX, no GPU
        needed); the engine file stores them and loads without Triton's JIT on those GPUs.
    tuning_cache: a tuning cache file (``trtjit.tuning``): tiles measured by earlier builds are reused, and
        opt_level 3 adds what it measures. Default: none at level 2; ``~/.cache/trtjit/tuning_cache.json``
        at level 3.
    gemm_tactic: which template GEMMs use (``passes/gemm_tactic.py``): "auto" (default) the ping-pong Gluon
        template (``codegen/gluon_gemm.py``) for GEMMs with a GELU epilogue and at least a full wave of tiles,
        when the build runs on an sm_90 GPU with ``targets=("sm_90",)`` (a Gluon kernel that fails to compile
        falls back to Triton's), the Triton template elsewhere; "triton" the Triton template everywhere;
        "pingpong" for every GEMM it can express (sm_90 engines; they do not run under the interpreter). In
        engines on the H100, "auto" took vit_b_16 bs32 from 3.039 to 2.974 ms with identical outputs
        (``benchmarks/tactic_ab.py``, 2026-12-07).
    shapes: input shape ranges, ``{input name or position: (min_shape, opt_shape, max_shape)}``: one engine
        serves every batch in [min, max], tuned for opt (one dynamic dim, shared by the inputs given; see
        ``trtjit.dynamic``). Empty: static shapes, those of the example inputs.
    """

    opt_level: int = 2
    precision: str = "fp32"
    fallback_precision: str = "fp32"
    keep_fp32: tuple[str, ...] = ()
    int8_tolerance: float = 0.05
    strict_precision: bool = False
    tf32: bool = False
    verify: bool = False
    dump_dir: str | None = None
    targets: tuple[str, ...] = ()
    tuning_cache: str | None = None
    shapes: tuple = ()
    gemm_tactic: str = "auto"

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
        if self.fallback_precision not in ("fp32", "fp16", "bf16"):
            raise InputError(f"fallback_precision {self.fallback_precision!r} is not supported; choose one of "
                             "('fp32', 'fp16', 'bf16')")
        if self.fallback_precision != "fp32" and self.precision not in ("int8", "fp8"):
            raise InputError(f"fallback_precision={self.fallback_precision!r} applies to precision 'int8' or 'fp8', "
                             f"not {self.precision!r}")
        if self.precision == "fp8":
            lacking = [t for t in self.targets if t not in FP8_TARGETS]
            if lacking:
                raise InputError(f"precision 'fp8' needs fp8 tensor cores (sm_89 or newer); target(s) {lacking} lack "
                                 "them: build those with precision='int8' or 'fp16'")
        if self.gemm_tactic not in GEMM_TACTICS:
            raise InputError(f"gemm_tactic {self.gemm_tactic!r} is not supported; choose one of {GEMM_TACTICS}")
        if self.gemm_tactic == "pingpong" and any(t != "sm_90" for t in self.targets):
            raise InputError(f"gemm_tactic='pingpong' makes Gluon kernels for sm_90 only; targets "
                             f"{list(self.targets)} include others: build those with gemm_tactic='triton' (or 'auto')")
        if not (isinstance(self.int8_tolerance, (int, float)) and self.int8_tolerance > 0):
            raise InputError(f"int8_tolerance must be a positive number, got {self.int8_tolerance!r}")

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
