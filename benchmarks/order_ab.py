"""GEMM program order A/B/C: the default (N tiles fastest from ``codegen.gemm.N_FASTEST_A_BYTES`` of A, since
2026-12-06's third session 0: everywhere), N tiles fastest everywhere and M tiles fastest everywhere, in the
same models on one GPU in one run.

    python benchmarks/order_ab.py [--models vit_b_16,bert_base,gpt2] [--batch 32] [--json out.json]

Per model (fp16, random weights, as in bench.py), three engines with cubins for this GPU, built with the
threshold as it is, at 0 and out of reach. All are checked against eager PyTorch on fresh random inputs,
timed interleaved as CUDA-graph replays (bench.interleaved), and profiled (CUPTI, PDL off): the time per
forward of each distinct GEMM problem in each order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trtjit.codegen.gemm as gemm  # noqa: E402

import trtjit  # noqa: E402
from benchmarks.bench import interleaved, rel_err  # noqa: E402
from benchmarks.kernel_profile import device_times, launch_names  # noqa: E402
from benchmarks.models import fp16_cuda  # noqa: E402
from benchmarks.pdl_ab import fresh  # noqa: E402
from trtjit.cuda_launcher import current_arch  # noqa: E402


def build_with(model, inputs, options: dict | None = None, **patch) -> tuple[object, float]:
    """An engine with cubins for this GPU, built with ``options`` (BuildOptions fields) and with
    ``codegen.gemm``'s attributes in ``patch`` set for the build only, and its build seconds."""
    saved = {k: getattr(gemm, k) for k in patch}
    for k, v in patch.items():
        setattr(gemm, k, v)
    try:
        t0 = time.perf_counter()
        engine = trtjit.compile(model, inputs, targets=[current_arch(inputs[0].device)], **(options or {}))
        return engine, round(time.perf_counter() - t0, 2)
    finally:
        for k, v in saved.items():
            setattr(gemm, k, v)


def compare(name: str, batch: int, model, inputs, builds: dict[str, tuple], gen: torch.Generator, checks: int,
            profile: bool) -> dict:
    """One row of an A/B: each build (``build_with``'s result) checked against eager PyTorch on ``checks``
    fresh random inputs, timed interleaved, and (``profile``) the time of each distinct GEMM problem."""
    engines = {k: e for k, (e, _) in builds.items()}
    row: dict = {"model": name, "batch": batch, "build_s": {k: s for k, (_, s) in builds.items()}}
    errs = {k: 0.0 for k in engines}
    for _ in range(checks):
        xs = fresh(inputs, gen)
        with torch.no_grad():
            ref = model(*xs)
            for k, e in engines.items():
                errs[k] = max(errs[k], rel_err(e(*xs), ref))
    row["rel_err"] = errs
    with torch.no_grad():
        row["ms"] = {k: round(v, 4) for k, v in interleaved(engines, inputs, rounds=7).items()}
    if profile:
        row["gemm_ms"] = {k: gemm_ms(e, inputs) for k, e in engines.items()}
    return row


def ab_rows(models: str, batch: int, checks: int, builds_of, annotate, profile: bool = True) -> list[dict]:
    """An A/B over ``models`` (comma-separated): per model, the builds ``builds_of(model, inputs)`` returns
    (``build_with`` results by name), compared (``compare``), ``annotate(row, builds)``, printed, and freed
    before the next model. Returns the rows."""
    print(f"card: {torch.cuda.get_device_name()}; torch {torch.__version__}; {current_arch()}", flush=True)
    gen = torch.Generator().manual_seed(4321)
    rows = []
    for name in models.split(","):
        model, inputs = fp16_cuda(name, batch)
        builds = builds_of(model, inputs)
        row = compare(name, batch, model, inputs, builds, gen, checks, profile=profile)
        annotate(row, builds)
        print(json.dumps({k: v for k, v in row.items() if k != "gemm_ms"}), flush=True)
        print_gemm_ms(row)
        rows.append(row)
        del builds
        torch.cuda.empty_cache()
    return rows


def ab_args(doc: str, profile: bool = True,
            extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The A/B scripts' command line: --models, --batch, --checks, --json (and, with ``profile``,
    --no-profile; ``extra`` adds a script's own); ``doc``'s first line describes it."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    if extra is not None:
        extra(ap)
    ap.add_argument("--models", default="vit_b_16,bert_base,gpt2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--checks", type=int, default=2)
    if profile:
        ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--json")
    return ap.parse_args()


def report(rows: list[dict], columns: dict[str, Callable[[dict], str]], json_path: str | None) -> None:
    """The A/B's markdown table, one row per model: model, batch, ``columns`` (header -> the cell of a row),
    max rel err; then, with ``json_path``, every row there as JSON."""
    print("\n| " + " | ".join(["model", "batch", *columns, "max rel err"]) + " |")
    print("|" + "---|" * (len(columns) + 3))
    for r in rows:
        cells = [r["model"], str(r["batch"]), *(cell(r) for cell in columns.values()),
                 f"{max(r['rel_err'].values()):.1e}"]
        print("| " + " | ".join(cells) + " |")
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))


def print_gemm_ms(row: dict) -> None:
    for variant, probs in row.get("gemm_ms", {}).items():
        for prob, t in sorted(probs.items(), key=lambda kv: -kv[1]):
            print(f"    {variant:9s} {prob:45s} {t * 1e3:8.1f} us per forward", flush=True)


def gemm_ms(engine, inputs) -> dict[str, float]:
    """ms per forward of each distinct GEMM problem (all its launches), from the profiler."""
    dev = device_times(engine, inputs)  # per launched function: all its launches
    out: dict[str, float] = defaultdict(float)
    counted: set[str] = set()
    for k, name in zip(engine.kernels, launch_names(engine, inputs[0].device)):
        if k.template == "gemm" and name not in counted:
            counted.add(name)
            p = k.problem
            out[f"{p['M']}x{p['N']}x{p['K']} grid {list(k.grid)}"] += dev.get(name, 0.0)
    return dict(out)


def main() -> None:
    args = ab_args(__doc__, profile=False)

    def builds_of(model, inputs) -> dict[str, tuple]:
        return {"rule": build_with(model, inputs), "n_fastest": build_with(model, inputs, N_FASTEST_A_BYTES=0),
                "m_fastest": build_with(model, inputs, N_FASTEST_A_BYTES=1 << 62)}

    def annotate(row: dict, builds: dict) -> None:
        row["speedup"] = {k: round(row["ms"]["m_fastest"] / row["ms"][k], 4) for k in ("rule", "n_fastest")}

    rows = ab_rows(args.models, args.batch, args.checks, builds_of, annotate)
    report(rows, {"M fastest ms": lambda r: f"{r['ms']['m_fastest']:.3f}",
                  "N fastest ms": lambda r: f"{r['ms']['n_fastest']:.3f}",
                  "rule ms": lambda r: f"{r['ms']['rule']:.3f}",
                  "speedup N fastest": lambda r: f"{r['speedup']['n_fastest']:.3f}",
                  "speedup rule": lambda r: f"{r['speedup']['rule']:.3f}"}, args.json)

if __name__ == "__main__":
    main()
