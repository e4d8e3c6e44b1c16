"""Plugins (trtjit.plugins): the IPluginExt lifecycle, format selection, workspace, engine files, frontends."""

from __future__ import annotations

import gc
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest
import torch
import triton
import triton.language as tl
from conftest import assert_close_rel
from onnx import TensorProto, helper, numpy_helper

import trtjit
from trtjit import plugins
from trtjit.ir import Graph, TensorSpec, Value
from trtjit.plugins import FP16_NHWC, FP32_NCHW, NHWC, Plugin, PluginFormat, add_plugin_node

ex = pytest.importorskip("trtjit.plugins_examples")


@triton.jit
def _scale_kernel(x_ptr, y_ptr, n, scale, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m).to(tl.float32)
    tl.store(y_ptr + offs, (x * scale).to(y_ptr.dtype.element_ty), mask=m)


class Recorder(Plugin):
    """y = x * scale, recording every lifecycle call (per instance) and the workspace it was handed."""

    name = "TestRecorder"
    version = "1"
    namespace = "trtjit.test"
    WORKSPACE = 123
    events: ClassVar[list[tuple[int, str]]] = []
    workspaces: ClassVar[list[tuple[int, torch.dtype]]] = []
    formats: ClassVar[list[PluginFormat]] = [FP32_NCHW]

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__(scale=float(scale))
        self.scale = float(scale)

    def _log(self, what: str) -> None:
        type(self).events.append((id(self), what))

    def output_specs(self, inputs: list[TensorSpec]) -> list[TensorSpec]:
        return [inputs[0]]

    def supports_format(self, fmt: PluginFormat) -> bool:
        return fmt in type(self).formats

    def configure(self, inputs: list[TensorSpec], outputs: list[TensorSpec], fmt: PluginFormat,
                  max_batch: int) -> None:
        self._log("configure")
        self.fmt = fmt

    def workspace_size(self, max_batch: int) -> int:
        return self.WORKSPACE

    def initialize(self) -> None:
        self._log("initialize")

    def enqueue(self, inputs: list[torch.Tensor], outputs: list[torch.Tensor], workspace: torch.Tensor,
                stream: Any) -> None:
        self._log("enqueue")
        type(self).workspaces.append((workspace.numel(), workspace.dtype))
        x, (y,) = inputs[0], outputs
        assert x.is_contiguous() and y.is_contiguous()
        _scale_kernel[(triton.cdiv(x.numel(), 256),)](x, y, x.numel(), self.scale, BLOCK=256)

    def terminate(self) -> None:
        self._log("terminate")


@pytest.fixture
def recorder():
    plugins.register(Recorder, replace=True)
    Recorder.events.clear()
    Recorder.workspaces.clear()
    Recorder.formats = [FP32_NCHW]
    yield Recorder
    plugins.unregister(Recorder.name)


def _graph(shape=(2, 3, 4, 5), scale=2.0) -> Graph:
    g = Graph()
    x = g.add_input("x", TensorSpec(shape, torch.float32))
    r = Value(g.add("relu", [x]).name)
    (y,) = add_plugin_node(g, Recorder, [r], {"scale": scale}, name="rec")
    g.outputs = [Value(g.add("add", [y, x]).name)]
    return g


def _expected(x: torch.Tensor, scale=2.0) -> torch.Tensor:
    return torch.relu(x) * scale + x


def _engine_events() -> list[str]:
    """Lifecycle calls of the instance(s) that enqueued (the engine's), in order."""
    ids = {i for i, e in Recorder.events if e == "enqueue"}
    return [e for i, e in Recorder.events if i in ids]


# ---------------------------------------------------------------------------------------- lifecycle
def test_lifecycle_order_and_terminate_on_close(recorder, gen):
    engine = trtjit.build(_graph(), trtjit.BuildOptions(verify=True))
    assert "enqueue" not in [e for _, e in Recorder.events]  # building configures, never runs
    x = torch.randn(2, 3, 4, 5, generator=gen)
    for _ in range(3):
        assert_close_rel(engine(x), _expected(x))
    assert _engine_events() == ["configure", "initialize", "enqueue", "enqueue", "enqueue"]
    engine.close()
    assert _engine_events() == ["configure", "initialize", "enqueue", "enqueue", "enqueue", "terminate"]
    engine.close()  # idempotent
    assert _engine_events().count("terminate") == 1


def test_terminate_when_engine_is_released(recorder, gen):
    engine = trtjit.build(_graph())
    engine(torch.randn(2, 3, 4, 5, generator=gen))
    del engine
    gc.collect()
    assert _engine_events()[-1] == "terminate"


