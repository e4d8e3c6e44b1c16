"""Engine files: round trip, signing, corruption (fuzzed), cross-compiled binaries, cubin launching."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import DEVICE, assert_close_rel

import trtjit
from trtjit import cuda_launcher
from trtjit.engine_file import _HASH, _PREFIX, FORMAT_VERSION, MAGIC, EngineFileError, read
from trtjit.errors import EngineError, InputError
from trtjit.examples import example
from trtjit.options import BuildOptions

TARGETS = sorted({"sm_90", cuda_launcher.current_arch() or "sm_90"})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An MLP engine cross-compiled for sm_90 (and this GPU's arch), saved unsigned: (engine, path, inputs, model)."""
    model, inputs = example("mlp", batch=3)
    engine = trtjit.compile(model, inputs, targets=TARGETS)
    inputs = tuple(t.to(DEVICE) for t in inputs)
    path = tmp_path_factory.mktemp("plan") / "mlp.plan"
    engine.save(str(path))
    return engine, path, inputs, model


def _write(path: Path, header: dict, sections: dict[str, bytes], key: bytes | None = None,
           version: int = FORMAT_VERSION) -> Path:
    """Re-serialize (header, sections) with valid checksums: for semantic corruptions."""
    import hmac
    table, off = [], 0
    for name, data in sections.items():
        table.append({"name": name, "offset": off, "length": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        off += len(data)
    header = dict(header, sections=table)
    hb = json.dumps(header, sort_keys=True).encode()
    sig = hmac.new(key, hb, hashlib.sha256).digest() if key else bytes(_HASH)
    path.write_bytes(_PREFIX.pack(MAGIC, version, len(hb)) + hb + hashlib.sha256(hb).digest() + sig
                     + b"".join(sections.values()))
    return path


# ---------------------------------------------------------------------------------------------- round trip
def test_round_trip(built, tmp_path):
    engine, path, inputs, model = built
    loaded = trtjit.load(str(path))
    assert [k.source for k in loaded.kernels] == [k.source for k in engine.kernels]
    assert loaded.targets == TARGETS and list(loaded.options.targets) == TARGETS
    for a, b in zip(loaded.binaries["sm_90"], engine.binaries["sm_90"]):
        assert a.cubin == b.cubin and a.ptx == b.ptx and a.meta() == b.meta()
    assert [r.name for r in loaded.build_log] == [r.name for r in engine.build_log]
    with torch.no_grad():
        ref = model.double()(inputs[0].cpu().double())
        model.float()
    assert torch.equal(loaded(*inputs), engine(*inputs))
    assert_close_rel(loaded(*inputs).cpu(), ref.float())
    header, _ = read(path)
    assert header["targets"] == TARGETS and header["signed"] is False
    # saving the loaded engine again gives the same sections
    again = tmp_path / "again.plan"
    loaded.save(str(again))
    assert read(again)[1] == read(path)[1]


def test_weights_load_in_place(tmp_path):
    """Each weight starts at a multiple of WEIGHT_ALIGN in the file and loads as a view of the one buffer
    the weights section was read into (no copy per weight); values and dtypes survive."""
    from trtjit.engine_file import WEIGHT_ALIGN
    model, inputs = example("mlp", batch=3)
    engine = trtjit.compile(model, inputs, precision="fp16")
    path = engine.save(str(tmp_path / "w.plan"))
    _, sections = read(path)
    offsets = [m["offset"] for m in json.loads(sections["weights_manifest"])]
    assert len(offsets) == 4 and all(o % WEIGHT_ALIGN == 0 for o in offsets)
    assert any(m["nbytes"] % WEIGHT_ALIGN for m in json.loads(sections["weights_manifest"]))  # padding was needed
    want = engine.graph.weights()
    got = trtjit.load(path).graph.weights()
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k].cpu(), want[k].cpu())
    assert len({w.untyped_storage().data_ptr() for w in got.values()}) == 1


