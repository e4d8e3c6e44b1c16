"""INT8 post-training quantization: kernels, calibrators, calibration cache, per-layer precision check.

Tolerances (int8 by task metric): an int8 engine's output is within 5% (max relative error) of the fp32
module's, the classification head's argmax agrees on >= 90% of fresh random inputs of a random network
(logits of an untrained network are close together; the pretrained-network test asks for 99%), and the
generated kernels agree with the reference interpreter running the same int8 IR to fp32 rounding.
"""

from __future__ import annotations

import struct

import pytest
import torch
from conftest import DEVICE, assert_close_rel, rel_error
from torch import nn

import trtjit
from trtjit.calibration import CalibrationCache
from trtjit.errors import CalibrationError
from trtjit.examples import example
from trtjit.interpreter import run_graph

CALIBRATORS = [trtjit.EntropyCalibrator, trtjit.MinMaxCalibrator, trtjit.PercentileCalibrator, trtjit.MSECalibrator]
TOL = 0.05


class SmallCNN(nn.Module):
    """conv-BN-ReLU, a residual conv block, pooling and a linear classification head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.conv2(torch.relu(self.conv1(x))))
        return self.head(self.pool(x).flatten(1))


def _cnn(gen: torch.Generator) -> nn.Module:
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    m = SmallCNN().eval()
    bn = m.stem[1]
    bn.running_mean.copy_(torch.randn(8, generator=gen) * 0.2)
    bn.running_var.copy_(torch.rand(8, generator=gen) + 0.5)
    return m


def _batches(gen: torch.Generator, shape: tuple[int, ...], n: int = 8) -> list[torch.Tensor]:
    return [torch.randn(*shape, generator=gen) for _ in range(n)]


def _build(model, x, cal, **kw):
    return trtjit.compile(model.to(DEVICE), (x.to(DEVICE),), precision="int8", calibrator=cal, **kw)


def _int8_layers(engine) -> list[str]:
    return [r["layer"] for r in engine.precision_report() if r["precision"] == "int8"]


def test_interpreter_int8_dot_is_exact():
    """Triton 3.6's interpreter computes int8 x int8 -> int32 dots exactly (sums beyond 2**24 included),
    so the int8 kernels run the same int8 path on the CPU as on the GPU."""
    import triton
    import triton.language as tl

    @triton.jit
    def dot8(a_ptr, b_ptr, c_ptr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        rm = tl.arange(0, BM)[:, None]
        rn = tl.arange(0, BN)[None, :]
        rk = tl.arange(0, BK)
        a = tl.load(a_ptr + rm * BK + rk[None, :])
        b = tl.load(b_ptr + rk[:, None] * BN + rn)
        acc = tl.dot(a, b, tl.zeros((BM, BN), dtype=tl.int32), out_dtype=tl.int32)
        tl.store(c_ptr + rm * BN + rn, acc)

    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (16, 2048), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (2048, 16), dtype=torch.int8, generator=g)
    a[0], b[:, 0] = -128, -128  # one output of 2048 * 2**14 = 2**25: not exact in float32
    c = torch.empty(16, 16, dtype=torch.int32, device=DEVICE)
    dot8[(1,)](a.to(DEVICE), b.to(DEVICE), c, 16, 16, 2048)
    assert torch.equal(c.cpu(), a.long().matmul(b.long()).int())
    assert int(c[0, 0]) == 2**25


@pytest.mark.parametrize("cal_cls", CALIBRATORS, ids=lambda c: c.__name__)
def test_small_cnn_int8(cal_cls, gen):
    model = _cnn(gen)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    engine = _build(model, x, cal_cls(_batches(gen, (2, 3, 8, 8))), verify=True)
    assert set(_int8_layers(engine)) == {"stem.0", "conv1", "conv2", "head.matmul"}, engine.precision_table()
    # the int8 convolutions are fused: int8 weights, dequantize + bias (+ residual) in the epilogue, and the
    # requantize of the next layer's input stored as int8 by the producing kernel
    gemms = [n for n in engine.graph if n.op == "fused_gemm"]
    assert all(n.attrs["body"].spec(n.attrs["body"].inputs_of(
        next(b.name for b in n.attrs["body"] if b.op in ("conv2d", "matmul")))[1]).dtype == torch.int8 for n in gemms)
    assert any(b.op == "quantize" for n in gemms for b in n.attrs["body"])
    assert any(s.dtype == torch.int8 for n in gemms for s in n.outputs)
    with torch.no_grad():
        ref = model(x.to(DEVICE))
    out = engine(x.to(DEVICE))
    assert out.dtype == torch.float32
    assert rel_error(out, ref) <= TOL
    assert_close_rel(out, run_graph(engine.graph, [x.to(DEVICE)])[0], tol=1e-4)  # kernels == int8 IR
    # argmax agreement of the head on fresh inputs (the IR through the reference interpreter: fast)
    xs = _batches(gen, (2, 3, 8, 8), 16)
    agree = sum(int((run_graph(engine.graph, [t])[0].argmax(1) == model(t).argmax(1)).sum()) for t in xs)
    assert agree >= 0.9 * 2 * len(xs)


@pytest.mark.parametrize("fallback", ["fp16", "bf16"])
def test_int8_with_16bit_fallback(fallback, gen):
    """fallback_precision: every layer that is not int8 and every tensor between layers is 16-bit (TensorRT's
    INT8 + FP16 flags); the int8 layers' dequantize stays fp32 in the kernel and stores the 16-bit dtype.
    The user's fp32 input and output dtypes are kept."""
    model = _cnn(gen)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    engine = _build(model, x, trtjit.MinMaxCalibrator(_batches(gen, (2, 3, 8, 8))), verify=True,
                    fallback_precision=fallback)
    # the RGB stem conv (3 input channels) stays 16-bit: faster than int8 there
    assert set(_int8_layers(engine)) == {"conv1", "conv2", "head.matmul"}, engine.precision_table()
    report = {r["layer"]: r for r in engine.precision_report()}
    assert report["stem.0"]["precision"] == fallback and "3 input channels" in report["stem.0"]["reason"]
    want = {"fp16": torch.float16, "bf16": torch.bfloat16}[fallback]
    floats = {s.dtype for n in engine.graph if n.op not in ("input", "constant") for s in n.outputs
              if s.dtype.is_floating_point}
    assert want in floats and floats <= {want, torch.float32}
    outs = {v.node for v in engine.graph.outputs}
    stored = {s.dtype for n in engine.graph if n.op == "fused_gemm" and n.name not in outs for s in n.outputs}
    assert stored <= {want, torch.int8} and torch.int8 in stored  # no fp32 tensor between layers
    with torch.no_grad():
        ref = model(x.to(DEVICE))
    out = engine(x.to(DEVICE))
    assert out.dtype == torch.float32 and rel_error(out, ref) <= 2 * TOL
    assert_close_rel(out, run_graph(engine.graph, [x.to(DEVICE)])[0], tol=1e-2)  # kernels == the IR
    with pytest.raises(trtjit.InputError, match="fallback_precision"):
        trtjit.compile(model, (x,), precision="fp16", fallback_precision="fp16")
    with pytest.raises(trtjit.InputError, match="fallback_precision 'int4' is not supported"):
        trtjit.compile(model, (x,), precision="int8", fallback_precision="int4")