def test_engine_as_context_manager(recorder, gen):
    x = torch.randn(2, 3, 4, 5, generator=gen)
    with trtjit.build(_graph()) as engine:
        engine(x)
        assert "terminate" not in _engine_events()
    assert _engine_events()[-1] == "terminate"


def test_workspace_has_declared_size(recorder, gen):
    engine = trtjit.build(_graph())
    engine(torch.randn(2, 3, 4, 5, generator=gen))
    assert Recorder.workspaces == [(Recorder.WORKSPACE, torch.uint8)]
    node = engine.graph.node("rec")
    assert node.attrs["workspace"] == Recorder.WORKSPACE and node.attrs["max_batch"] == 2


def test_reference_interpreter_runs_plugins(recorder, gen):
    g = _graph()
    x = torch.randn(2, 3, 4, 5, generator=gen)
    (out,) = trtjit.run_graph(g, [x])
    assert_close_rel(out, _expected(x))


def test_summary_lists_plugin_step(recorder):
    engine = trtjit.build(_graph())
    assert any(k.template == "plugin" and k.node == "rec" for k in engine.kernels)
    assert "plugin" in engine.summary()
    assert any(r.name == "plugin_formats" and r.events for r in engine.build_log)


# ------------------------------------------------------------------------------------------ formats
def test_plugin_rejecting_every_format_fails_the_build(recorder):
    Recorder.formats = []
    with pytest.raises(trtjit.BuildError, match=r"plugin node 'rec' \(TestRecorder version 1\) accepts none of the "
                                                r"formats the builder offered: fp32 NCHW, fp16 NCHW, fp16 NHWC"):
        trtjit.build(_graph())


def test_builder_picks_the_supported_format_and_reformats(recorder, gen):
    Recorder.formats = [FP16_NHWC]
    engine = trtjit.build(_graph(), trtjit.BuildOptions(verify=True))
    node = engine.graph.node("rec")
    assert PluginFormat.from_json(node.attrs["format"]) == FP16_NHWC
    assert node.outputs[0] == TensorSpec((2, 4, 5, 3), torch.float16)  # physical NHWC, fp16
    x = torch.randn(2, 3, 4, 5, generator=gen)
    assert_close_rel(engine(x), _expected(x), tol=1e-2)


def test_builder_prefers_fp32_nchw_then_fp16(recorder):
    Recorder.formats = [plugins.FP16_NCHW, FP32_NCHW]
    engine = trtjit.build(_graph())
    assert PluginFormat.from_json(engine.graph.node("rec").attrs["format"]) == FP32_NCHW
    offered = plugins.offered_formats([TensorSpec((1, 2, 3, 4), torch.int8), TensorSpec((1, 2, 3, 4), torch.float32)])
    assert offered == [plugins.INT8_NCHW, FP32_NCHW, plugins.FP16_NCHW, FP16_NHWC]
    assert plugins.offered_formats([TensorSpec((2, 3), torch.float16)]) == [plugins.FP16_NCHW, FP32_NCHW]


# ------------------------------------------------------------------------------------- engine files
def test_save_load_recreates_plugin_through_registry(recorder, gen, tmp_path):
    engine = trtjit.build(_graph(scale=3.0))
    path = engine.save(str(tmp_path / "plugin.plan"))
    engine.close()
    Recorder.events.clear()
    loaded = trtjit.load(path)
    x = torch.randn(2, 3, 4, 5, generator=gen)
    assert_close_rel(loaded(x), _expected(x, 3.0))
    assert _engine_events() == ["configure", "initialize", "enqueue"]
    loaded.close()
    assert _engine_events()[-1] == "terminate"


def test_load_without_registered_plugin_fails_clearly(recorder, tmp_path):
    path = trtjit.build(_graph()).save(str(tmp_path / "plugin.plan"))
    plugins.unregister("TestRecorder")
    with pytest.raises(trtjit.EngineError, match=r"plugin 'TestRecorder' version '1' is not registered"):
        trtjit.load(path)


def test_building_with_unregistered_plugin_fails(recorder):
    g = _graph()
    plugins.unregister("TestRecorder")
    with pytest.raises(trtjit.TrtjitError, match="not registered"):
        trtjit.build(g)


