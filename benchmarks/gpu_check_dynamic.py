"""GPU validation of dynamic-batch engines (issue 6, item 4).

Two halves:

    python benchmarks/gpu_check_dynamic.py prepare     # here, no GPU: build/gpu_check_dynamic/*.plan
    python3 benchmarks/gpu_check_dynamic.py check      # on the GPU machine, from the repository root

``prepare`` builds the built-in example model (conv/BN/pool stem, transformer encoder layer, linear head:
every kernel template) and the transformer layer with a batch range (min 1, opt 8, max 32) and
cross-compiles them for sm_90 on this machine, which has no GPU.

``check``, on an sm_90 GPU:
  1. in a clean subprocess (TRITON_CACHE_DIR an empty folder, PATH an empty folder: no C compiler, no
     ptxas, no Triton JIT), loads each engine and runs it at batches 1, 3, 8, 17, 32 through the stored
     cubins, plain launches and CUDA-graph replay (one graph captured per distinct batch, lazily; each
     batch replayed twice), against PyTorch on the GPU (fp32, TF32 off) and a float64 CPU reference;
     checks that an out-of-range batch (33) is refused naming the range, that the Triton cache stayed
     empty and that Triton's JIT never ran;
  2. runs the same engine through Triton's JIT on the GPU (binaries dropped) at those batches, and
     reports how many compilations each kernel needed (one: the batch is never specialized on).
It prints one JSON summary (also $OUT/gpu_check_dynamic.json) and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIR = ROOT / "build" / "gpu_check_dynamic"
MODELS = ("example_net", "transformer_layer")
RANGE = (1, 8, 32)
BATCHES = (1, 3, 8, 17, 32)


def _plan(name: str) -> Path:
    return DIR / f"{name}_dyn_sm90.plan"


def prepare() -> int:
    sys.path.insert(0, str(ROOT))
    import trtjit
    from trtjit.examples import example

    DIR.mkdir(parents=True, exist_ok=True)
    info = {}
    for name in MODELS:
        t0 = time.perf_counter()
        model, (x,) = example(name, batch=RANGE[1])
        rest = tuple(x.shape[1:])
        shapes = {0: tuple((b, *rest) for b in RANGE)}
        engine = trtjit.compile(model, (x,), shapes=shapes, targets=["sm_90"])
        engine.save(str(_plan(name)))
        info[name] = {"kernels": len(engine.kernels), "dynamic_kernels": sum(k.batch_arg for k in engine.kernels),
                      "build_s": round(time.perf_counter() - t0, 1), "plan_bytes": _plan(name).stat().st_size,
                      "range": engine.batch_range.to_json(), "targets": engine.targets}
    (DIR / "manifest.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))
    print(f"prepared {DIR}; on the GPU machine run: python3 benchmarks/gpu_check_dynamic.py check "
          "(carry build/gpu_check_dynamic)")
    return 0


RUN = textwrap.dedent('''
    import json, os, sys
    import torch
    import trtjit
    from trtjit.examples import example
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # an fp32 PyTorch reference
    path, name, mode, batches = sys.argv[1], sys.argv[2], sys.argv[3], [int(b) for b in sys.argv[4].split(",")]
    engine = trtjit.load(path)
    if mode == "jit":
        engine.binaries, engine.allow_jit = {}, True  # the same engine through Triton's JIT on this GPU
    model, (x0,) = example(name, batch=1)
    model = model.cuda()
    m64 = example(name, batch=1)[0].double()
    rest = tuple(x0.shape[1:])
    gen = torch.Generator().manual_seed(0)
    rows = []
    for b in batches:
        x = torch.randn(b, *rest, generator=gen)
        xc = x.cuda()
        with torch.no_grad():
            rt = model(xc)
            r64 = m64(x.double())
        engine.cuda_graphs = False
        plain = engine(xc)
        engine.cuda_graphs = True
        g1 = engine(xc)
        g2 = engine(xc)  # a replay of the graph captured for this batch
        torch.cuda.synchronize()
        rel = lambda a, r: float((a.double().cpu() - r.double().cpu()).abs().max() / r.double().abs().max())
        rows.append({"batch": b, "shape": list(plain.shape), "err_vs_torch_gpu": rel(plain, rt),
                     "err_vs_fp64": rel(plain, r64), "graph_err_vs_plain": rel(g1, plain),
                     "graph_replay_identical": bool(torch.equal(g1, g2))})
    try:
        engine(torch.randn(engine.batch_range.max + 1, *rest).cuda())
        refused = "accepted (wrong)"
    except trtjit.InputError as e:
        refused = str(e)
    compiles = None
    if engine._fns is not None:
        try:
            compiles = sorted({sum(len(c[0]) for c in f.device_caches.values()) for f in engine._fns})
        except Exception as e:  # the cache layout is Triton's own; report rather than fail
            compiles = f"unknown ({type(e).__name__})"
    trd = sys.modules.get("triton.runtime.driver")
    cache = os.environ.get("TRITON_CACHE_DIR", "")
    from trtjit import cuda_launcher
    print("RESULT " + json.dumps({
        "mode": cuda_launcher.describe(engine, torch.device("cuda")), "gpu": torch.cuda.get_device_name(),
        "range": engine.batch_range.to_json(), "rows": rows, "out_of_range": refused,
        "graphs_captured": len(engine._graphs), "triton_jit_used": engine._fns is not None,
        "jit_compilations_per_kernel": compiles,
        "triton_cache_files": sum(len(f) for _, _, f in os.walk(cache)) if cache else None,
        "triton_driver_started": trd is not None and trd.driver._default is not None}))
''')


def _result(proc: subprocess.CompletedProcess) -> tuple[object, str]:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    tail = (proc.stdout[-1500:] + proc.stderr[-3000:]).strip()
    if not lines:
        return None, tail
    try:
        return json.loads(lines[-1][len("RESULT "):]), tail
    except ValueError:
        return lines[-1], tail


def check(out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env0 = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env0["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([env0["PYTHONPATH"]] if env0.get("PYTHONPATH") else [])])
    summary: dict[str, object] = {}
    failures: list[str] = []
    script = Path(tempfile.mkdtemp()) / "run_dynamic.py"
    script.write_text(RUN)
    batches = ",".join(map(str, BATCHES))
    for name in MODELS:
        for mode in ("cubin", "jit"):
            env = dict(env0, TRITON_CACHE_DIR=tempfile.mkdtemp(prefix="tcache-"))
            if mode == "cubin":  # no compiler anywhere: only the stored cubins can run
                env["PATH"] = tempfile.mkdtemp(prefix="emptybin-")
                env.pop("CC", None)
                env.pop("CXX", None)
            t0 = time.perf_counter()
            proc = subprocess.run([py, str(script), str(_plan(name)), name, mode, batches], env=env,
                                  capture_output=True, text=True, timeout=600, cwd=str(ROOT))
            res, tail = _result(proc)
            key = f"{name}_{mode}"
            print(f"== {key} ({time.perf_counter() - t0:.1f} s, rc {proc.returncode}): {res}", flush=True)
            summary[key] = res
            if not isinstance(res, dict):
                print(tail, flush=True)
                failures.append(f"{key}: no result (rc {proc.returncode}): {tail[-400:]}")
                continue
            bad = [r for r in res["rows"] if r["err_vs_torch_gpu"] > 1e-3 or r["err_vs_fp64"] > 1e-4
                   or r["graph_err_vs_plain"] != 0.0 or not r["graph_replay_identical"]]
            if bad:
                failures.append(f"{key}: wrong results at {bad}")
            if "outside the engine's range 1..32 (opt 8)" not in res["out_of_range"]:
                failures.append(f"{key}: out-of-range batch not refused with the range: {res['out_of_range']}")
            if res["graphs_captured"] != len(BATCHES):
                failures.append(f"{key}: {res['graphs_captured']} CUDA graphs for {len(BATCHES)} batches")
            if mode == "cubin" and (not res["mode"].startswith("stored sm_90 cubins") or res["triton_jit_used"]
                                    or res["triton_cache_files"] or res["triton_driver_started"]):
                failures.append(f"{key}: did not run from the stored cubins alone: {res}")
            if mode == "jit" and isinstance(res["jit_compilations_per_kernel"], list) \
                    and max(res["jit_compilations_per_kernel"]) > 1:
                failures.append(f"{key}: a kernel was compiled more than once across batches")
    summary["failures"] = failures
    summary["ok"] = not failures
    text = json.dumps(summary, indent=2, default=str)
    (out_dir / "gpu_check_dynamic.json").write_text(text)
    print(text)
    return 0 if not failures else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("prepare", "check"))
    p.add_argument("--out", default=os.environ.get("OUT", str(DIR / "out")), help="where check writes its JSON")
    a = p.parse_args()
    if a.step == "prepare":
        return prepare()
    missing = [str(_plan(n)) for n in MODELS if not _plan(n).is_file()]
    if missing:
        print(f"{missing} missing: run `python benchmarks/gpu_check_dynamic.py prepare` first and carry "
              "build/gpu_check_dynamic")
        return 2
    return check(Path(a.out))


if __name__ == "__main__":
    sys.exit(main())
