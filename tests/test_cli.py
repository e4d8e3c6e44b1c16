"""The ``trtjit`` command: build, run, inspect, bench, compare (in-process through ``main(argv)``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import DEVICE

import trtjit
from trtjit.cli import main
from trtjit.cuda_launcher import current_arch

TARGETS = ",".join(sorted({"sm_90", current_arch() or "sm_90"}))

MLP = 'trtjit.examples:example(name="mlp", batch=3)'

FACTORY = textwrap.dedent("""
    import torch
    from trtjit.examples import example

    def other():
        # the same architecture as the mlp example, with other weights: compare must fail
        model, inputs = example("mlp", batch=3)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)
        return model, inputs

    def not_a_pair():
        return 42
""")


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "mlp.plan"
    assert main(["build", MLP, "-o", str(path), "--target", TARGETS]) == 0
    return path


@pytest.fixture(scope="module")
def factory_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("factory") / "models.py"
    f.write_text(FACTORY)
    return f


def test_build(plan, capsys):
    assert plan.is_file()
    eng = trtjit.load(str(plan))
    assert ",".join(eng.targets) == TARGETS and len(eng.kernels) == 2
    assert eng.input_specs[0].shape == (3, 32)


def test_build_progress_and_errors(tmp_path, capsys):
    out = tmp_path / "m.plan"
    assert main(["build", MLP, "-o", str(out), "--opt-level", "1"]) == 0
    cap = capsys.readouterr()
    assert "[1/3] loading model" in cap.err and "[3/3] writing" in cap.err
    assert re.search(r"kernels in [\d.]+ s \(import [\d.]+, passes [\d.]+, codegen [\d.]+, cubins [\d.]+\)", cap.err)
    assert "targets none (JIT)" in cap.out
    for argv, msg in ((["build", "--onnx", "m.onnx"], "--onnx m.onnx: no such file"),
                      (["build", MLP, "--onnx", "m.onnx"], "not both"),
                      (["build", MLP, "--int8"], "--int8 needs --calib-cache FILE"),
                      (["build", MLP, "--calib-cache", "c.cache"], "--calib-cache is only used with --int8 or --fp8"),
                      (["build", MLP, "--int8", "--calib-cache", "nope.cache"], "nope.cache: no such file"),
                      (["build", MLP, "--fp8"], "--fp8 needs --calib-cache FILE"),
                      (["build", MLP, "--fp16", "--bf16"], "choose one precision flag"),
                      (["build", MLP, "--target", "sm_42"], "unknown GPU target 'sm_42'"),
                      (["build", "no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
                      (["build", "trtjit.examples"], "expected 'package.module:function'"),
                      (["build", "trtjit.examples:nope"], "has no attribute 'nope'"),
                      (["build", "trtjit.examples:example(name=open('x'))"], "must be Python literals")):
        assert main(argv + ["-o", str(tmp_path / "x.plan")]) == 2, argv
        assert msg in capsys.readouterr().err, argv


def test_inspect(plan, capsys):
    assert main(["inspect", str(plan), "-v"]) == 0
    out = capsys.readouterr().out
    for s in ("gemm_fc1", "gemm_fc2", "matmul + add + gelu", "target sm_90", "memory plan", "rules fired",
              "gemm epilogue", "float32[3, 32]", "symbol gemm_fc1"):
        assert s in out, s
    assert main(["inspect", str(plan), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert ",".join(rep["targets"]) == TARGETS and rep["signed"] is False
    assert [k["name"] for k in rep["kernels"]] == ["gemm_fc1", "gemm_fc2"]
    k0 = rep["kernels"][0]
    assert k0["fuses"] == ["matmul", "add", "gelu"] and k0["binaries"]["sm_90"]["symbol"] == "gemm_fc1"
    assert {a["dtype"] for a in k0["args"]} == {"float32"} and k0["args"][-1]["param"] == "out0"
    assert rep["memory_plan"]["arena_bytes"] > 0 and rep["memory_plan"]["buffers"]
    assert any("gemm epilogue" in r for r in rep["rules_fired"])
    assert {s["name"] for s in rep["sections"]} >= {"graph", "kernels", "binaries/sm_90/cubin", "build_log"}


def test_run(plan, tmp_path, capsys):
    eng = trtjit.load(str(plan))
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(7))
    np.save(tmp_path / "x.npy", x.numpy())
    np.savez(tmp_path / "in.npz", x=x.numpy())
    want = eng(x.to(DEVICE)).cpu().numpy()
    for inputs in ([str(tmp_path / "x.npy")], [f"x={tmp_path / 'x.npy'}"], [str(tmp_path / "in.npz")]):
        out = tmp_path / "out.npz"
        assert main(["run", str(plan), "--inputs", *inputs, "-o", str(out)]) == 0
        assert np.array_equal(np.load(out)["output_0"], want)
    assert "output_0: float32[3, 10]" in capsys.readouterr().out
    assert main(["run", str(plan), "-o", str(tmp_path / "r.npz"), "--seed", "3"]) == 0
    assert np.load(tmp_path / "r.npz")["output_0"].shape == (3, 10)
    assert "random (seed 3)" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((2, 32), np.float32))
    assert main(["run", str(plan), "--inputs", str(tmp_path / "bad.npy")]) == 2
    assert "shape [2, 32], the engine expects [3, 32]" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.plan")]) == 2
    assert "no such engine file" in capsys.readouterr().err
    (tmp_path / "junk.plan").write_bytes(b"hello" * 20)
    assert main(["run", str(tmp_path / "junk.plan")]) == 2
    assert "not a trtjit engine" in capsys.readouterr().err


def test_bench(plan, capsys):
    assert main(["bench", str(plan), "--iters", "2", "--warmup", "0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "throughput_per_s", "samples_per_s", "first_inference_ms"):
        assert res[k] > 0, k
    assert res["iters"] == 2 and res["batch"] == 3
    assert main(["bench", str(plan), "--iters", "2"]) == 0
    assert "latency ms:" in capsys.readouterr().out


def test_compare(plan, factory_file, capsys):
    assert main(["compare", str(plan), MLP]) == 0
    out = capsys.readouterr().out
    assert "output_0" in out and "PASS" in out
    assert main(["compare", str(plan), MLP, "--random", "--fp64-reference", "--seed", "5"]) == 0
    capsys.readouterr()
    assert main(["compare", str(plan), f"{factory_file}:other"]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main(["compare", str(plan), f"{factory_file}:not_a_pair"]) == 2
    assert "must return (torch.nn.Module, example_inputs)" in capsys.readouterr().err


def test_help_reads_well():
    res = subprocess.run([sys.executable, "-m", "trtjit", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for cmd in ("build", "run", "inspect", "bench", "compare", "engine workflow"):
        assert cmd in res.stdout
    for cmd in ("build", "run", "inspect", "bench", "compare"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0


def test_ops_lists_ir_aten_and_onnx_ops(capsys):
    from trtjit.cli import main

    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    assert "IR ops (trtjit.ops):" in out and "sdpa" in out and "conv_transpose2d" in out
    assert "aten.scaled_dot_product_attention" in out
    assert "ONNX op types the ONNX frontend converts:" in out and "Conv" in out


def test_build_int8_from_calibration_cache(tmp_path, capsys):
    """Calibrate on the host (API, cache=), build with the CLI from the cache alone and cross-compile the int8
    kernels (int8 tl.dot into int32) for sm_90: the engine matches the host's."""
    from trtjit.examples import example

    model, (x,) = example("mlp", batch=3)
    cache = tmp_path / "mlp.cache"
    g = torch.Generator().manual_seed(0)
    host = trtjit.compile(model, (x,), precision="int8",
                          calibrator=trtjit.EntropyCalibrator([torch.randn(3, 32, generator=g) for _ in range(4)],
                                                              cache=cache))
    out = tmp_path / "mlp_int8.plan"
    assert main(["build", MLP, "--int8", "--calib-cache", str(cache), "--target", "sm_90", "-o", str(out)]) == 0
    capsys.readouterr()
    eng = trtjit.load(str(out))
    assert eng.targets == ["sm_90"] and [k.source for k in eng.kernels] == [k.source for k in host.kernels]
    assert [r["precision"] for r in eng.precision_report()] == [r["precision"] for r in host.precision_report()]
    assert any("out_dtype=tl.int32" in k.source for k in eng.kernels)
    assert torch.equal(eng(x.to(DEVICE)), host(x.to(DEVICE)))
    assert main(["inspect", str(out), "-v"]) == 0
    text = capsys.readouterr().out
    assert "layer precision: " in text and "fc1.matmul" in text and "not checked" in text
    assert main(["inspect", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [r["layer"] for r in rep["precision_report"]] == ["fc1.matmul", "fc2.matmul"]
    # --int8 --fp16 (trtexec's pair): int8 layers from the same cache, fp16 between them
    out16 = tmp_path / "mlp_int8_fp16.plan"
    assert main(["build", MLP, "--int8", "--fp16", "--calib-cache", str(cache), "-o", str(out16)]) == 0
    e16 = trtjit.load(str(out16))
    assert e16.options.fallback_precision == "fp16"
    want = ["fp16" if r["precision"] == "fp32" else r["precision"] for r in host.precision_report()]
    assert [r["precision"] for r in e16.precision_report()] == want and "int8" in want
    assert any(s.dtype == torch.float16 for n in e16.graph for s in n.outputs)
    assert (e16(x.to(DEVICE)) - host(x.to(DEVICE))).abs().max() <= 0.05 * host(x.to(DEVICE)).abs().max()


def test_progress_bar():
    """Cross-compilation's [done/total] log lines: one bar redrawn in place on a terminal, lines elsewhere."""
    import io
    import logging

    from trtjit.cli_engine import ProgressBar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream in (Tty(), io.StringIO()):
        log = logging.getLogger(f"trtjit.test_progress.{id(stream)}")
        log.propagate = False
        log.addHandler(ProgressBar(stream, width=10))
        log.setLevel(logging.INFO)
        log.warning("cross-compiling 2 kernels")
        log.warning("[1/2] gemm_0 sm_90 (9000 bytes cubin, 1.0 s)")
        log.warning("[2/2] gemm_1 sm_90 (9000 bytes cubin, 1.0 s)")
        out = stream.getvalue()
        assert "cross-compiling 2 kernels\n" in out
        assert "[#####.....] 1/2 gemm_0" in out and "[##########] 2/2 gemm_1" in out
        if isinstance(stream, Tty):
            assert out.count("\r") == 2 and out.endswith("\n") and out.count("\n") == 2
        else:
            assert "\r" not in out and out.count("\n") == 3


def test_build_and_compare_onnx(tmp_path, capsys):
    """`trtjit build --onnx` (a fixed shape, then a range, for the file's open batch dim) and `compare --onnx`
    (onnxruntime)."""
    import warnings

    model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    onnx_path = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 32),), str(onnx_path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    plan = tmp_path / "onnx.plan"
    assert main(["build", "--onnx", str(onnx_path), "--shapes", "x:3x32", "-o", str(plan)]) == 0
    assert "reading ONNX model" in capsys.readouterr().err
    assert list(trtjit.load(str(plan)).input_specs[0].shape) == [3, 32]
    assert main(["compare", str(plan), "--onnx", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    assert "PASS: engine matches onnxruntime" in out
    assert main(["build", "--onnx", str(onnx_path), "--shapes", "x:1x32,2x32,5x32", "-o", str(plan)]) == 0
    capsys.readouterr()
    assert trtjit.load(str(plan)).batch_range.to_json() == {"min": 1, "opt": 2, "max": 5}
    assert main(["compare", str(plan), "--onnx", str(onnx_path), "--random", "--batch", "5"]) == 0
    assert "PASS: engine matches onnxruntime" in capsys.readouterr().out
    assert main(["compare", str(plan)]) == 2
    assert "needs the reference" in capsys.readouterr().err