# ----------------------------------------------------------------------------------------- registry
def test_registry_keys_by_name_and_version(recorder):
    class V2(Recorder):
        version = "2"

    plugins.register(V2)
    try:
        assert plugins.REGISTRY.versions("TestRecorder") == ["1", "2"]
        assert plugins.REGISTRY.get("TestRecorder") is V2
        assert plugins.REGISTRY.get("TestRecorder", "1") is Recorder
        assert plugins.REGISTRY.find_for_onnx("trtjit.test", "TestRecorder", 1) is Recorder
        assert plugins.REGISTRY.find_for_onnx("other.domain", "TestRecorder") is None

        class Clash(Recorder):
            pass

        with pytest.raises(trtjit.BuildError, match="already registered"):
            plugins.register(Clash)
        with pytest.raises(plugins.PluginNotRegisteredError, match=r"version '9' is not registered \(registered "
                                                                   r"versions: \['1', '2'\]\)"):
            plugins.REGISTRY.get("TestRecorder", "9")
    finally:
        plugins.unregister("TestRecorder", "2")


def test_state_round_trips_through_serialize():
    p = ex.GroupNormSiLUPlugin(num_groups=3, epsilon=1e-3)
    q = ex.GroupNormSiLUPlugin.deserialize(p.serialize())
    assert (q.num_groups, q.eps) == (3, 1e-3)


# ------------------------------------------------------------------------------ frontends (example)
def _onnx_gn_model(shape, groups, w, b) -> onnx.ModelProto:
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), ex.onnx_node(["s", "w", "b"], ["y"], num_groups=groups)]
    g = helper.make_graph(nodes, "gn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
                          [numpy_helper.from_array(w.numpy(), "w"), numpy_helper.from_array(b.numpy(), "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ex.DOMAIN, 1)])


def test_onnx_custom_domain_node_runs_the_plugin(gen):
    x = torch.randn(2, 6, 5, 4, generator=gen)
    w, b = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    engine = trtjit.compile(_onnx_gn_model(x.shape, 3, w, b), [x])
    assert engine.graph.op_counts().get("plugin") == 1
    assert_close_rel(engine(x), ex.reference(torch.sigmoid(x).double(), w.double(), b.double(), 3).float())


def test_onnx_unknown_custom_op_is_reported():
    node = helper.make_node("NoSuchPlugin", ["x"], ["y"], domain="my.domain", name="mystery")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)])
    with pytest.raises(trtjit.UnsupportedOpError, match=r"my\.domain::NoSuchPlugin: at mystery \(.*no plugin is "
                                                       r"registered"):
        trtjit.compile(m, [(2,)])


class _TorchModel(torch.nn.Module):
    def __init__(self, ch: int, gen: torch.Generator) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(ch, ch, 3, padding=1)
        self.w = torch.nn.Parameter(torch.randn(ch, generator=gen))
        self.b = torch.nn.Parameter(torch.randn(ch, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ex.group_norm_silu(self.conv(x), self.w, self.b, 2, 1e-5) * 0.5


def test_torch_custom_op_maps_to_plugin(gen):
    model = _TorchModel(4, gen).eval()
    x = torch.randn(2, 4, 6, 6, generator=gen)
    engine = trtjit.compile(model, (x,))
    assert engine.graph.op_counts().get("plugin") == 1
    with torch.no_grad():
        assert_close_rel(engine(x), model.double()(x.double()).float())


def test_example_plugin_fp16_nhwc_format(gen):
    class NHWCOnly(ex.GroupNormSiLUPlugin):
        name = "TestGroupNormSiLUNHWC"

        def supports_format(self, fmt: PluginFormat) -> bool:
            return fmt.layout == NHWC

    plugins.register(NHWCOnly, replace=True)
    try:
        g = Graph()
        xs = [g.add_input(n, TensorSpec(s, torch.float32)) for n, s in (("x", (2, 4, 3, 5)), ("w", (4,)), ("b", (4,)))]
        g.outputs = add_plugin_node(g, NHWCOnly, xs, {"num_groups": 2})
        engine = trtjit.build(g, trtjit.BuildOptions(verify=True))
        assert PluginFormat.from_json(engine.graph.node("plugin_TestGroupNormSiLUNHWC").attrs["format"]) == FP16_NHWC
        x, w, b = (torch.randn(s, generator=gen) for s in ((2, 4, 3, 5), (4,), (4,)))
        assert_close_rel(engine(x, w, b), ex.reference(x, w, b, 2), tol=1e-2)
    finally:
        plugins.unregister("TestGroupNormSiLUNHWC")


def test_example_plugin_engine_file_round_trip(gen, tmp_path):
    x = torch.randn(1, 4, 3, 3, generator=gen)
    w, b = torch.randn(4, generator=gen), torch.randn(4, generator=gen)
    engine = trtjit.compile(_onnx_gn_model(x.shape, 2, w, b), [x])
    loaded = trtjit.load(engine.save(str(tmp_path / "gn.plan")))
    assert torch.equal(loaded(x), engine(x))
    assert np.isfinite(loaded(x).numpy()).all()
