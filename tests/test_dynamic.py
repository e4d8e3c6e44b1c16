"""Dynamic batch (trtjit.dynamic): one engine serves every batch in [min, max], tuned for opt.

Every model is built once with a batch range and run at min, opt, max and a batch in between, against
PyTorch in float64; engine files keep the range; shapes out of range are refused naming it.
"""

from __future__ import annotations

import copy
import ctypes
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import assert_close_rel

import trtjit
from trtjit import cuda_launcher
from trtjit.dynamic import BatchRange, GridDim, GuardError, SymDim, cdiv, grid_at, hint, two_point
from trtjit.errors import BuildError, InputError
from trtjit.interpreter import run_graph
from trtjit.ir import TensorSpec


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


def _models(gen: torch.Generator) -> dict[str, tuple[nn.Module, tuple[int, ...], tuple[int, int, int]]]:
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=gen)))
    mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))
    cnn = _CNN()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        cnn.bn.running_mean.uniform_(-1, 1)
        cnn.bn.running_var.uniform_(0.5, 2)
    enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return {"mlp": (mlp.eval(), (16,), (1, 4, 8)), "cnn": (cnn.eval(), (3, 8, 8), (1, 2, 6)),
            "encoder": (enc.eval(), (5, 16), (1, 3, 4))}


def _ranges(rest: tuple[int, ...], lo: int, opt: int, hi: int) -> tuple[tuple[int, ...], ...]:
    return (lo, *rest), (opt, *rest), (hi, *rest)