def test_unaligned_weights_still_load(built, tmp_path):
    """A weights section whose offsets are not multiples of the dtype size (a writer without padding) loads
    through a copy of each such weight, with the same values."""
    engine, path, inputs, _ = built
    header, sections = read(path)
    manifest = json.loads(sections["weights_manifest"])
    for m in manifest:
        m["offset"] += 1
    sections = dict(sections, weights_manifest=json.dumps(manifest).encode(),
                    weights=b"\x00" + bytes(sections["weights"]))
    loaded = trtjit.load(str(_write(tmp_path / "odd.plan", header, sections)))
    want = engine.graph.weights()
    assert all(torch.equal(loaded.graph.weights()[k].cpu(), want[k].cpu()) for k in want)
    assert torch.equal(loaded(*inputs), engine(*inputs))


def test_targets_validated():
    assert BuildOptions(targets=["sm90", "sm_80", "sm_90a"]).targets == ("sm_80", "sm_90")
    with pytest.raises(InputError, match=r"unknown GPU target 'sm_91'.*sm_80.*sm_90"):
        BuildOptions(targets=["sm_91"])
    with pytest.raises(InputError, match="unknown GPU target"):
        trtjit.compile(*example("mlp"), targets=["ampere"])


# ---------------------------------------------------------------------------------------------- signing
def test_signing(built, tmp_path, monkeypatch):
    engine, path, inputs, _ = built
    signed = tmp_path / "signed.plan"
    engine.save(str(signed), key="s3cret")
    assert trtjit.load(str(signed), key="s3cret").targets == TARGETS
    with pytest.raises(EngineFileError, match="unsigned"):
        trtjit.load(str(path), key="s3cret")
    with pytest.raises(EngineFileError, match="signature does not match"):
        trtjit.load(str(signed), key="another key")
    # altered with recomputed checksums: only the signature can tell
    header, sections = read(signed)
    header["options"]["tf32"] = True
    forged = tmp_path / "forged.plan"
    _write(forged, header, sections, key=b"not the key")
    with pytest.raises(EngineFileError, match="signature does not match"):
        trtjit.load(str(forged), key="s3cret")
    data = bytearray(signed.read_bytes())
    data[-5] ^= 0x10  # a weight/binary byte: the section checksum catches it first
    (tmp_path / "flipped.plan").write_bytes(bytes(data))
    with pytest.raises(EngineFileError, match="checksum mismatch"):
        trtjit.load(str(tmp_path / "flipped.plan"), key="s3cret")
    monkeypatch.setenv("TRTJIT_SIGNING_KEY", "s3cret")
    with pytest.raises(EngineFileError, match="unsigned"):
        trtjit.load(str(path))
    assert trtjit.load(str(signed)).kernels