def test_16bit_fallback_keeps_only_an_rgb_stem_out_of_int8(gen):
    """The few-channel rule is for a dense stem (3 input channels); a depthwise conv (1 channel per group) has
    its own loop and stays int8."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.ReLU(), nn.Conv2d(8, 16, 1)).eval()
    x = torch.randn(2, 3, 6, 6, generator=gen)
    engine = _build(model, x, trtjit.MinMaxCalibrator(_batches(gen, (2, 3, 6, 6), 2)), fallback_precision="fp16")
    prec = {r["layer"]: r["precision"] for r in engine.precision_report()}
    assert prec == {"0": "fp16", "2": "int8", "4": "int8"}, engine.precision_table()


class Bottlenecks(nn.Module):
    """ResNet bottlenecks with identity shortcuts: each block's output is read twice, by the next block's
    int8 conv (quantized) and by its residual add. ``taps`` also reads each block's output in float (pooled
    feature outputs), so it must stay in float too."""

    def __init__(self, c: int = 16, mid: int = 8, blocks: int = 2, taps: bool = False) -> None:
        super().__init__()
        self.taps = taps
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU())
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(c, mid, 1), nn.ReLU(), nn.Conv2d(mid, mid, 3, padding=1),
                                                  nn.ReLU(), nn.Conv2d(mid, c, 1)) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        feats = []
        for b in self.blocks:
            if self.taps:
                feats.append(x.amax((2, 3)))
            x = torch.relu(b(x) + x)
        return torch.cat([x.mean((2, 3)), *feats], 1)


RESIDUAL_RULE = "int8 tensor + residual add => add reads the int8 copy"


def _bottlenecks(gen, taps: bool):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    model = Bottlenecks(taps=taps).eval()
    x = torch.randn(2, 3, 8, 8, generator=gen)
    engine = _build(model, x, trtjit.MinMaxCalibrator(_batches(gen, (2, 3, 8, 8), 2)), verify=True,
                    fallback_precision="fp16")
    with torch.no_grad():
        ref = model(x.to(DEVICE))
    out = engine(x.to(DEVICE))
    assert rel_error(out, ref) <= 2 * TOL
    assert_close_rel(out, run_graph(engine.graph, [x.to(DEVICE)])[0], tol=1e-2)
    convs = [k for k in engine.kernels if k.template == "conv"]
    assert all(engine.graph.node(k.node).attrs["out_perm"] == [0, 2, 3, 1] for k in convs)
    int8 = [k for k in convs if engine.graph.spec(engine.graph.inputs_of(k.node)[0]).dtype == torch.int8]
    assert len(int8) == 6 and not [k.name for k in int8 if k.problem.get("gather")]
    events = [e for r in engine.build_log for e in r.events if e["rule"] == RESIDUAL_RULE]
    return engine, convs, events


def test_int8_residual_reads_the_int8_copy(gen):
    """A block output read only by the next int8 conv and the shortcut add is stored once, in int8; the add's
    kernel (the next block's last conv) loads it and dequantizes it in its epilogue."""
    engine, convs, events = _bottlenecks(gen, taps=False)
    assert len([e for e in events if e["fired"]]) == 2  # the stem's output and the first block's
    enders = [k for k in convs if "dequantize" in k.source]
    assert len(enders) == 2 and all(len(engine.graph.node(k.node).outputs) == 1 for k in convs)
    assert all(engine.graph.node(k.node).outputs[0].dtype == torch.int8 for k in enders[:1])
    for fallback in ("fp32", "fp16"):  # keep_fp32 of the add keeps the float shortcut
        kept = _build(Bottlenecks().eval(), torch.randn(2, 3, 8, 8, generator=gen),
                      trtjit.MinMaxCalibrator(_batches(gen, (2, 3, 8, 8), 2)), fallback_precision=fallback,
                      keep_fp32=["add"])
        assert not [k for k in kept.kernels if "dequantize" in k.source]
        assert not any(e["fired"] for r in kept.build_log for e in r.events if e["rule"] == RESIDUAL_RULE)


def test_a_rejected_shortcut_stays_rejected_when_built_from_the_cache(gen, tmp_path):
    """A shortcut whose int8 rounding exceeds int8_tolerance keeps its float copy, and the calibration cache
    records it: a build from the cache alone (no data to check on) decides the same."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    model = Bottlenecks(blocks=1).eval()
    with torch.no_grad():  # the block's first conv averages its input channels: its int8 error stays small
        w = model.blocks[0][0].weight
        w.copy_(torch.full_like(w, 1 / 16) + 0.001 * torch.randn(w.shape, generator=gen))
    x = torch.randn(2, 3, 8, 8, generator=gen)
    cache = tmp_path / "b.cache"
    probe = _build(model, x, trtjit.MinMaxCalibrator(_batches(gen, (2, 3, 8, 8), 2)), int8_tolerance=1.0)
    (ev,) = [e for r in probe.build_log for e in r.events if e["rule"] == RESIDUAL_RULE]
    err = float(ev["detail"].split("int8 relative error ")[1].split()[0])
    layer = max(r["error"] for r in probe.precision_report() if r["layer"] == "blocks.0.0")
    assert layer < err, "the case needs a layer that passes where the shortcut fails"
    tol = (layer + err) / 2
    first = _build(model, x, trtjit.MinMaxCalibrator(_batches(gen, (2, 3, 8, 8), 2), cache=str(cache)),
                   int8_tolerance=tol)
    again = _build(model, x, trtjit.MinMaxCalibrator([], cache=str(cache)), int8_tolerance=tol)
    for engine in (first, again):
        (ev,) = [e for r in engine.build_log for e in r.events if e["rule"] == RESIDUAL_RULE]
        assert not ev["fired"]
        assert [k for k in engine.kernels if "dequantize" in k.source] == []
    assert "calibration cache" in [e for r in again.build_log for e in r.events if e["rule"] == RESIDUAL_RULE][0][
        "detail"]
    assert "shortcut/" in cache.read_text()
    assert_close_rel(again(x.to(DEVICE)), first(x.to(DEVICE)), tol=1e-6)


class TwoShortcuts(nn.Module):
    """One feature map read by an int8 conv and by two shortcut adds in two other convs' epilogues."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU())
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.a(x) + x)
        return (self.b(y) + x).mean((2, 3))