@pytest.mark.parametrize("name", ["mlp", "cnn", "encoder"])
def test_dynamic_batch_matches_pytorch(name, gen):
    model, rest, (lo, opt, hi) = _models(gen)[name]
    example = torch.randn(opt, *rest, generator=gen)
    engine = trtjit.compile(model, (example,), shapes={0: _ranges(rest, lo, opt, hi)}, verify=True)
    assert engine.batch_range == BatchRange(lo, opt, hi)
    assert any(k.batch_arg for k in engine.kernels)
    ref_model = model.double()
    for b in sorted({lo, opt, hi, (lo + hi + 1) // 2}):
        x = torch.randn(b, *rest, generator=gen)
        out = engine(x)
        assert out.shape[0] == b
        assert_close_rel(out, ref_model(x.double()).float())
    with pytest.raises(InputError, match=rf"outside the engine's range {lo}\.\.{hi} \(opt {opt}\)"):
        engine(torch.randn(hi + 1, *rest, generator=gen))


class _Mixed(nn.Module):
    """Embedding, LayerNorm, cat, softmax, reflect pad, grouped conv, pooling, transposed conv, resize, a
    batch-inner output: every other kernel template at a dynamic batch."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.ln = nn.LayerNorm(8)
        self.conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
        self.ct = nn.ConvTranspose2d(6, 4, 2, stride=2)

    def forward(self, ids: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.ln(self.emb(ids))
        e = torch.softmax(torch.cat([e, e * 2], dim=1), dim=-1).sum(1)
        y = torch.nn.functional.avg_pool2d(self.conv(torch.nn.functional.pad(img, (1, 1, 1, 1), mode="reflect")), 2)
        y = torch.nn.functional.interpolate(self.ct(y), scale_factor=0.5, mode="bilinear")
        y = torch.nn.functional.adaptive_avg_pool2d(y, (3, 3)).flatten(1)
        return torch.cat([e, y[:, :8]], 1), y.transpose(0, 1).contiguous()


@pytest.mark.parametrize("opt_level", [0, 2])
def test_every_template_at_a_dynamic_batch(opt_level, gen):
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=gen)))
    model = _Mixed().eval()
    ids, img = torch.randint(0, 50, (3, 5), generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    engine = trtjit.compile(model, (ids, img), shapes={"ids": ((1, 5), (3, 5), (7, 5)),
                                                         "img": ((1, 4, 8, 8), (3, 4, 8, 8), (7, 4, 8, 8))},
                            opt_level=opt_level, verify=True)
    ref_model = model.double()
    for b in (1, 2, 7):
        i2, x2 = torch.randint(0, 50, (b, 5), generator=gen), torch.randn(b, 4, 8, 8, generator=gen)
        for out, ref in zip(engine(i2, x2), ref_model(i2, x2.double())):
            assert_close_rel(out, ref.float())


def test_constants_sized_by_the_batch(gen):
    """arange(B) becomes a constant covering the range sliced to the batch; arange(B, 0, -1) (no prefix of a
    larger one) is refused."""
    class Arange(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.arange(x.shape[0], dtype=x.dtype).unsqueeze(1) + torch.ones(x.shape[0], 1)

    class Countdown(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.arange(x.shape[0], 0, -1, dtype=x.dtype).unsqueeze(1)

    rng = {0: ((1, 4), (3, 4), (20, 4))}
    engine = trtjit.compile(Arange(), (torch.randn(3, 4, generator=gen),), shapes=rng, verify=True)
    for b in (1, 7, 20):
        x = torch.randn(b, 4, generator=gen)
        assert_close_rel(engine(x), Arange()(x))
    with pytest.raises(BuildError, match="a constant computed from the dynamic batch"):
        trtjit.compile(Countdown(), (torch.randn(3, 4, generator=gen),), shapes=rng)


@pytest.mark.parametrize("name", ["bert", "vit"])
def test_architectures_at_a_dynamic_batch(name, gen):
    models = pytest.importorskip("test_models")
    torch.manual_seed(0)
    if name == "bert":
        model = models._hf(models.transformers.BertModel, models.transformers.BertConfig, attn_implementation="sdpa",
                           **models.TINY)

        def make(b):
            return torch.randint(0, 64, (b, 8), generator=gen)
    else:
        model = models._randomize(models.ViT(), gen).eval()

        def make(b):
            return torch.randn(b, 3, 16, 16, generator=gen)
    rest = tuple(make(1).shape[1:])
    engine = trtjit.compile(model, (make(2),), shapes={0: tuple((b, *rest) for b in (1, 2, 4))})
    for b in (1, 3, 4):
        x = make(b)
        with torch.no_grad():
            ref = model(x)
        assert_close_rel(engine(x), ref)


def test_tuned_for_opt_and_sized_for_max(gen):
    """Tile heuristics see opt; the memory plan holds the largest batch; grids follow the runtime batch."""
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    small = trtjit.compile(model, (torch.randn(2, 64, generator=gen),), shapes={0: ((1, 64), (2, 64), (256, 64))})
    large = trtjit.compile(model, (torch.randn(2, 64, generator=gen),), shapes={0: ((1, 64), (128, 64), (256, 64))})
    static = trtjit.compile(model, (torch.randn(128, 64, generator=gen),))
    assert large.kernels[0].constexprs == static.kernels[0].constexprs  # tuned exactly as for a batch of opt
    assert small.kernels[0].constexprs["BLOCK_M"] < large.kernels[0].constexprs["BLOCK_M"]
    assert small.memory_plan()["arena_bytes"] == large.memory_plan()["arena_bytes"] >= 256 * 64 * 4
    grid = large.kernels[0].grid
    assert isinstance(grid[0], GridDim) or isinstance(grid[0], SymDim)
    bm = large.kernels[0].constexprs["BLOCK_M"]
    assert grid_at(grid, 200)[0] == math.ceil(200 / bm) and grid_at(grid, 1)[0] == 1
    for b in (1, 200):
        x = torch.randn(b, 64, generator=gen)
        assert_close_rel(large(x), model.double()(x.double()).float())


def test_engine_file_keeps_the_range(tmp_path, gen):
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    engine = trtjit.compile(model, (torch.randn(4, 16, generator=gen),), shapes={"input": ((2, 16), (4, 16), (8, 16))})
    path = tmp_path / "dyn.plan"
    engine.save(str(path))
    loaded = trtjit.load(str(path))
    assert loaded.batch_range == BatchRange(2, 4, 8)
    assert loaded.input_shapes() == {"input": {"min": [2, 16], "opt": [4, 16], "max": [8, 16]}}
    assert [k.source for k in loaded.kernels] == [k.source for k in engine.kernels]
    assert [str(s) for s in loaded.output_specs] == ["float32[nb,8]"]
    for b in (2, 5, 8):
        x = torch.randn(b, 16, generator=gen)
        assert_close_rel(loaded(x), model.double()(x.double()).float())
    with pytest.raises(InputError, match=r"dim 0 is 1, outside the engine's range 2\.\.8 \(opt 4\)"):
        loaded(torch.randn(1, 16, generator=gen))


def test_wrong_shapes_are_refused_with_the_range(gen):
    class Two(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) * y

    x, y = torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, 5, generator=gen)
    rng = ((1, 4, 5), (3, 4, 5), (6, 4, 5))
    engine = trtjit.compile(Two(), (x, y), shapes={"x": rng, "y": rng})
    a, b = torch.randn(6, 4, 5, generator=gen), torch.randn(6, 4, 5, generator=gen)
    assert_close_rel(engine(a, b), torch.relu(a) * b)
    with pytest.raises(InputError, match=r"dim 1 must be 4, got 3; expected shape \[1\.\.6 \(opt 3\), 4, 5\]"):
        engine(torch.randn(2, 3, 5), torch.randn(2, 3, 5))
    with pytest.raises(InputError, match=r"outside the engine's range 1\.\.6 \(opt 3\)"):
        engine(torch.randn(7, 4, 5), torch.randn(7, 4, 5))
    with pytest.raises(InputError, match="batch 2, an earlier input batch 3"):
        engine(torch.randn(3, 4, 5), torch.randn(2, 4, 5))
    with pytest.raises(InputError, match="expected rank 3"):
        engine(torch.randn(3, 20), torch.randn(3, 20))


def test_bad_ranges_are_refused(gen):
    model = nn.Linear(4, 4).eval()
    x = torch.randn(2, 4, generator=gen)
    with pytest.raises(InputError, match="dims \\[0, 1\\] vary"):
        trtjit.compile(model, (x,), shapes={0: ((1, 2), (2, 4), (4, 8))})
    with pytest.raises(InputError, match="1 <= min <= opt <= max"):
        trtjit.compile(model, (x,), shapes={0: ((4, 4), (2, 4), (8, 4))})
    with pytest.raises(InputError, match="model's inputs are"):
        trtjit.compile(model, (x,), shapes={"nope": ((1, 4), (2, 4), (4, 4))})
    with pytest.raises(InputError, match="dim 1 is 5 in the range but 4"):
        trtjit.compile(model, (x,), shapes={0: ((1, 5), (2, 5), (4, 5))})

    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    with pytest.raises(InputError, match="differs from another input's"):
        trtjit.compile(Two(), (x, x), shapes={"a": ((1, 4), (2, 4), (4, 4)), "b": ((1, 4), (2, 4), (8, 4))})


def test_guard_errors_name_the_node(gen):
    class BatchMean(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(0) * 2.0

    x = torch.randn(4, 8, generator=gen)
    with pytest.raises(GuardError, match=r"node '.*'.*reduction over the dynamic batch dim"):
        trtjit.compile(BatchMean(), (x,), shapes={0: ((1, 8), (4, 8), (16, 8))})


def test_symdim_is_strict():
    r = BatchRange(1, 8, 64)
    b = SymDim(1, r)
    assert str(b * 128) == "(nb * 128)" and f"{b}" == "nb" and hint(b * 3) == 24
    assert math.prod([b, 5, 16]) == b * 80 and (b * 80) // 16 == b * 5 and (b * 6) % 3 == 0
    assert b * 4 > 1 and b != 1 and not (b == 1)  # dynamic sizes compare as >= 2 (broadcast checks say no)
    assert b != 16 and b * 2 == b * 2 and (b, 3) != (3,)  # == is structural
    assert b * 128 > 100 and b * 2 < 129  # the same truth over the whole range
    for bad in (lambda: int(b), lambda: b + 1, lambda: b * b, lambda: (b * 3) // 2, lambda: b * 4 < 100,
                lambda: b * 2 >= 64, lambda: float(b), lambda: f"{b:d}",
                lambda: TensorSpec((b, 3), torch.float32).meta()):
        with pytest.raises(GuardError):
            bad()
    g = cdiv(b * 5, 64)
    assert isinstance(g, GridDim) and grid_at((g, 3), 64) == (5, 3) and grid_at((g, 3), 1) == (1, 3)
    with pytest.raises(GuardError):
        g * 2
    assert two_point(lambda s: [s[0] * s[1], s[1], s[0] + 1 - 1], r, [b * 2, 3]) == [b * 6, 3, b * 2]
    with pytest.raises(GuardError, match="neither fixed nor proportional"):
        two_point(lambda s: [s[0] + 1], r, [b])


def test_reference_interpreter_runs_dynamic_graphs(gen):
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    engine = trtjit.compile(model, (torch.randn(2, 6, generator=gen),), shapes={0: ((1, 6), (2, 6), (9, 6))},
                            opt_level=0)
    x = torch.randn(7, 6, generator=gen)
    (out,) = run_graph(engine.graph, [x])
    assert_close_rel(out, model.double()(x.double()).float())


def test_cli_build_with_shapes(tmp_path, capsys):
    from trtjit.cli import main
    from trtjit.cli_engine import parse_shapes

    assert parse_shapes(["x:1x3x8x8,4x3x8x8,16x3x8x8"]) == {"x": ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))}
    for bad in (["x:1x3,4x3"], ["1x3,2x3,3x3"], ["x:1xa,2x3,3x3"]):
        with pytest.raises(InputError, match="--shapes"):
            parse_shapes(bad)
    plan = tmp_path / "mlp.plan"
    spec = 'trtjit.examples:example(name="mlp")'
    from trtjit.examples import example
    _, (ex,) = example(name="mlp")
    rest = "x".join(map(str, ex.shape[1:]))
    rng = f"0:1x{rest},{ex.shape[0]}x{rest},{2 * ex.shape[0]}x{rest}"
    assert main(["build", spec, "-o", str(plan), "--shapes", rng]) == 0
    capsys.readouterr()
    assert main(["inspect", str(plan)]) == 0
    text = capsys.readouterr().out
    assert f"dynamic batch nb in [1, {2 * ex.shape[0]}], tuned for {ex.shape[0]}" in text
    assert main(["run", str(plan), "--batch", "3"]) == 0
    assert "output_0: float32[3," in capsys.readouterr().out
    assert main(["compare", str(plan), spec, "--random", "--batch", str(2 * ex.shape[0])]) == 0
    assert main(["run", str(plan), "--batch", str(2 * ex.shape[0] + 1)]) == 2
    assert "outside the engine's batch range" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- cubins
class _Driver(cuda_launcher._Driver):
    name = "fake"

    def __init__(self, kinds: list[str]) -> None:
        self.kinds = kinds
        self.launches: list[tuple] = []

    def init(self, ordinal, kernel):
        pass

    def load(self, image, kernel):
        return "module"

    def function(self, module, symbol, kernel):
        return "function"

    def func_attr(self, fn, attr, kernel):
        return 0

    def launch(self, fn, grid, threads, shared, stream, params, kernel, pdl=False):
        slots = [ctypes.c_void_p.from_address(params + i * ctypes.sizeof(ctypes.c_void_p)).value
                 for i in range(len(self.kinds))]
        vals = [ctypes.c_int32.from_address(s).value if k == "i32" else ctypes.c_void_p.from_address(s).value
                for s, k in zip(slots, self.kinds)]
        self.launches.append((tuple(grid), vals))


def test_cross_compiled_dynamic_kernels_take_the_batch(tmp_path, gen, monkeypatch):
    """One sm_90 cubin per kernel serves every batch: ``nb`` is an unspecialized i32 after the pointers."""
    import contextlib
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    engine = trtjit.compile(model, (torch.randn(4, 16, generator=gen),), shapes={0: ((1, 16), (4, 16), (64, 16))},
                            targets=["sm_90"])
    path = Path(tmp_path / "dyn90.plan")
    engine.save(str(path))
    loaded = trtjit.load(str(path))
    b = loaded.binaries["sm_90"][0]
    from trtjit import dynamic, xc_worker
    assert xc_worker.BATCH_ARG == dynamic.ARG  # the worker imports nothing from trtjit: one name, checked here
    assert b.params[-1] == ["nb", "i32"] and all(t.startswith("*") for _, t in b.params[:-1])
    assert ".param .u32" in b.ptx
    monkeypatch.setattr(cuda_launcher, "_device_context", lambda ordinal: contextlib.nullcontext())
    monkeypatch.setattr(cuda_launcher, "_current_device", lambda: 0)
    monkeypatch.setattr(cuda_launcher, "_current_stream", lambda device: 0)
    drv = _Driver([t for _, t in b.params] + ["ptr", "ptr"])
    kern = cuda_launcher.CubinKernel(b, torch.device("cpu"), drv)
    bufs = [torch.empty(64, dtype=torch.float32) for _ in b.params[:-1]]
    k = loaded.kernels[0]
    for nb in (1, 37, 64):
        kern[grid_at(k.grid, nb)](*bufs, nb, **k.constexprs)
        grid, vals = drv.launches[-1]
        assert vals[:-2] == [t.data_ptr() for t in bufs] + [nb]
        assert grid[0] == math.ceil(nb / k.constexprs["BLOCK_M"])


# ---------------------------------------------------------------------------------------------- ONNX
def test_onnx_batch_range_matches_onnxruntime(tmp_path, gen):
    """An ONNX file with a named batch dim, imported at two batches and merged, serves the range."""
    import warnings

    import numpy as np
    import onnxruntime as ort

    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=gen)))
    model = _CNN().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 3, 8, 8),), str(path), dynamo=False, input_names=["img"],
                          output_names=["logits"], dynamic_axes={"img": {0: "batch"}, "logits": {0: "batch"}})
    engine = trtjit.compile(str(path), None, shapes={"img": ((1, 3, 8, 8), (2, 3, 8, 8), (6, 3, 8, 8))}, verify=True)
    assert engine.batch_range == BatchRange(1, 2, 6)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 4, 6):
        x = torch.randn(b, 3, 8, 8, generator=gen)
        assert_close_rel(engine(x), torch.from_numpy(sess.run(None, {"img": x.numpy()})[0]))
    with pytest.raises(InputError, match=r"outside the engine's range 1\.\.6 \(opt 2\)"):
        engine(torch.randn(7, 3, 8, 8))
    assert np.isfinite(engine(torch.randn(3, 3, 8, 8)).numpy()).all()


def test_onnx_batch_dependent_graphs_are_refused():
    from onnx import TensorProto, helper

    def vi(n, s):
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, s)

    def model(nodes, inits=()):
        g = helper.make_graph(nodes, "g", [vi("x", ["batch", 4])], [vi("y", ["b", 4])], list(inits))
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    rng = {"x": ((1, 4), (2, 4), (8, 4))}
    pad = model([helper.make_node("Pad", ["x", "pads"], ["y"])],
                [helper.make_tensor("pads", TensorProto.INT64, [4], [1, 0, 0, 0])])
    with pytest.raises(GuardError, match="node 'y' \\(pad\\): a size is neither fixed nor proportional"):
        trtjit.compile(pad, None, shapes=rng)
    const = model([helper.make_node("Shape", ["x"], ["s"]),
                   helper.make_node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT,
                                                                                               [1], [2.0])),
                   helper.make_node("Mul", ["x", "c"], ["y"])])
    with pytest.raises(GuardError, match="a constant computed from the batch size"):
        trtjit.compile(const, None, shapes=rng)


# ---------------------------------------------------------------------------------------------- serving
def test_serving_a_dynamic_batch_engine(tmp_path, gen):
    """A batched model with one dynamic-batch engine runs every batch in range unpadded."""
    import json

    httpclient = pytest.importorskip("tritonclient.http")
    pytest.importorskip("aiohttp")
    pytest.importorskip("prometheus_client")
    from trtjit.serving.server import ServerThread

    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    engine = trtjit.compile(model, (torch.randn(4, 16, generator=gen),), shapes={0: ((1, 16), (4, 16), (6, 16))})
    (tmp_path / "dyn" / "1").mkdir(parents=True)
    engine.save(str(tmp_path / "dyn" / "1" / "model.plan"))
    (tmp_path / "dyn" / "config.json").write_text(json.dumps({"max_batch_size": 6}))
    with ServerThread(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            for b in (1, 5, 6):
                x = torch.randn(b, 16, generator=gen)
                inp = httpclient.InferInput("input", [b, 16], "FP32")
                inp.set_data_from_numpy(x.numpy())
                out = client.infer("dyn", [inp]).as_numpy("output_0")
                assert_close_rel(torch.from_numpy(out.copy()), model.double()(x.double()).float())
            meta = client.get_model_metadata("dyn")
            assert meta["inputs"][0]["shape"] == [-1, 16]
        finally:
            client.close()


# ---------------------------------------------------------------------------------------------- autotune
def test_autotune_tunes_a_dynamic_graph_for_opt(tmp_path, gen):
    """The autotune pass times dynamic-batch kernels (at opt: trtjit.tuning.gpu_timer) and its cache key
    names the opt batch; the tuned engine still serves the whole range."""
    from trtjit.builder import lower
    from trtjit.engine import Engine
    from trtjit.options import BuildOptions
    from trtjit.passmanager import PassContext, load_pass, run_pass

    model = nn.Sequential(nn.Linear(24, 40), nn.GELU(), nn.Linear(40, 16)).eval()
    timed = []

    def timer(k):  # a fake GPU on which larger tiles are faster
        timed.append(k.batch_arg)
        return 1e3 / (k.constexprs["BLOCK_M"] * k.constexprs["BLOCK_N"]) + k.num_stages / 1e6

    def tune(opt):
        shapes = {0: ((1, 24), (opt, 24), (256, 24))}
        engine = trtjit.compile(model, (torch.randn(4, 24, generator=gen),), shapes=shapes)
        opts = BuildOptions(opt_level=3, tuning_cache=str(tmp_path / "cache.json"), shapes=shapes)
        ctx = PassContext(opts, timer=timer, tuning_arch="sm_90")
        return engine, run_pass(load_pass("autotune"), engine.graph.copy(), ctx), opts

    engine, graph, opts = tune(128)
    assert timed and all(timed)
    assert {t["source"] for t in graph.meta["tiles"].values()} == {"tuned"}
    tuned = Engine(graph, lower(graph, opts), opts)
    assert [k.constexprs for k in tuned.kernels] != [k.constexprs for k in engine.kernels]
    ref = copy.deepcopy(model).double()
    for b in (1, 37, 256):
        x = torch.randn(b, 24, generator=gen)
        assert_close_rel(tuned(x), ref(x.double()).float())
    assert {t["source"] for t in tune(128)[1].meta["tiles"].values()} == {"cache"}  # same opt: reused
    assert {t["source"] for t in tune(16)[1].meta["tiles"].values()} == {"tuned"}  # another opt: tuned anew