# ---------------------------------------------------------------------------------------------- bad files
def test_each_bad_file_named(built, tmp_path, monkeypatch):
    _, path, _, _ = built
    data = path.read_bytes()

    def refused(blob: bytes, pattern: str, **kw) -> None:
        p = tmp_path / "bad.plan"
        p.write_bytes(blob)
        with pytest.raises(EngineFileError, match=pattern):
            trtjit.load(str(p), **kw)

    refused(data[: len(data) // 2], "truncated|checksum")
    refused(data[:40], "truncated")
    body = bytearray(data)
    body[-100] ^= 1
    refused(bytes(body), r"checksum mismatch in section 'binaries/sm_\d+/ptx'")
    refused(data[:12] + struct.pack("<I", FORMAT_VERSION + 1) + data[16:], r"format version 2 is newer.*upgrade")
    refused(b"PK\x03\x04 definitely a zip file" + bytes(100), "not a trtjit engine")
    refused(b"", "not a trtjit engine")
    refused(data + b"\x00", "unexpected byte")
    with pytest.raises(EngineFileError, match="no such engine file"):
        trtjit.load(str(tmp_path / "missing.plan"))
    # another arch: this "GPU" is an sm_80; the file holds sm_90 only
    monkeypatch.setattr(cuda_launcher, "current_arch", lambda *a: "sm_75")
    with pytest.raises(EngineFileError, match=rf"binaries for {', '.join(TARGETS)} only.*sm_75.*rebuild=True"):
        trtjit.load(str(path))
    assert trtjit.load(str(path), rebuild=True).allow_jit


def test_inconsistent_binaries_refused(built, tmp_path):
    _, path, _, _ = built
    header, sections = read(path)
    p = tmp_path / "x.plan"
    _write(p, dict(header, targets=sorted(TARGETS + ["sm_75"])), sections)
    with pytest.raises(EngineFileError, match="lists targets .* missing"):
        trtjit.load(str(p))
    _write(p, dict(header, targets=[]), sections)
    with pytest.raises(EngineFileError, match="header does not list"):
        trtjit.load(str(p))
    metas = json.loads(sections["binaries/sm_90/meta"])
    sections = {k: v for k, v in sections.items() if not k.startswith("binaries/") or k.startswith("binaries/sm_90/")}
    header = dict(header, targets=["sm_90"])
    for field, value, pattern in (("source_sha256", "0" * 64, "different source"),
                                  ("num_warps", 3, "power of two"),
                                  ("params", [["in0", "*fp32"]], "parameters"),
                                  ("cubin_range", [0, 10 ** 9], "byte ranges")):
        bad = [dict(m) for m in metas]
        bad[0][field] = value
        _write(p, header, dict(sections, **{"binaries/sm_90/meta": json.dumps(bad).encode()}))
        with pytest.raises(EngineFileError, match=pattern):
            trtjit.load(str(p))
    _write(p, header, dict(sections, **{"binaries/sm_90/meta": b"{not json"}))
    with pytest.raises(EngineFileError, match="malformed sm_90 binary metadata"):
        trtjit.load(str(p))


def _mutations(data: bytes, rng: random.Random, header_end: int) -> list[tuple[str, bytes]]:
    out = []
    n = len(data)
    for _ in range(50):
        out.append(("truncate", data[: rng.randrange(0, n)]))
    for region, lo, hi in (("prefix", 0, _PREFIX.size), ("header", _PREFIX.size, header_end),
                           ("hashes", header_end, header_end + 2 * _HASH), ("sections", header_end + 2 * _HASH, n)):
        for _ in range(45 if region != "prefix" else 25):
            b = bytearray(data)
            i = rng.randrange(lo, hi)
            b[i] ^= 1 << rng.randrange(8)
            out.append((f"flip {region}", bytes(b)))
    for _ in range(30):
        i = rng.randrange(0, n + 1)
        out.append(("insert", data[:i] + rng.randbytes(rng.randrange(1, 64)) + data[i:]))
    for _ in range(30):
        i = rng.randrange(0, n - 1)
        out.append(("delete", data[:i] + data[i + rng.randrange(1, min(64, n - i) + 1):]))
    for _ in range(30):
        i = rng.randrange(0, n - 16)
        k = rng.randrange(1, 16)
        out.append(("garbage", data[:i] + rng.randbytes(k) + data[i + k:]))
    for _ in range(10):
        out.append(("append", data + rng.randbytes(rng.randrange(1, 100))))
    out.append(("random file", rng.randbytes(n)))
    out.append(("magic only", MAGIC))
    out.append(("zeros", bytes(n)))
    return [(what, m) for what, m in out if m != data]


def test_fuzz_corruptions_all_refused(built, tmp_path):
    _, path, _, _ = built
    data = path.read_bytes()
    hlen = _PREFIX.unpack_from(data)[2]
    rng = random.Random(20261125)
    muts = _mutations(data, rng, _PREFIX.size + hlen)
    assert len(muts) >= 300
    p = tmp_path / "fuzz.plan"
    kinds: dict[str, int] = {}
    for what, blob in muts:
        p.write_bytes(blob)
        try:
            trtjit.load(str(p))
        except EngineFileError as e:
            assert str(p) in str(e)
            kinds[what] = kinds.get(what, 0) + 1
            continue
        except Exception as e:  # any other exception is a bug in the loader's checks
            pytest.fail(f"{what}: {type(e).__name__}: {e}")
        pytest.fail(f"{what}: a corrupted engine file loaded")
    assert sum(kinds.values()) == len(muts)


# ---------------------------------------------------------------------------------------------- cross-compile
def test_crosscompiled_sm90_binaries_are_sane(built):
    engine, _, _, _ = built
    bins = engine.binaries["sm_90"]
    assert len(bins) == len(engine.kernels)
    for k, b in zip(engine.kernels, bins):
        assert b.target == "sm_90" and b.kernel == k.name and b.symbol == k.name
        assert b.cubin[:4] == b"\x7fELF" and struct.unpack_from("<H", b.cubin, 18)[0] == 190  # EM_CUDA
        assert ".target sm_90a" in b.ptx and f".entry {b.symbol}(" in b.ptx
        assert b.num_warps == k.num_warps and b.num_ctas == 1 and b.num_stages == k.num_stages
        assert 0 <= b.shared <= 227 * 1024
        assert b.global_scratch_size >= 0 and b.global_scratch_align >= 1 and b.profile_scratch_size == 0
        assert b.constexprs == k.constexprs and set(b.constexprs) == {"BLOCK_M", "BLOCK_N", "BLOCK_K"}
        assert [p[1] for p in b.params] == ["*fp32"] * len(k.args)
        assert not b.launch_cooperative_grid
        # programmatic dependent launch: compiled in on sm_90 (recorded as launch_pdl, not as a constexpr)
        assert b.launch_pdl and "griddepcontrol.wait" in b.ptx and "griddepcontrol.launch_dependents" in b.ptx
        # every passed parameter appears in the PTX entry's parameter list, plus the two scratch pointers
        entry = b.ptx.split(f".entry {b.symbol}(", 1)[1].split(")", 1)[0]
        assert entry.count(".param") == len(k.args) + 2


def test_build_phases_account_for_the_build(built):
    engine, _, _, _ = built
    phases = engine.build_phases
    assert set(phases) == {"import", "passes", "codegen", "cubins"}
    assert all(v >= 0 for v in phases.values())
    assert phases["cubins"] > 0  # this engine was cross-compiled
    assert sum(phases.values()) <= engine.build_seconds + 1e-6


def test_crosscompile_error_names_kernel_and_target():
    from types import SimpleNamespace

    from trtjit.codegen.common import KernelSpec

    from trtjit.crosscompile import compile_kernels
    from trtjit.errors import BuildError
    from trtjit.ir import Value

    src = textwrap.dedent("""
        import triton
        import triton.language as tl


        @triton.jit
        def broken(in0, out0, BLOCK: tl.constexpr):
            offs = tl.arange(0, 3)  # not a power of two: Triton refuses
            tl.store(out0 + offs, tl.load(in0 + offs))
    """)
    k = KernelSpec("broken", "pointwise", "n", src, (1,), {"BLOCK": 4}, [Value("a"), Value("b")], ["n"])
    graph = SimpleNamespace(spec=lambda v: SimpleNamespace(dtype=torch.float32))
    with pytest.raises(BuildError,
                       match=r"(?s)cross-compilation failed for kernel 'broken' on sm_80: .*power of 2") as ei:
        compile_kernels(graph, [k], ["sm_80"])
    assert (ei.value.kernel, ei.value.target) == ("broken", "sm_80")  # KernelCompileError: what the builder reads


# ---------------------------------------------------------------------------------------------- launcher
class _FakeDriver(cuda_launcher._Driver):
    """Records what the launcher asks of the CUDA driver; reads kernel parameters back from memory."""

    name = "fake"

    def __init__(self, fail: str | None = None, optin: int = 227 * 1024) -> None:
        self.calls: list[tuple] = []
        self.fail = fail
        self.optin = optin

    def _rec(self, call: str, kernel: str, *a) -> None:
        self.calls.append((call, *a))
        self.check(call, kernel, 719 if call == self.fail else 0)

    def error_name(self, err):
        return "CUDA_ERROR_LAUNCH_FAILED"

    def init(self, ordinal, kernel):
        self._rec("cuInit", kernel)

    def load(self, image, kernel):
        self._rec("cuModuleLoadData", kernel, len(image))
        return "module"

    def function(self, module, symbol, kernel):
        self._rec("cuModuleGetFunction", kernel, symbol)
        return "function"

    def func_attr(self, fn, attr, kernel):
        self._rec("cuFuncGetAttribute", kernel, attr[0])
        return 0

    def set_func_attr(self, fn, attr, value, kernel):
        self._rec("cuFuncSetAttribute", kernel, attr[0], value)

    def device_attr(self, ordinal, attr, kernel):
        self._rec("cuDeviceGetAttribute", kernel, attr[0])
        return self.optin

    def launch(self, fn, grid, threads, shared, stream, params, kernel, pdl=False):
        n = len(self.expect_params)
        slots = [ctypes.c_void_p.from_address(params + i * ctypes.sizeof(ctypes.c_void_p)).value for i in range(n)]
        values = [ctypes.c_void_p.from_address(s).value for s in slots]
        self._rec("cuLaunchKernelEx (PDL)" if pdl else "cuLaunchKernel", kernel, tuple(grid), threads, shared,
                  stream, values)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(cuda_launcher, "_device_context", lambda ordinal: contextlib.nullcontext())
    monkeypatch.setattr(cuda_launcher, "_current_device", lambda: 0)
    monkeypatch.setattr(cuda_launcher, "_current_stream", lambda device: 0xABC)


def test_cubin_launch_parameters(built, fake_cuda):
    engine, _, _, _ = built
    b = engine.binaries["sm_90"][0]
    drv = _FakeDriver()
    kern = cuda_launcher.CubinKernel(b, torch.device("cpu"), drv)
    bufs = [torch.empty(64, dtype=torch.float32) for _ in b.params]
    drv.expect_params = [t.data_ptr() for t in bufs] + [None, None]  # scratch: none asked for -> null
    kern[(3, 1)](*bufs, BLOCK_M=1, num_warps=4)
    call = drv.calls[-1]
    assert call[0] == "cuLaunchKernel"
    assert call[1:] == ((3, 1, 1), 32 * b.num_warps, b.shared, 0xABC, drv.expect_params)
    assert ("cuModuleGetFunction", b.symbol) in drv.calls
    assert not any(c[0] == "cuFuncSetAttribute" for c in drv.calls)  # <= 48 KB of shared memory
    with pytest.raises(EngineError, match="not 16-byte aligned"):
        kern[(1,)](*[bufs[0][1:]] + bufs[1:])
    with pytest.raises(EngineError, match="takes 4 buffers"):
        kern[(1,)](bufs[0])


def test_cubin_pdl_launch(built, fake_cuda):
    """A kernel compiled with the PDL prologue launches as a programmatic dependent when asked; one compiled
    without it (an older engine, an arch before sm_90) never does, whatever the engine asks."""
    from dataclasses import replace
    engine, _, _, _ = built
    b = engine.binaries["sm_90"][0]
    drv = _FakeDriver()
    bufs = [torch.empty(64, dtype=torch.float32) for _ in b.params]
    drv.expect_params = [t.data_ptr() for t in bufs] + [None, None]
    kern = cuda_launcher.CubinKernel(b, torch.device("cpu"), drv)
    kern[(2, 1)](*bufs, launch_pdl=True, PDL=True)
    assert drv.calls[-1] == ("cuLaunchKernelEx (PDL)", (2, 1, 1), 32 * b.num_warps, b.shared, 0xABC,
                             drv.expect_params)
    kern[(2, 1)](*bufs)
    assert drv.calls[-1][0] == "cuLaunchKernel"
    old = cuda_launcher.CubinKernel(replace(b, launch_pdl=False), torch.device("cpu"), drv)
    old[(2, 1)](*bufs, launch_pdl=True)
    assert drv.calls[-1][0] == "cuLaunchKernel"


def test_ctypes_pdl_launch_config_layout():
    """The ctypes CUlaunchConfig / CUlaunchAttribute match cuda.h's layout (64-bit): what the driver reads."""
    L, A = cuda_launcher._LaunchConfig, cuda_launcher._LaunchAttribute
    assert ctypes.sizeof(A) == 72 and A.value.offset == 8
    assert ctypes.sizeof(L) == 56 and (L.sharedMemBytes.offset, L.hStream.offset, L.attrs.offset,
                                       L.numAttrs.offset) == (24, 32, 40, 48)
    cfg, attrs = cuda_launcher.pdl_launch_config((5, 3, 2), 256, 1000, 0xABC)
    assert (cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ, cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ) == (5, 3, 2, 256, 1, 1)
    assert (cfg.sharedMemBytes, cfg.hStream, cfg.numAttrs) == (1000, 0xABC, 1)
    assert cfg.attrs[0].id == 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
    assert ctypes.c_int.from_buffer(attrs[0], A.value.offset).value == 1  # programmaticStreamSerializationAllowed


def test_pdl_prologue_only_where_the_arch_has_it(built):
    """sm_80 binaries of the same kernel are compiled with PDL=False: no griddepcontrol, no PDL launch."""
    from trtjit.crosscompile import compile_kernels

    engine, _, _, _ = built
    k = engine.kernels[0]
    b80 = compile_kernels(engine.graph, [k], ["sm_80"])["sm_80"][0]
    assert not b80.launch_pdl and "griddepcontrol" not in b80.ptx
    assert b80.constexprs == k.constexprs


def test_engine_asks_for_pdl_on_sm90_only(built, monkeypatch):
    """The engine passes PDL=True and launch_pdl=True to its generated kernels on an sm_90+ GPU with ``pdl``
    on; never on older GPUs, with ``pdl`` off, or to kernels without the prologue."""
    engine, _, inputs, _ = built
    calls = []

    class Rec:
        def __getitem__(self, grid):
            return lambda *a, **kw: calls.append(kw)

    bufs, _ = engine._bind(tuple(t.cpu() for t in inputs))
    engine._launch(0, Rec(), bufs, pdl=True)
    assert calls[-1]["PDL"] is True and calls[-1]["launch_pdl"] is True
    engine._launch(0, Rec(), bufs)
    assert "PDL" not in calls[-1] and "launch_pdl" not in calls[-1]
    monkeypatch.setattr(engine, "_pdl_kernels", [False] * len(engine.kernels))
    engine._launch(0, Rec(), bufs, pdl=True)
    assert "PDL" not in calls[-1]
    assert not engine._pdl_on(torch.device("cpu"))
    if cuda_launcher.current_arch() is None:  # the interpreter: no PDL
        assert not engine._pdl_on(torch.device("cuda", 0))
    for arch, want in (("sm_90", True), ("sm_89", False), ("sm_100", True)):
        engine._arch.clear()
        monkeypatch.setattr(cuda_launcher, "current_arch", lambda d=None, a=arch: a)
        assert engine._pdl_on(torch.device("cuda", 0)) is want
    engine.pdl = False
    try:
        assert not engine._pdl_on(torch.device("cuda", 0))
    finally:
        engine.pdl = True


def test_cubin_launcher_big_shared_memory_and_errors(built, fake_cuda):
    from dataclasses import replace
    engine, _, _, _ = built
    b = replace(engine.binaries["sm_90"][0], shared=100 * 1024, global_scratch_size=128, global_scratch_align=256)
    drv = _FakeDriver()
    kern = cuda_launcher.CubinKernel(b, torch.device("cpu"), drv)
    assert ("cuFuncSetAttribute", "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES", 227 * 1024) in drv.calls
    bufs = [torch.empty(64) for _ in b.params]
    drv.expect_params = [t.data_ptr() for t in bufs] + [None, None]
    kern[(2, 2, 1)](*bufs)
    scratch = drv.calls[-1][-1][-2]
    assert scratch is not None and scratch % 256 == 0  # allocated: 4 programs x 128 bytes
    assert kern._scratch[(2, 2, 1)][0].numel() >= 4 * 128
    with pytest.raises(EngineError, match=r"needs 102400 bytes of shared memory; this GPU allows 49152"):
        cuda_launcher.CubinKernel(b, torch.device("cpu"), _FakeDriver(optin=48 * 1024))
    with pytest.raises(EngineError, match=r"cuModuleLoadData failed for kernel 'gemm_fc1': CUDA_ERROR_LAUNCH_FAILED"):
        cuda_launcher.CubinKernel(b, torch.device("cpu"), _FakeDriver(fail="cuModuleLoadData"))
    bad = _FakeDriver(fail="cuLaunchKernel")
    kern = cuda_launcher.CubinKernel(b, torch.device("cpu"), bad)
    bad.expect_params = drv.expect_params
    with pytest.raises(EngineError, match="cuLaunchKernel failed for kernel 'gemm_fc1'"):
        kern[(1,)](*bufs)


def test_engine_without_binary_for_arch_refuses_jit(built):
    engine, path, inputs, _ = built
    loaded = trtjit.load(str(path))
    loaded.allow_jit = False
    loaded.binaries = {"sm_80": loaded.binaries["sm_90"]}
    orig = cuda_launcher.current_arch
    try:
        cuda_launcher.current_arch = lambda *a: "sm_90"
        with pytest.raises(EngineError, match=r"binaries for sm_80.*rebuild=True"):
            cuda_launcher.engine_kernels(loaded, torch.device("cuda", 0))
    finally:
        cuda_launcher.current_arch = orig


# ---------------------------------------------------------------------------------------------- GPU
GPU_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    t0 = time.perf_counter()
    import torch, trtjit
    from trtjit import cuda_launcher
    from trtjit.examples import example
    engine = trtjit.load(sys.argv[1])
    t_load = time.perf_counter() - t0
    model, inputs = example("example_net", batch=2)
    x = inputs[0].cuda()
    t1 = time.perf_counter()
    out = engine(x)
    torch.cuda.synchronize()
    t_first = time.perf_counter() - t1
    with torch.no_grad():
        ref = model.double().cuda()(x.double())
    err = float((out.double() - ref).abs().max() / ref.abs().max())
    cache = sys.argv[2]
    print(json.dumps({"err": err, "mode": cuda_launcher.describe(engine, x.device), "load_s": t_load,
                      "first_s": t_first, "cache_files": sum(len(f) for _, _, f in os.walk(cache))}))
""")


@pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
                    reason="needs a CUDA GPU (and Triton in compiled mode)")
def test_gpu_engine_runs_from_stored_cubins_without_compiler(tmp_path):
    arch = cuda_launcher.current_arch()
    if arch not in trtjit.options.TARGETS:
        pytest.skip(f"Triton cannot cross-compile for this GPU ({arch})")
    model, inputs = example("example_net", batch=2)
    engine = trtjit.compile(model, inputs, targets=[arch])
    plan = tmp_path / "net.plan"
    engine.save(str(plan))
    cache, empty_bin = tmp_path / "triton-cache", tmp_path / "bin"
    cache.mkdir()
    empty_bin.mkdir()
    script = tmp_path / "check.py"
    script.write_text(GPU_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "CXX", "TRITON_INTERPRET")}
    env.update(TRITON_CACHE_DIR=str(cache), PATH=str(empty_bin),  # no compiler, no ptxas reachable
               PYTHONPATH=os.pathsep.join([str(Path(trtjit.__file__).parents[1]), env.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, str(script), str(plan), str(cache)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["mode"].startswith(f"stored {arch} cubins"), got
    assert got["cache_files"] == 0, f"Triton compiled something: {got}"
    assert got["err"] < 1e-4, got