def test_a_feature_map_read_by_two_shortcuts_is_stored_once(gen):
    """Each add gets its own dequantize, taken into its conv's epilogue: the stem stores only int8."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    model = TwoShortcuts().eval()
    x = torch.randn(2, 3, 8, 8, generator=gen)
    engine = _build(model, x, trtjit.MinMaxCalibrator(_batches(gen, (2, 3, 8, 8), 2)), verify=True,
                    fallback_precision="fp16")
    convs = {k.name: k for k in engine.kernels if k.template == "conv"}
    stem = engine.graph.node(convs["conv_stem_0"].node)
    assert [o.dtype for o in stem.outputs] == [torch.int8]
    assert len([k for k in convs.values() if "dequantize" in k.source]) == 2
    assert [k.template for k in engine.kernels].count("pointwise") == 1  # the input cast: no dequantize kernel
    with torch.no_grad():
        ref = model(x.to(DEVICE))
    out = engine(x.to(DEVICE))
    assert rel_error(out, ref) <= 2 * TOL
    assert_close_rel(out, run_graph(engine.graph, [x.to(DEVICE)])[0], tol=1e-2)


def test_two_output_block_convs_store_nhwc(gen):
    """Block outputs also read in float (feature taps) keep their float copy: the conv ending a block stores
    two outputs of one shape (the fp16 tensor and its int8 copy), both NHWC, so no int8 conv falls back to
    gathering an NCHW input element by element."""
    engine, convs, events = _bottlenecks(gen, taps=True)
    assert events and not any(e["fired"] for e in events) and "other ops" in events[0]["detail"]
    assert [k for k in convs if len(engine.graph.node(k.node).outputs) == 2]


@pytest.mark.parametrize("cal_cls", CALIBRATORS, ids=lambda c: c.__name__)
def test_transformer_block_int8(cal_cls, gen):
    model, (x,) = example("transformer_layer")
    cal = cal_cls(_batches(gen, tuple(x.shape)))
    engine = _build(model, x, cal, verify=True)
    report = {r["layer"]: r for r in engine.precision_report()}
    assert len(_int8_layers(engine)) == 4, engine.precision_table()  # QKV (merged), out proj, FFN 1 and 2
    assert all(r["error"] is not None and r["error"] <= 0.05 for r in report.values() if r["precision"] == "int8")
    with torch.no_grad():
        ref = model(x.to(DEVICE))
    out = engine(x.to(DEVICE))
    assert rel_error(out, ref) <= TOL
    assert_close_rel(out, run_graph(engine.graph, [x.to(DEVICE)])[0], tol=1e-4)


def test_calibration_inputs_generator_and_dataloader(gen):
    """A one-shot generator and a DataLoader of (input, label) pairs calibrate like a list."""
    model, (x,) = example("mlp")
    data = _batches(gen, tuple(x.shape))
    want = _build(model, x, trtjit.MinMaxCalibrator(data), opt_level=1).precision_report()
    from_gen = _build(model, x, trtjit.MinMaxCalibrator(t for t in data), opt_level=1).precision_report()
    ds = torch.utils.data.TensorDataset(torch.cat(data), torch.zeros(len(data) * x.shape[0]))
    loader = torch.utils.data.DataLoader(ds, batch_size=x.shape[0])
    from_loader = _build(model, x, trtjit.MinMaxCalibrator(loader), opt_level=1).precision_report()
    scales = [r["act_scale"] for r in want]
    assert [r["act_scale"] for r in from_gen] == scales == [r["act_scale"] for r in from_loader]


class CountingCalibrator(trtjit.EntropyCalibrator):
    """TensorRT's interface shape: a subclass that serves batches from get_batch and keeps the cache in
    memory."""

    def __init__(self, data: list[torch.Tensor]) -> None:
        super().__init__()
        self.data, self.i, self.stored = data, 0, None

    def get_batch_size(self) -> int:
        return int(self.data[0].shape[0])

    def get_batch(self, names):
        if self.i >= len(self.data):
            return None
        self.i += 1
        return [self.data[self.i - 1]]

    def read_calibration_cache(self):
        return self.stored

    def write_calibration_cache(self, cache: bytes) -> None:
        self.stored = cache


def test_tensorrt_interface_subclass(gen):
    model, (x,) = example("mlp")
    cal = CountingCalibrator(_batches(gen, tuple(x.shape), 4))
    assert cal.get_batch_size() == x.shape[0]
    engine = _build(model, x, cal, opt_level=1)
    assert cal.i == 4 and cal.stored.startswith(b"TRT-8601-EntropyCalibration2\n")
    assert engine.graph.meta["calibration"]["batches"] == 4
    again = _build(model, x, cal, opt_level=1)  # second build: the in-memory cache, no batch is read
    assert cal.i == 4 and again.graph.meta["calibration"]["batches"] == 0
    assert [r["act_scale"] for r in again.precision_report()] == [r["act_scale"] for r in engine.precision_report()]


def test_cache_round_trip(gen, tmp_path):
    model, (x,) = example("mlp")
    path = tmp_path / "mlp.cache"
    first = _build(model, x, trtjit.EntropyCalibrator(_batches(gen, tuple(x.shape)), cache=path), opt_level=1)
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    cache = CalibrationCache.parse(path.read_bytes())
    assert cache.graph_key and cache.data_key
    for r in first.precision_report():  # every scale is the big-endian float32 bit pattern of the scale used
        hexs = next(ln.split(": ")[1] for ln in lines if ln.startswith(r["tensor"] + ": "))
        assert len(hexs) == 8 and struct.unpack(">f", bytes.fromhex(hexs))[0] == r["act_scale"]
    second = _build(model, x, trtjit.EntropyCalibrator(cache=path), opt_level=1)  # no data: the cache alone
    assert second.graph.meta["calibration"]["source"] == str(path)
    assert [k.source for k in second.kernels] == [k.source for k in first.kernels]
    assert [r["precision"] for r in second.precision_report()] == [r["precision"] for r in first.precision_report()]
    assert all("not checked" in r["reason"] for r in second.precision_report() if r["precision"] == "int8")
    assert torch.equal(second(x.to(DEVICE)), first(x.to(DEVICE)))


def test_tensorrt_written_cache_imports(gen, tmp_path):
    """A cache in TensorRT's format without trtjit's keys: scales used by tensor name, a layer whose
    input has no scale stays fp32 and says why."""
    model, (x,) = example("mlp")
    probe = _build(model, x, trtjit.MinMaxCalibrator(_batches(gen, tuple(x.shape), 2)), opt_level=1)
    first, second = (r["tensor"] for r in probe.precision_report())
    path = tmp_path / "trt.cache"
    path.write_text(f"TRT-8510-MinMaxCalibration\n{first}: {struct.pack('>f', 0.03125).hex()}\n"
                    f"some_other_tensor: 3c000000\n")
    engine = _build(model, x, trtjit.MinMaxCalibrator(cache=path), opt_level=1)
    rep = {r["tensor"]: r for r in engine.precision_report()}
    assert rep[first]["precision"] == "int8" and rep[first]["act_scale"] == 0.03125
    assert rep[second]["precision"] == "fp32" and "no scale" in rep[second]["reason"]
    q = next(n for n in engine.graph.nodes if n.op == "quantize" or (
        n.op.startswith("fused") and any(b.op == "quantize" for b in n.attrs["body"])))
    assert q is not None
    with torch.no_grad():
        assert rel_error(engine(x.to(DEVICE)), model(x.to(DEVICE))) <= TOL


def test_stale_cache_refused_or_recalibrated(gen, tmp_path):
    model, (x,) = example("mlp")
    path = tmp_path / "mlp.cache"
    data = _batches(gen, tuple(x.shape), 4)
    _build(model, x, trtjit.EntropyCalibrator(data, cache=path), opt_level=1)
    other, _ = example("mlp", seed=1)  # same architecture, other weights: another graph
    with pytest.raises(CalibrationError, match="another graph.*recalibrate=True"):
        _build(other, x, trtjit.EntropyCalibrator(data, cache=path), opt_level=1)
    with pytest.raises(CalibrationError, match="other calibration data"):
        _build(model, x, trtjit.EntropyCalibrator(_batches(gen, tuple(x.shape), 4), cache=path), opt_level=1)
    with pytest.raises(CalibrationError, match="made by EntropyCalibration2.*MinMaxCalibrator"):
        _build(model, x, trtjit.MinMaxCalibrator(data, cache=path), opt_level=1)
    old = path.read_text()
    engine = _build(other, x, trtjit.EntropyCalibrator(data, cache=path, recalibrate=True), opt_level=1)
    assert engine.graph.meta["calibration"]["batches"] == 4 and path.read_text() != old
    _build(other, x, trtjit.EntropyCalibrator(data, cache=path), opt_level=1)  # now it fits


def test_bad_calibration_input_names_batch_and_tensor(gen, tmp_path):
    model, (x,) = example("mlp")
    good = torch.randn(*x.shape, generator=gen)
    with pytest.raises(CalibrationError, match=r"calibration batch 1, input 'x': expected float32\[2,32\], got "
                                               r"float32\[3,32\]"):
        _build(model, x, trtjit.MinMaxCalibrator([good, torch.randn(3, 32)]), opt_level=1)
    with pytest.raises(CalibrationError, match=r"calibration batch 0, input 'x': expected float32\[2,32\], got "
                                               r"float16\[2,32\]"):
        _build(model, x, trtjit.MinMaxCalibrator([good.half()]), opt_level=1)
    with pytest.raises(CalibrationError, match="calibration set is empty"):
        _build(model, x, trtjit.MinMaxCalibrator([]), opt_level=1)
    with pytest.raises(CalibrationError, match=r"batch 1, input 'x'.*got float32\[1,32\].*drop_last=True"):
        _build(model, x, trtjit.MinMaxCalibrator([good, good[:1]]), opt_level=1)
    once = trtjit.MinMaxCalibrator(t for t in [good])
    _build(model, x, once, opt_level=1)
    with pytest.raises(CalibrationError, match="a generator runs once"):
        _build(model, x, once, opt_level=1)
    twice = trtjit.MinMaxCalibrator([good])
    assert _build(model, x, twice, opt_level=1).precision_report() == \
        _build(model, x, twice, opt_level=1).precision_report()
    with pytest.raises(CalibrationError, match="calibration batch 0, input 'x' holds NaN"):
        _build(model, x, trtjit.MinMaxCalibrator([torch.full(x.shape, float("nan"))]), opt_level=1)
    with pytest.raises(CalibrationError, match="calibration batch 0: calibration batch lacks input"):
        _build(model, x, trtjit.MinMaxCalibrator([{"y": good}]), opt_level=1)
    with pytest.raises(CalibrationError, match="needs calibration data for 2 layer"):
        trtjit.compile(model, (x,), precision="int8", opt_level=1)
    with pytest.raises(CalibrationError, match="got one tensor"):
        trtjit.MinMaxCalibrator(good)
    bad = tmp_path / "bad.cache"
    bad.write_text("TRT-8601-MinMaxCalibration\nfc1.x 3c000000\n")
    with pytest.raises(CalibrationError, match=r"bad.cache: line 2 'fc1.x 3c000000' is not"):
        _build(model, x, trtjit.MinMaxCalibrator(cache=bad), opt_level=1)
    bad.write_text("calibration scales\n")
    with pytest.raises(CalibrationError, match="not a TensorRT calibration cache"):
        _build(model, x, trtjit.MinMaxCalibrator(cache=bad), opt_level=1)


def test_precision_check_overrides_and_strict(gen):
    model, (x,) = example("mlp")
    data = _batches(gen, tuple(x.shape), 4)
    tight = _build(model, x, trtjit.MinMaxCalibrator(data), opt_level=1, int8_tolerance=1e-6)
    rep = tight.precision_report()
    assert all(r["precision"] == "fp32" and "int8_tolerance 1e-06" in r["reason"] for r in rep)
    assert not any(n.op == "quantize" for n in tight.graph)
    strict = _build(model, x, trtjit.MinMaxCalibrator(data), opt_level=1, int8_tolerance=1e-6,
                    strict_precision=True)
    assert all(r["precision"] == "int8" and r["reason"].startswith("strict_precision") for r in
               strict.precision_report())
    by_name = _build(model, x, trtjit.MinMaxCalibrator(data), opt_level=1, keep_fp32=("fc2",))
    assert [r["precision"] for r in by_name.precision_report()] == ["int8", "fp32"]
    assert by_name.precision_report()[1]["reason"] == "keep_fp32 override"
    by_op = _build(model, x, trtjit.MinMaxCalibrator(data), opt_level=1, keep_fp32=("matmul",))
    assert [r["precision"] for r in by_op.precision_report()] == ["fp32", "fp32"]
    table = strict.precision_table()
    assert "fc1.matmul" in table.splitlines()[1] and "int8" in table
    rec = next(r for r in strict.build_log if r.name == "quantize_int8")
    assert sum(e["fired"] for e in rec.events) == 2


def test_int8_engine_file_round_trip(gen, tmp_path):
    model, (x,) = example("mlp")
    engine = _build(model, x, trtjit.EntropyCalibrator(_batches(gen, tuple(x.shape), 4)))
    path = engine.save(str(tmp_path / "mlp_int8.plan"))
    loaded = trtjit.load(path)
    assert loaded.options.precision == "int8"
    assert loaded.precision_report() == engine.precision_report()
    assert torch.equal(loaded(x.to(DEVICE)), engine(x.to(DEVICE)))


def test_opt_level_0_int8(gen):
    """Without folding the weight is a permute view of the constant; every op is its own kernel."""
    model, (x,) = example("mlp")
    engine = _build(model, x, trtjit.MinMaxCalibrator(_batches(gen, tuple(x.shape), 2)), opt_level=0, verify=True)
    assert len(_int8_layers(engine)) == 2
    with torch.no_grad():
        assert rel_error(engine(x.to(DEVICE)), model(x.to(DEVICE))) <= TOL


# ------------------------------------------------------------------------------------------------- fp8
def test_fp8_gemm(gen):
    """precision="fp8": matmuls in float8_e4m3fn with per-channel weight scales (threshold / 448), fp32
    accumulation; e4m3 keeps 3 mantissa bits, so the tolerance against fp32 is 10%."""
    model, (x,) = example("mlp")
    engine = _build(model, x, trtjit.MinMaxCalibrator(_batches(gen, tuple(x.shape), 4)), verify=True)
    fp8 = trtjit.compile(model.to(DEVICE), (x.to(DEVICE),), precision="fp8",
                         calibrator=trtjit.MinMaxCalibrator(_batches(gen, tuple(x.shape), 4)), verify=True)
    assert [r["precision"] for r in fp8.precision_report()] == ["fp8", "fp8"], fp8.precision_table()
    # e4m3 weights stored [N, K] (K-major, as the 8-bit MMAs read them) behind a transposed view
    assert {n.spec.dtype for n in fp8.graph if n.op == "constant" and n.name.endswith("weight_fp8_nk")} == \
        {torch.float8_e4m3fn}
    assert any("tl.float8e4nv" in k.source for k in fp8.kernels) and engine.kernels
    out = fp8(x.to(DEVICE))
    with torch.no_grad():
        assert rel_error(out, model(x.to(DEVICE))) <= 0.1
    assert_close_rel(out, run_graph(fp8.graph, [x.to(DEVICE)])[0], tol=1e-5)  # kernels == fp8 IR


def test_fp8_targets(gen):
    with pytest.raises(trtjit.InputError, match=r"fp8.*sm_89 or newer.*\['sm_80'\]"):
        trtjit.BuildOptions(precision="fp8", targets=["sm_80", "sm_90"])
    model, (x,) = example("mlp")
    engine = trtjit.compile(model, (x,), precision="fp8", targets=["sm_90"],
                            calibrator=trtjit.MinMaxCalibrator(_batches(gen, tuple(x.shape), 2)))
    assert engine.targets == ["sm_90"] and len(engine.binaries["sm_90"]) == len(engine.kernels)


def test_fp8_cache_and_engine_file(gen, tmp_path):
    model, (x,) = example("mlp")
    cache = tmp_path / "fp8.cache"
    engine = trtjit.compile(model, (x,), precision="fp8",
                            calibrator=trtjit.MinMaxCalibrator(_batches(gen, tuple(x.shape), 2), cache=cache))
    assert CalibrationCache.parse(cache.read_bytes()).graph_key  # keyed like int8 caches
    loaded = trtjit.load(engine.save(str(tmp_path / "fp8.plan")))
    assert loaded.options.precision == "fp8" and torch.equal(loaded(x.to(DEVICE)), engine(x.to(DEVICE)))


def test_onnx_tensor_names_in_the_cache(gen, tmp_path):
    """For ONNX models the cache names tensors as ONNX (and TensorRT) do, so a TensorRT cache of the same
    ONNX file imports and trtjit's caches read in TensorRT."""
    from onnx import TensorProto, helper, numpy_helper

    w1, w2 = torch.randn(16, 32, generator=gen) * 0.2, torch.randn(32, 8, generator=gen) * 0.2
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["hidden_pre"], name="fc1"),
             helper.make_node("Relu", ["hidden_pre"], ["hidden"], name="act"),
             helper.make_node("MatMul", ["hidden", "w2"], ["logits"], name="fc2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, 8])],
                              [numpy_helper.from_array(w1.numpy(), "w1"), numpy_helper.from_array(w2.numpy(), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    x = torch.randn(4, 16, generator=gen)
    path = tmp_path / "trt.cache"
    path.write_text(f"TRT-8601-EntropyCalibration2\ninput: {struct.pack('>f', 0.03).hex()}\n"
                    f"hidden: {struct.pack('>f', 0.03).hex()}\nlogits: 3c000000\n")
    engine = trtjit.compile(model, {"input": x}, precision="int8", calibrator=trtjit.EntropyCalibrator(cache=path))
    rep = engine.precision_report()
    f32 = lambda v: struct.unpack(">f", struct.pack(">f", v))[0]  # noqa: E731  (the cache holds float32)
    assert [(r["tensor"], r["precision"], r["act_scale"]) for r in rep] == [("input", "int8", f32(0.03)),
                                                                          ("hidden", "int8", f32(0.03))]
    ref = torch.relu(x @ w1) @ w2
    assert rel_error(engine(x.to(DEVICE)).cpu(), ref) <= TOL
    own = tmp_path / "own.cache"
    trtjit.compile(model, {"input": x}, precision="int8",
                   calibrator=trtjit.EntropyCalibrator(_batches(gen, (4, 16), 4), cache=own))
    names = [ln.split(":")[0] for ln in own.read_text().splitlines()[1:] if not ln.startswith("__trtjit")]
    assert names == ["input", "hidden"]


def test_int8_with_a_batch_range_is_refused(gen):
    model, (x,) = example("mlp")
    with pytest.raises(trtjit.BuildError, match="precision 'int8' with a batch range"):
        trtjit.compile(model, (x,), precision="int8", shapes={0: ((1, 32), (2, 32), (4, 32))},
                       calibrator=trtjit.MinMaxCalibrator(_batches(gen, tuple(x.shape), 2)))
