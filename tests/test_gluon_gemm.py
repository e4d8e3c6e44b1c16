"""The ping-pong Gluon GEMM template (codegen/gluon_gemm.py) and its tactic pass (passes/gemm_tactic.py).

Gluon kernels do not run under Triton's interpreter, so on this machine the template is checked as far as it
goes without a GPU: which GEMMs take it and why the others do not, the kernel source, its sm_90 cubin
(registers, shared memory, no spills), the engine file round trip, and the clear refusal to run it on the
CPU. benchmarks/tactic_ab.py checks its outputs and times it on an H100.
"""

from __future__ import annotations

import json

import pytest
import torch
from trtjit.codegen import gluon_gemm

import trtjit
from trtjit.errors import EngineError, InputError
from trtjit.options import BuildOptions


class FFN(torch.nn.Module):
    """A transformer MLP block: fc1 + GELU (the ping-pong template's target), fc2 + residual."""

    def __init__(self, d: int = 128, h: int = 512, approximate: str = "none") -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(d, h), torch.nn.Linear(h, d)
        self.act = torch.nn.GELU(approximate=approximate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


def _inputs(gen: torch.Generator, d: int = 128) -> tuple[torch.Tensor]:
    return (torch.randn(2, 96, d, generator=gen).half(),)


def _tactic_events(engine) -> list[dict]:
    (rec,) = [r for r in engine.build_log if r.name == "gemm_tactic"]
    return rec.events


@pytest.fixture(scope="module")
def pingpong_engine():
    gen = torch.Generator().manual_seed(7)
    model = FFN().half().eval()
    inputs = _inputs(gen)
    return trtjit.compile(model, inputs, precision="fp16", targets=["sm_90"], gemm_tactic="pingpong"), model, inputs


def test_pingpong_kernels_and_cubins(pingpong_engine):
    engine, _, _ = pingpong_engine
    gluon = [k for k in engine.kernels if gluon_gemm.is_gluon_source(k.source)]
    assert len(gluon) == 2  # fc1 (+ bias + GELU) and fc2 (+ bias + residual)
    fired = [e for e in _tactic_events(engine) if e["fired"]]
    assert len(fired) == 2 and all("pingpong" in e["detail"] for e in fired)
    for k in gluon:
        assert k.maxnreg == gluon_gemm.MAXNREG and k.grid == (k.constexprs["PROGRAMS"], 1, 1)
        assert "gl.warp_specialize" in k.source and "warpgroup_mma" in k.source
        assert k.constexprs["PROGRAMS"] == min(gluon_gemm.SMS, (192 // 128 + 1) * (k.problem["N"] // 128))
    fc1 = next(k for k in gluon if "_gelu_erf(" in k.source)
    assert "@gluon.jit\ndef _gelu_erf" in fc1.source and "tl." not in fc1.source  # the op table's GELU, in Gluon
    binaries = {b.kernel: b for b in engine.binaries["sm_90"]}
    for k in gluon:
        b = binaries[k.name]
        meta = b.meta()
        assert meta["num_warps"] == 12  # 4 (first consumer) + 4 (second) + 1 (producer), in whole warpgroups
        assert 150_000 < meta["shared"] <= 227 * 1024  # four A/B stages and two output tiles
        assert meta["global_scratch_size"] > 0  # device-side TMA descriptors
        assert "st.local" not in b.ptx and "setmaxnreg" in b.ptx


def test_pingpong_engine_round_trips_and_refuses_the_cpu(pingpong_engine, tmp_path):
    engine, _, inputs = pingpong_engine
    path = engine.save(str(tmp_path / "pp.plan"))
    loaded = trtjit.load(path)
    assert [k.source for k in loaded.kernels] == [k.source for k in engine.kernels]
    assert [k.maxnreg for k in loaded.kernels] == [k.maxnreg for k in engine.kernels]
    with pytest.raises(EngineError, match="Gluon ping-pong GEMM.*gemm_tactic='triton'"):
        loaded(*inputs)


@pytest.mark.parametrize("tactic", ["auto", "triton", None])
def test_auto_and_default_tactics_keep_triton_off_hopper(gen, tactic):
    """Off an sm_90 GPU (here: the CPU) "auto", the default, keeps the Triton template, as "triton" does."""
    from trtjit.passes import gemm_tactic

    if tactic != "triton" and gemm_tactic._on_hopper():
        pytest.skip("on an sm_90 GPU 'auto' (also the default) picks the ping-pong template")
    model = FFN().half().eval()
    kw = {"gemm_tactic": tactic} if tactic else {}
    engine = trtjit.compile(model, _inputs(gen), precision="fp16", targets=["sm_90"], **kw)
    assert BuildOptions().gemm_tactic == "auto"
    assert not any(gluon_gemm.is_gluon_source(k.source) for k in engine.kernels)
    assert _tactic_events(engine) == []


def test_ineligible_gemms_say_why(gen):
    """K not a multiple of 8 (TMA's 16-byte row strides) keeps the Triton template, with the reason logged;
    so does a GEMM without a GELU under "auto"'s rule (checked through ``heavy_epilogue``)."""
    model = FFN(d=100, h=512).half().eval()
    engine = trtjit.compile(model, _inputs(gen, d=100), precision="fp16", targets=["sm_90"], gemm_tactic="pingpong")
    events = _tactic_events(engine)
    fc1 = next(e for e in events if "fc1" in e["node"])
    assert not fc1["fired"] and "multiple of 8" in fc1["detail"]
    assert not any(gluon_gemm.is_gluon_source(k.source) for k in engine.kernels if "fc1" in k.node)


def test_heavy_epilogue_rule(pingpong_engine):
    """Only the GEMM with a GELU counts as one whose epilogue the ping-pong schedule hides ("auto")."""
    from trtjit.codegen import kernel_input

    from trtjit.layout import compute_layouts

    engine, _, _ = pingpong_engine
    g = engine.graph
    layouts = compute_layouts(g)
    gemms = [k.node for k in engine.kernels if k.maxnreg]
    heavy = {n: gluon_gemm.heavy_epilogue(kernel_input(g, n, layouts, False)) for n in gemms}
    assert sorted(heavy.values()) == [False, True]
    assert all(("fc1" in n) == h for n, h in heavy.items())


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_pingpong_sources_compile_for_both_gelus(gen, approximate):
    """Both GELU forms (erf: ``_gelu_erf``; tanh: ``_sigmoid``) translate to Gluon and compile for sm_90."""
    model = FFN(approximate=approximate).half().eval()
    engine = trtjit.compile(model, _inputs(gen), precision="fp16", targets=["sm_90"], gemm_tactic="pingpong")
    helper = "_gelu_erf" if approximate == "none" else "_sigmoid"
    fc1 = next(k for k in engine.kernels if "fc1" in k.node)
    assert f"@gluon.jit\ndef {helper}" in fc1.source
    assert any(b.kernel == fc1.name for b in engine.binaries["sm_90"])


def test_tactic_options_validated():
    with pytest.raises(InputError, match="gemm_tactic 'cutlass' is not supported"):
        BuildOptions(gemm_tactic="cutlass")
    with pytest.raises(InputError, match="sm_90 only.*sm_80"):
        BuildOptions(gemm_tactic="pingpong", targets=("sm_80",))
    assert json.loads(json.dumps(BuildOptions(gemm_tactic="triton").__dict__))["gemm_tactic"] == "triton"


def test_auto_tactic_on_hopper_picks_gelu_gemms_of_a_full_wave(monkeypatch):
    """What "auto" does on an H100 (the GPU check stubbed): the GELU GEMM of at least a wave of tiles takes
    the ping-pong template; the residual GEMM keeps Triton's, and so do GEMMs of too few tiles."""
    from trtjit.passes import gemm_tactic

    monkeypatch.setattr(gemm_tactic, "_on_hopper", lambda: True)
    gen = torch.Generator().manual_seed(3)
    model = FFN().half().eval()
    big = (torch.randn(33, 128, 128, generator=gen).half(),)  # 4224 rows: 33 x 4 = 132 tiles of fc1
    engine = trtjit.compile(model, big, precision="fp16", targets=["sm_90"], gemm_tactic="auto")
    gluon = {k.node for k in engine.kernels if gluon_gemm.is_gluon_source(k.source)}
    assert gluon == {"fc1.matmul"}
    why = {e["node"]: e["detail"] for e in _tactic_events(engine) if not e["fired"]}
    assert why == {"fc2.matmul": "the epilogue has no GELU to hide"}
    small = trtjit.compile(model, _inputs(gen), precision="fp16", targets=["sm_90"], gemm_tactic="auto")
    assert not any(gluon_gemm.is_gluon_source(k.source) for k in small.kernels)
    assert "less than 1 full wave" in next(e["detail"] for e in _tactic_events(small) if "fc1" in e["node"])


def test_auto_tactic_needs_sm90_cubins(monkeypatch):
    """"auto" takes the path that ran on the H100, stored sm_90 cubins: a build without ``targets`` (kernels
    JIT-compiled at run time) keeps the Triton template even on a Hopper GPU."""
    from trtjit.passes import gemm_tactic

    monkeypatch.setattr(gemm_tactic, "_on_hopper", lambda: True)
    model = FFN().half().eval()
    x = (torch.randn(33, 128, 128, generator=torch.Generator().manual_seed(5)).half(),)
    engine = trtjit.compile(model, x, precision="fp16", gemm_tactic="auto")
    assert not any(gluon_gemm.is_gluon_source(k.source) for k in engine.kernels)


def _failing_gluon_compiles(monkeypatch):
    """Cross-compilation in which every Gluon kernel fails, as under a Triton whose Gluon API differs."""
    from trtjit import crosscompile
    from trtjit.errors import KernelCompileError

    real = crosscompile.compile_kernels

    def compile_kernels(graph, kernels, targets, workers=None):
        bad = next((k for k in kernels if gluon_gemm.is_gluon_source(k.source)), None)
        if bad is not None:
            raise KernelCompileError(f"cross-compilation failed for kernel {bad.name!r} on sm_90: "
                                     "AttributeError: module has no attribute 'warpgroup_mma'\nmore", bad.name, "sm_90")
        return real(graph, kernels, targets, workers)

    monkeypatch.setattr(crosscompile, "compile_kernels", compile_kernels)


def test_auto_tactic_falls_back_when_gluon_does_not_compile(monkeypatch, tmp_path):
    """A ping-pong kernel "auto" chose that does not compile is dropped, as TensorRT skips a failing tactic:
    the GEMM goes back to the Triton template, the build log says which and why, and the engine matches
    PyTorch."""
    from trtjit.passes import gemm_tactic

    monkeypatch.setattr(gemm_tactic, "_on_hopper", lambda: True)
    _failing_gluon_compiles(monkeypatch)
    gen = torch.Generator().manual_seed(7)
    model = FFN().half().eval()
    x = torch.randn(33, 128, 128, generator=gen).half()  # fc1 fills a wave: "auto" picks it
    engine = trtjit.compile(model, (x,), precision="fp16", targets=["sm_90"], gemm_tactic="auto", dump_dir=tmp_path)
    assert not any(gluon_gemm.is_gluon_source(k.source) for k in engine.kernels)
    assert {p.name: p.read_text() for p in tmp_path.glob("kernel_*.py")} == \
        {f"kernel_{k.name}.py": k.source for k in engine.kernels}  # the dump shows the kernels that replaced them
    assert {b.kernel for b in engine.binaries["sm_90"]} == {k.name for k in engine.kernels}
    (rec,) = [r for r in engine.build_log if r.name == "gemm_tactic_fallback"]
    assert [(e["node"], e["fired"]) for e in rec.events] == [("fc1.matmul", False)]
    assert "did not compile" in rec.events[0]["detail"] and "warpgroup_mma" in rec.events[0]["detail"]
    chosen = {e["node"]: e for e in _tactic_events(engine)}["fc1.matmul"]  # auto's choice, marked as undone
    assert not chosen["fired"] and chosen["detail"].startswith("chosen (") and "then dropped" in chosen["detail"]
    x2 = torch.randn(33, 128, 128, generator=gen).half()  # fresh inputs; the engine runs its Triton kernels
    out = engine(x2).float()
    with torch.no_grad():
        ref = model.float()(x2.float())
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-2


def test_explicit_pingpong_keeps_the_compile_error(monkeypatch, gen):
    """gemm_tactic="pingpong" is the caller's choice: a Gluon kernel that does not compile fails the build,
    naming the kernel."""
    from trtjit.errors import KernelCompileError

    _failing_gluon_compiles(monkeypatch)
    with pytest.raises(KernelCompileError, match="cross-compilation failed for kernel 'gemm_fc1.*warpgroup_mma") as ei:
        trtjit.compile(FFN().half().eval(), _inputs(gen), precision="fp16", targets=["sm_90"], gemm_tactic="pingpong")
    assert ei.value.target == "sm_90" and ei.value.kernel.startswith("gemm_fc1")


GPU_SCRIPT = """
import json, sys
import torch
import trtjit
sys.path.insert(0, sys.argv[1])
from test_gluon_gemm import FFN
from trtjit.codegen.gluon_gemm import is_gluon_source
torch.manual_seed(0)
rows = []
# (rows, d, h, gelu): one tile per program and K of two k steps (fewer than the stages); then ragged M, N and K
# with programs of two and three tiles
for n, d, h, approx in ((192, 128, 512, "none"), (4264, 256, 1032, "none"), (4264, 256, 1032, "tanh")):
    model = FFN(d, h, approx).half().cuda().eval()
    x = torch.randn(1, n, d, device="cuda").half()
    engine = trtjit.compile(model, (x,), targets=["sm_90"], gemm_tactic="pingpong")
    gluon = sum(is_gluon_source(k.source) for k in engine.kernels)
    err = 0.0
    for _ in range(3):  # repeated launches (CUDA-graph replays) leave the barriers ready for the next
        x2 = torch.randn(1, n, d, device="cuda").half()
        with torch.no_grad():
            ref = model.float()(x2.float())
            model.half()
        out = engine(x2).float()
        err = max(err, float((out - ref).abs().max() / ref.abs().max()))
    rows.append({"rows": n, "d": d, "h": h, "gelu": approx, "gluon": gluon, "err": err})
print(json.dumps(rows))
"""


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                    reason="needs an sm_90 GPU")
def test_gpu_pingpong_engines_match_pytorch(tmp_path):
    """On an H100: engines whose GEMMs all take the ping-pong template match PyTorch, for programs of one tile,
    two k steps, ragged M, N and K, both GELU forms, over repeated CUDA-graph replays (a subprocess, with
    Triton in compiled mode)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "check.py"
    script.write_text(GPU_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(script), str(Path(__file__).parent)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    for r in rows:
        assert r["gluon"] == 2 and r["err"] < 1e-2, r
