"""GPU validation of engine files, cross-compilation and the cubin launcher (issue 6).

Two halves:

    python benchmarks/gpu_check_engine.py prepare      # here, no GPU: build/gpu_check/*.plan, reference.npz
    python3 benchmarks/gpu_check_engine.py check       # on the GPU machine (benchmarks/gpu_check_engine.sh)

``prepare`` cross-compiles the built-in example model (conv/BN/pool stem, transformer encoder layer,
linear head: every kernel template) for sm_90 on a machine without a GPU, saves it with fp64 PyTorch
reference outputs, and an MLP built for sm_80 only (the arch-mismatch case). It also downloads the
cuda-bindings wheels (Python 3.12) in case the GPU machine lacks them.

``check`` then, on the GPU:
  1. loads the sm_90 engine in a clean subprocess (TRITON_CACHE_DIR an empty folder, PATH an empty folder:
     no C compiler, no ptxas), once per driver binding (cuda-bindings, ctypes), and reports import/load/
     first-inference times, steady latency, CUDA-graph replay, errors vs the fp64 reference and vs PyTorch
     on the GPU, that the Triton cache stayed empty and Triton's own driver/launcher never started;
  2. runs the CLI there (inspect, compare, bench, bench --cuda-graph);
  3. checks the sm_80-only engine is refused naming its archs, and that rebuild=True JIT-compiles it right;
  4. times the same engine under Triton's JIT with a cold cache (the baseline the cubins avoid);
  5. runs tests/test_engine_file.py and tests/test_cli.py (including the GPU-only test).
It prints one JSON summary (also written to $OUT/gpu_check.json) and exits non-zero when a check fails.
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
DIR = ROOT / "build" / "gpu_check"
NET = DIR / "example_net_sm90.plan"
MLP80 = DIR / "mlp_sm80.plan"
REF = DIR / "reference.npz"
BIG = DIR / "big_smem_sm90.json"
WHL = DIR / "whl"


def prepare() -> int:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    import trtjit
    from trtjit.examples import example

    DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, inputs = example("example_net", batch=2)
    engine = trtjit.compile(model, inputs, targets=["sm_90"])
    engine.save(str(NET))
    t_net = time.perf_counter() - t0
    with torch.no_grad():
        ref = model.double()(inputs[0].double())
    np.savez(REF, x=inputs[0].numpy(), ref=ref.numpy())
    m2, i2 = example("mlp", batch=4)
    trtjit.compile(m2, i2, targets=["sm_80"]).save(str(MLP80))
    _prepare_big_smem()
    if not list(WHL.glob("cuda_bindings-*cp312*.whl")):
        WHL.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                        "--platform", "manylinux_2_24_x86_64", "--platform", "manylinux_2_17_x86_64",
                        "-d", str(WHL), "cuda-bindings==13.*", "cuda-pathfinder"], check=False)
    info = {"example_net_kernels": len(engine.kernels), "build_s": round(t_net, 1),
            "plan_bytes": NET.stat().st_size, "targets": engine.targets}
    (DIR / "manifest.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))
    print(f"prepared {DIR}; on the GPU machine run: bash benchmarks/gpu_check_engine.sh (carry build/gpu_check)")
    return 0


BIG_SRC = textwrap.dedent('''
    import triton
    import triton.language as tl


    @triton.jit
    def big_smem_matmul(a_ptr, b_ptr, c_ptr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        K: tl.constexpr, N: tl.constexpr):
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            a = tl.load(a_ptr + rm[:, None] * K + (k + rk)[None, :])
            b = tl.load(b_ptr + (k + rk)[:, None] * N + rn[None, :])
            acc = tl.dot(a, b, acc, input_precision="ieee")
        tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc)
''')


def _prepare_big_smem() -> None:
    """A 512x512x512 fp32 matmul kernel whose tiles need 128 KB of shared memory (> the 48 KB default):
    exercises cuFuncSetAttribute in the cubin launcher."""
    from types import SimpleNamespace

    import torch
    from trtjit.codegen.common import KernelSpec

    from trtjit.crosscompile import compile_kernels
    from trtjit.ir import Value

    k = KernelSpec("big_smem_matmul", "gemm", "n", BIG_SRC, (4, 4),
                   {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "K": 512, "N": 512},
                   [Value("a"), Value("b"), Value("c")], ["n"], num_warps=8, num_stages=3)
    graph = SimpleNamespace(spec=lambda v: SimpleNamespace(dtype=torch.float32))
    b = compile_kernels(graph, [k], ["sm_90"])["sm_90"][0]
    BIG.write_text(json.dumps(b.to_json()))
    print(f"big_smem_matmul: {b.shared} bytes of shared memory")


# ---------------------------------------------------------------------------------------------- GPU side
CLEAN_RUN = textwrap.dedent('''
    import json, os, sys, time
    t0 = time.perf_counter()
    import numpy as np
    import torch
    import trtjit
    from trtjit import cuda_launcher
    cuda_launcher.DRIVER = sys.argv[3]
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 PyTorch reference
    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    engine = trtjit.load(sys.argv[1])
    t_load = time.perf_counter() - t1
    ref = np.load(sys.argv[2])
    x = torch.from_numpy(ref["x"]).cuda()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    out = engine(x)
    torch.cuda.synchronize()
    t_first = time.perf_counter() - t2
    r64 = torch.from_numpy(ref["ref"])
    err_fp64 = float((out.double().cpu() - r64).abs().max() / r64.abs().max())
    from trtjit.examples import example
    model, _ = example("example_net", batch=2)
    with torch.no_grad():
        rgpu = model.cuda()(x)
    err_torch = float((out - rgpu).abs().max() / rgpu.abs().max())
    evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(50)]
    for a, b in evs:
        a.record(); engine(x); b.record()
    torch.cuda.synchronize()
    lat = sorted(a.elapsed_time(b) for a, b in evs)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        engine.run(x)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        gout = engine.run(x)[0]
    gout.zero_()
    g.replay(); torch.cuda.synchronize()
    graph_ok = bool(torch.equal(gout, out))
    trd = sys.modules.get("triton.runtime.driver")  # (the package attribute of that name is the DriverConfig)
    cache = os.environ["TRITON_CACHE_DIR"]
    print("RESULT " + json.dumps({
        "driver": cuda_launcher.get_driver().name, "mode": cuda_launcher.describe(engine, x.device),
        "gpu": torch.cuda.get_device_name(), "import_s": round(t_import, 3), "load_s": round(t_load, 3),
        "first_inference_s": round(t_first, 4), "p50_ms": round(lat[len(lat) // 2], 4),
        "err_vs_fp64": err_fp64, "err_vs_torch_gpu": err_torch, "cuda_graph_replay_identical": graph_ok,
        "triton_cache_files": sum(len(f) for _, _, f in os.walk(cache)),
        "triton_driver_started": trd is not None and trd.driver._default is not None, "triton_jit_used": engine._fns is not None}))
''')

BIG_RUN = textwrap.dedent('''
    import json, sys, torch
    from trtjit import cuda_launcher
    from trtjit.crosscompile import KernelBinary
    cuda_launcher.DRIVER = sys.argv[2]
    b = KernelBinary.from_json(json.load(open(sys.argv[1])))
    dev = torch.device("cuda", 0)
    k = cuda_launcher.CubinKernel(b, dev)
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(512, 512, generator=g).cuda(), torch.randn(512, 512, generator=g).cuda()
    c = torch.empty(512, 512, device=dev)
    k[(4, 4)](a, w, c)
    torch.cuda.synchronize()
    ref = a.double() @ w.double()
    print("RESULT " + json.dumps({"shared": b.shared, "err": float((c.double() - ref).abs().max() / ref.abs().max()),
                                  "driver": k.drv.name, "regs": k.num_regs}))
''')

MISMATCH = textwrap.dedent('''
    import sys, torch, trtjit
    try:
        trtjit.load(sys.argv[1])
        print("RESULT loaded (wrong)")
    except trtjit.EngineFileError as e:
        print("RESULT refused: " + str(e))
''')

REBUILD = textwrap.dedent('''
    import json, sys, time, torch, trtjit
    from trtjit.examples import example
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model, inputs = example("mlp", batch=4)
    x = inputs[0].cuda()
    t0 = time.perf_counter()
    e = trtjit.load(sys.argv[1], rebuild=True)
    y = e(x); torch.cuda.synchronize()
    t = time.perf_counter() - t0
    with torch.no_grad():
        r = model.cuda()(x)
    print("RESULT " + json.dumps({"err": float((y - r).abs().max() / r.abs().max()), "load_and_first_s": round(t, 3),
                                  "jit_used": e._fns is not None}))
''')

JIT_BASELINE = textwrap.dedent('''
    import json, os, sys, time, numpy as np, torch, trtjit
    t0 = time.perf_counter()
    e = trtjit.load(sys.argv[1])
    e.binaries = {}  # same engine, kernels through Triton's JIT (cold cache)
    x = torch.from_numpy(np.load(sys.argv[2])["x"]).cuda()
    y = e(x); torch.cuda.synchronize()
    print("RESULT " + json.dumps({"jit_load_and_first_inference_s": round(time.perf_counter() - t0, 3)}))
''')


def _result(proc: subprocess.CompletedProcess) -> tuple[object, str]:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    tail = (proc.stdout[-1500:] + proc.stderr[-3000:]).strip()
    if not lines:
        return None, tail
    body = lines[-1][len("RESULT "):]
    try:
        return json.loads(body), tail
    except ValueError:
        return body, tail


def check(out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {}
    failures: list[str] = []
    py = sys.executable
    base_env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET",)}
    base_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([base_env["PYTHONPATH"]] if base_env.get("PYTHONPATH") else [])])
    base_env["PYTHONUNBUFFERED"] = "1"
    try:
        import cuda.bindings.driver  # noqa: F401
        summary["cuda_bindings"] = "installed"
    except ImportError:
        wheels = sorted(str(w) for w in WHL.glob("*.whl"))
        if wheels:
            site = tempfile.mkdtemp(prefix="site-")
            r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                                "--target", site, *wheels], capture_output=True, text=True)
            summary["cuda_bindings"] = f"installed from carried wheels (rc {r.returncode})"
            base_env["PYTHONPATH"] = os.pathsep.join([base_env["PYTHONPATH"], site])
        else:
            summary["cuda_bindings"] = "missing (ctypes fallback only)"
    import torch
    summary["env"] = {"python": sys.version.split()[0], "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
                      "capability": list(torch.cuda.get_device_capability())}
    try:
        import triton
        summary["env"]["triton"] = triton.__version__
    except ImportError:
        pass

    def clean_env(cache: str) -> dict[str, str]:
        empty = tempfile.mkdtemp(prefix="emptybin-")
        env = {k: v for k, v in base_env.items() if k not in ("CC", "CXX")}
        env.update(TRITON_CACHE_DIR=cache, PATH=empty)
        return env

    def run(name: str, script: str, args: list[str], env: dict[str, str], timeout: int = 300) -> object:
        f = Path(tempfile.mkdtemp()) / f"{name}.py"
        f.write_text(script)
        t0 = time.perf_counter()
        proc = subprocess.run([py, str(f), *args], env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=str(ROOT))
        res, tail = _result(proc)
        print(f"== {name} ({time.perf_counter() - t0:.1f} s, rc {proc.returncode}): {res}", flush=True)
        if res is None:
            print(tail, flush=True)
            failures.append(f"{name}: no result (rc {proc.returncode}): {tail[-400:]}")
        return res

    # 1. stored cubins, no compiler, empty Triton cache, both driver bindings
    for drv in ("cuda-bindings", "ctypes"):
        cache = tempfile.mkdtemp(prefix="tcache-")
        res = run(f"cubin_{drv}", CLEAN_RUN, [str(NET), str(REF), drv], clean_env(cache))
        summary[f"cubin_{drv}"] = res
        if isinstance(res, dict):
            ok = (res["err_vs_fp64"] < 1e-4 and res["err_vs_torch_gpu"] < 1e-3 and res["triton_cache_files"] == 0
                  and not res["triton_driver_started"] and not res["triton_jit_used"]
                  and res["mode"].startswith("stored sm_90 cubins") and res["cuda_graph_replay_identical"])
            if not ok:
                failures.append(f"cubin_{drv}: {res}")

    # 1b. a kernel needing 128 KB of dynamic shared memory (cuFuncSetAttribute), both bindings
    for drv in ("cuda-bindings", "ctypes"):
        res = run(f"big_smem_{drv}", BIG_RUN, [str(BIG), drv], clean_env(tempfile.mkdtemp(prefix="tcache-")))
        summary[f"big_smem_{drv}"] = res
        if not (isinstance(res, dict) and res["err"] < 1e-5 and res["shared"] > 48 * 1024):
            failures.append(f"big_smem_{drv}: {res}")

    # 2. the CLI in the same clean environment
    cli_env = clean_env(tempfile.mkdtemp(prefix="tcache-"))
    cli = {}
    for name, argv in (("inspect", ["inspect", str(NET)]),
                       ("compare", ["compare", str(NET), "trtjit.examples:example(batch=2)"]),
                       ("bench", ["bench", str(NET), "--iters", "200", "--json"]),
                       ("bench_graph", ["bench", str(NET), "--iters", "200", "--cuda-graph", "--json"])):
        proc = subprocess.run([py, "-m", "trtjit", *argv], env=cli_env, capture_output=True, text=True, timeout=300,
                              cwd=str(ROOT))
        text = proc.stdout.strip()
        cli[name] = json.loads(text) if argv[-1] == "--json" and proc.returncode == 0 else text[-1500:]
        print(f"== trtjit {' '.join(argv[:1])} rc {proc.returncode}\n{text[-2500:]}\n{proc.stderr[-1500:]}", flush=True)
        if proc.returncode != 0:
            failures.append(f"trtjit {name}: rc {proc.returncode}: {proc.stderr[-400:]}")
    summary["cli"] = {k: ({m: v[m] for m in ("execution", "mean_ms", "p50_ms", "p99_ms", "throughput_per_s",
                                                "first_inference_ms", "load_s")} if isinstance(v, dict) else v[-300:])
                      for k, v in cli.items()}

    # 3. another arch: refused in the clean env, JIT-rebuilt on request where a compiler exists
    res = run("mismatch", MISMATCH, [str(MLP80)], clean_env(tempfile.mkdtemp(prefix="tcache-")))
    summary["sm80_only_engine"] = res
    if not (isinstance(res, str) and res.startswith("refused") and "sm_80" in res and "rebuild=True" in res):
        failures.append(f"mismatch: {res}")
    res = run("rebuild", REBUILD, [str(MLP80)], dict(base_env, TRITON_CACHE_DIR=tempfile.mkdtemp(prefix="tcache-")))
    summary["sm80_only_engine_rebuild"] = res
    if not (isinstance(res, dict) and res["err"] < 1e-4 and res["jit_used"]):
        failures.append(f"rebuild: {res}")

    # 4. baseline: the same engine through Triton's JIT, cold cache
    res = run("jit_baseline", JIT_BASELINE, [str(NET), str(REF)],
              dict(base_env, TRITON_CACHE_DIR=tempfile.mkdtemp(prefix="tcache-")))
    summary["jit_cold_baseline"] = res

    # 5. the test files (the GPU-only test cross-compiles for this GPU and runs with no compiler on PATH)
    t0 = time.perf_counter()
    proc = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_engine_file.py",
                           "tests/test_cli.py", "-rs"], env=base_env, capture_output=True, text=True, timeout=420,
                          cwd=str(ROOT))
    print(f"== pytest ({time.perf_counter() - t0:.0f} s) rc {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}",
          flush=True)
    summary["pytest"] = {"rc": proc.returncode, "tail": proc.stdout.strip().splitlines()[-3:]}
    if proc.returncode != 0:
        failures.append("pytest failed")

    summary["failures"] = failures
    summary["ok"] = not failures
    text = json.dumps(summary, indent=2, default=str)
    (out_dir / "gpu_check.json").write_text(text)
    print(text)
    return 0 if not failures else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("prepare", "check"))
    p.add_argument("--out", default=os.environ.get("OUT", str(DIR / "out")), help="where check writes gpu_check.json")
    a = p.parse_args()
    if a.step == "prepare":
        return prepare()
    if not NET.is_file():
        print(f"{NET} is missing: run `python benchmarks/gpu_check_engine.py prepare` first and carry build/gpu_check")
        return 2
    return check(Path(a.out))


if __name__ == "__main__":
    sys.exit(main())
