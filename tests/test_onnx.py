"""ONNX frontend (trtjit.frontend_onnx): models exported from torch and built with onnx.helper, compared with
onnxruntime (max|a-b|/max|b| < 1e-4 in fp32); external data, dynamic dims, shape-subgraph folding, If with a
build-time condition, shape-tensor inputs and malformed files."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from conftest import assert_close_rel
from onnx import TensorProto, helper, numpy_helper

import trtjit
from trtjit.frontend_onnx import import_onnx
from trtjit.onnx_backend import Backend

ort = pytest.importorskip("onnxruntime")


def ort_run(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    src = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def check(engine: trtjit.Engine, model: onnx.ModelProto | str, feeds: dict[str, np.ndarray], tol: float = 1e-4):
    outs = engine.run(*[torch.from_numpy(v) for v in feeds.values()])
    refs = ort_run(model, feeds)
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert_close_rel(o, torch.from_numpy(r), tol)


def export(model: torch.nn.Module, args: tuple, path, **kw) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), args, str(path), dynamo=False, **kw)
    return str(path)


def make_model(nodes, inputs, outputs, inits=(), opset=17, **kw) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], **kw)


def vi(name, shape, dt=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dt, shape)


# ------------------------------------------------------------------------------ exported from torch
class CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(torch.relu(self.bn(self.conv(x))))
        return torch.softmax(self.fc(torch.flatten(y, 1)), dim=-1)


def test_torch_exported_cnn_matches_onnxruntime(tmp_path, gen):
    model = CNN()
    model.bn.running_mean.normal_(generator=gen)
    model.bn.running_var.uniform_(0.5, 2.0, generator=gen)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    path = export(model, (x,), tmp_path / "cnn.onnx", input_names=["x"], output_names=["probs"], opset_version=17)
    engine = trtjit.compile(path, [x])
    assert engine.output_names == ["probs"]
    check(engine, path, {"x": x.numpy()})


class EncoderLayer(torch.nn.Module):
    """A pre-norm transformer encoder block written out (the legacy exporter cannot export nn.Transformer's
    fused fast path)."""

    def __init__(self, d: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.ff = torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.GELU(), torch.nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (t.reshape(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, s, d))
        return x + self.ff(self.ln2(x))


def test_torch_exported_transformer_layer(tmp_path, gen):
    torch.manual_seed(0)
    layer = EncoderLayer()
    x = torch.randn(2, 5, 16, generator=gen)
    path = export(layer, (x,), tmp_path / "enc.onnx", input_names=["x"], opset_version=17)
    engine = trtjit.compile(path, {"x": x})
    check(engine, path, {"x": x.numpy()})


def test_dynamic_batch_bound_by_shape(tmp_path, gen):
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.GELU(), torch.nn.Linear(4, 3))
    x = torch.randn(2, 6, generator=gen)
    path = export(model, (x,), tmp_path / "mlp.onnx", input_names=["x"], output_names=["y"],
                  dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)
    assert onnx.load(path).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (1, 5):
        engine = trtjit.compile(path, {"x": (batch, 6)})
        assert engine.input_specs[0].shape == (batch, 6)
        xb = torch.randn(batch, 6, generator=gen)
        check(engine, path, {"x": xb.numpy()})
    with pytest.raises(trtjit.InputError, match=r"graph input 'x' has dynamic dimension\(s\) \['batch'\]"):
        trtjit.compile(path, None)
    with pytest.raises(trtjit.InputError, match="input 0 \\('x'\\): expected float32\\[5,6\\]"):
        engine(torch.randn(2, 6))


def test_named_dims_unify_across_inputs(gen):
    m = make_model([helper.make_node("Add", ["a", "b"], ["y"])], [vi("a", ["n", 3]), vi("b", ["n", 3])],
                   [vi("y", ["n", 3])])
    a, b = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    engine = trtjit.compile(m, [a, b])
    check(engine, m, {"a": a.numpy(), "b": b.numpy()})
    with pytest.raises(trtjit.InputError, match=r"dimension 0 \('n'\) is 5, but 'n' was bound to 4"):
        trtjit.compile(m, [(4, 3), (5, 3)])
    with pytest.raises(trtjit.InputError, match="dimension 1 is 3 in the model, got 2"):
        trtjit.compile(m, [(4, 2), (4, 2)])


# ---------------------------------------------------------------------------------- external data
def _matmul_model(gen) -> onnx.ModelProto:
    w = torch.randn(8, 6, generator=gen).numpy()
    b = torch.randn(6, generator=gen).numpy()
    return make_model([helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])],
                      [vi("x", [3, 8])], [vi("y", [3, 6])],
                      [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])


def test_external_data_file(tmp_path, gen):
    path = tmp_path / "model.onnx"
    onnx.save_model(_matmul_model(gen), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    assert (tmp_path / "model.onnx.data").is_file()
    assert path.stat().st_size < 500
    x = torch.randn(3, 8, generator=gen)
    engine = trtjit.compile(str(path), [x])
    check(engine, str(path), {"x": x.numpy()})


def test_external_data_errors(tmp_path, gen):
    path = tmp_path / "model.onnx"
    onnx.save_model(_matmul_model(gen), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    data = tmp_path / "model.onnx.data"
    blob = data.read_bytes()
    data.write_bytes(blob[:10])
    with pytest.raises(trtjit.InputError, match=r"initializer 'w'.*model\.onnx\.data.*is truncated"):
        trtjit.compile(str(path), [(3, 8)])
    data.unlink()
    with pytest.raises(trtjit.InputError, match=r"initializer 'w': external data file .*model\.onnx\.data.* does not "
                                                r"exist"):
        trtjit.compile(str(path), [(3, 8)])
    m = onnx.load(str(path), load_external_data=False)
    with pytest.raises(trtjit.InputError, match="pass the model as a file path"):
        trtjit.compile(m, [(3, 8)])
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../escape.bin"
    with pytest.raises(trtjit.InputError, match="must be a relative path inside the model's directory"):
        import_onnx(m, [(3, 8)], base_dir=tmp_path)


# --------------------------------------------------------------------------- build-time evaluation
def test_shape_subgraph_folds_at_build_time(gen):
    """y = reshape(x, [Shape(x)[0], -1]) * ConstantOfShape(...) + Range(...): only the arithmetic remains."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Constant", [], ["m1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Shape", ["r"], ["rs"]),
        helper.make_node("ConstantOfShape", ["rs"], ["ones"], value=numpy_helper.from_array(np.array([2.0], np.float32))),
        helper.make_node("Mul", ["r", "ones"], ["m"]),
        helper.make_node("Gather", ["rs", "one"], ["cols"], axis=0),
        helper.make_node("Range", ["start", "cols", "step"], ["rng"]),
        helper.make_node("Cast", ["rng"], ["rngf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["m", "rngf"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "ax0"), numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array(0, np.int64), "start"), numpy_helper.from_array(np.array(1, np.int64), "step")]
    m = make_model(nodes, [vi("x", [2, 3, 4])], [vi("y", [2, 12])], inits)
    onnx.checker.check_model(m)
    x = torch.randn(2, 3, 4, generator=gen)
    engine = trtjit.compile(m, [x])
    ops = engine.graph.op_counts()
    assert set(ops) <= {"input", "constant", "fused_pointwise", "reshape"}, ops
    assert len(engine.kernels) == 1
    check(engine, m, {"x": x.numpy()})


def _if_model(cond_from_shape: bool) -> onnx.ModelProto:
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t", [2, 3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", [2, 3])])
    if cond_from_shape:  # Size(x) > 5: known at build time
        pre = [helper.make_node("Size", ["x"], ["sz"]), helper.make_node("Greater", ["sz", "five"], ["c"])]
        inits = [numpy_helper.from_array(np.array(5, np.int64), "five")]
    else:
        pre = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(False)))]
        inits = []
    nodes = pre + [helper.make_node("If", ["c"], ["o"], then_branch=then_g, else_branch=else_g),
                   helper.make_node("Mul", ["o", "x"], ["y"])]
    return make_model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], inits)


@pytest.mark.parametrize("from_shape", [True, False])
def test_if_with_build_time_condition(from_shape, gen):
    m = _if_model(from_shape)
    x = torch.randn(2, 3, generator=gen)
    engine = trtjit.compile(m, [x])
    assert "If" not in str(engine.graph)
    check(engine, m, {"x": x.numpy()})


def test_if_with_runtime_condition_is_reported():
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t", [2])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", [2])])
    m = make_model([helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=0),
                    helper.make_node("Greater", ["mx", "zero"], ["c"]),
                    helper.make_node("If", ["c"], ["y"], name="branchy", then_branch=then_g, else_branch=else_g)],
                   [vi("x", [2])], [vi("y", [2])], [numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    with pytest.raises(trtjit.UnsupportedOpError, match=r"If: at branchy \(condition .* must be known at build time"):
        trtjit.compile(m, [(2,)])


def test_shape_tensor_input_is_bound_and_checked(gen):
    m = make_model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                   [vi("x", [2, 6]), vi("shape", [2], TensorProto.INT64)], [vi("y", [3, 4])])
    shape = torch.tensor([3, 4])
    engine = trtjit.compile(m, [torch.randn(2, 6), shape])
    assert engine.graph.meta["bound_inputs"]["shape"]["value"] == [3, 4]
    x = torch.randn(2, 6, generator=gen)
    check(engine, m, {"x": x.numpy(), "shape": shape.numpy()})
    with pytest.raises(trtjit.InputError, match=r"input 1 \('shape'\) is a shape tensor whose value was fixed when "
                                                r"the engine was built: expected \[3, 4\], got \[4, 3\]"):
        engine(x, torch.tensor([4, 3]))
    with pytest.raises(trtjit.UnsupportedOpError, match=r"pass an example tensor for it"):
        trtjit.compile(m, [(2, 6), (2,)])


# ------------------------------------------------------------------------------------- outputs, API
def test_outputs_keep_names_and_graph_order(gen):
    m = make_model([helper.make_node("Exp", ["x"], ["b_out"]), helper.make_node("Neg", ["x"], ["a_out"])],
                   [vi("x", [4])], [vi("b_out", [4]), vi("a_out", [4]), vi("x_again", [4])])
    m.graph.node.append(helper.make_node("Identity", ["x"], ["x_again"]))
    x = torch.randn(4, generator=gen)
    engine = trtjit.compile(m, [x])
    assert engine.output_names == ["b_out", "a_out", "x_again"]
    b, a, same = engine(x)
    assert_close_rel(b, torch.exp(x))
    assert_close_rel(a, -x)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()


def test_backend_prepare_run_and_run_node(gen):
    m = make_model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [vi("x", [3, 5])], [vi("y", [3, 5])])
    x = torch.randn(3, 5, generator=gen).numpy()
    (y,) = Backend.prepare(m, "CPU").run([x])
    assert_close_rel(torch.from_numpy(y), torch.from_numpy(ort_run(m, {"x": x})[0]))
    node = helper.make_node("Add", ["a", "b"], ["c"])
    (c,) = Backend.run_node(node, [x, x])
    np.testing.assert_allclose(c, 2 * x, rtol=1e-6)
    assert Backend.supports_device("CPU")


# ----------------------------------------------------------------------------------------- errors
def test_malformed_files(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf at all \xff\xff\xff")
    with pytest.raises(trtjit.InputError, match=r"garbage\.onnx: not a valid ONNX model"):
        trtjit.compile(str(bad), [(1,)])
    with pytest.raises(trtjit.InputError, match=r"missing\.onnx: no such ONNX model file"):
        trtjit.compile(str(tmp_path / "missing.onnx"), [(1,)])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(trtjit.InputError, match="not a valid ONNX model"):
        trtjit.compile(str(empty), [(1,)])
    dangling = make_model([helper.make_node("Relu", ["nowhere"], ["y"])], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(trtjit.InputError, match="invalid ONNX model"):
        trtjit.compile(dangling, [(2,)])
    with pytest.raises(trtjit.InputError, match="the model takes 1 input"):
        trtjit.compile(make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])]),
                       [(2,), (2,)])


def test_unsupported_ops_are_listed_at_once():
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Unique", ["r"], ["u"], name="dedup"),
             helper.make_node("NonZero", ["r"], ["nz"], name="where_nonzero"),
             helper.make_node("Unique", ["x"], ["u2"], name="dedup2")]
    m = make_model(nodes, [vi("x", [4])], [vi("u", ["a"]), vi("nz", [1, "b"]), vi("u2", ["c"])])
    with pytest.raises(trtjit.UnsupportedOpError) as ei:
        trtjit.compile(m, [(4,)])
    msg = str(ei.value)
    assert "2 unsupported operator(s)" in msg
    assert "Unique: at dedup, dedup2" in msg and "NonZero: at where_nonzero" in msg


def test_errors_name_node_and_op_type():
    m = make_model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="bad_reshape")],
                   [vi("x", [2, 3])], [vi("y", [4, 4])],
                   [numpy_helper.from_array(np.array([4, 4], np.int64), "shape")])
    with pytest.raises(trtjit.BuildError, match=r"node 'bad_reshape' \(Reshape\): cannot reshape \[2, 3\] to \[4, 4\]"):
        trtjit.compile(m, [(2, 3)])
    m = make_model([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="rs", mode="linear", antialias=0,
                                     coordinate_transformation_mode="magic")],
                   [vi("x", [1, 1, 2, 2])], [vi("y", [1, 1, 4, 4])],
                   [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    with pytest.raises((trtjit.InputError, trtjit.UnsupportedOpError)):
        trtjit.compile(m, [(1, 1, 2, 2)])


def test_errors_name_node_op_and_problem():
    """A malformed model, an unsupported op and bad attributes: each message names the node, its op type
    and what is wrong."""
    dangling = make_model([helper.make_node("Relu", ["nowhere"], ["y"], name="r1")], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(trtjit.InputError, match=r"input 'nowhere' of node: name: r1 OpType: Relu is not output"):
        trtjit.compile(dangling, [(2,)])
    nms = make_model([helper.make_node("NonMaxSuppression", ["b", "s"], ["y"], name="nms")],
                     [vi("b", [1, 2, 4]), vi("s", [1, 1, 2])], [vi("y", [1, 3], TensorProto.INT64)])
    with pytest.raises(trtjit.UnsupportedOpError, match=r"NonMaxSuppression: at nms"):
        trtjit.compile(nms, None)
    conv = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="cv", kernel_shape=[5, 5])],
                      [vi("x", [1, 1, 4, 4])], [vi("y", [1, 1, 2, 2])],
                      [numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")])
    with pytest.raises(trtjit.BuildError, match=r"node 'cv' \(Conv\): kernel_shape \[5, 5\] does not match the "
                                                r"weight's spatial shape \[3, 3\]"):
        trtjit.compile(conv, None)
    sm = make_model([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=5)], [vi("x", [2, 2])], [vi("y", [2, 2])])
    with pytest.raises(trtjit.BuildError, match=r"node 'sm' \(Softmax\): axis 5 is out of range for rank 2"):
        trtjit.compile(sm, None)
    rs = make_model([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="rs", mode="linear",
                                      coordinate_transformation_mode="magic")],
                    [vi("x", [1, 1, 2, 2])], [vi("y", [1, 1, 4, 4])],
                    [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    with pytest.raises(trtjit.UnsupportedOpError, match=r"Resize: at rs \(.*coordinate_transformation_mode: 'magic'"):
        trtjit.compile(rs, None)


def test_opset_range():
    """Opsets before 7 are upgraded with onnx's version converter; newer ones than onnx knows are refused."""
    for old in (1, 6):
        m = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])], opset=old)
        assert trtjit.compile(m, [(2,)])(torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])],
                   opset=onnx.defs.onnx_opset_version() + 1)
    with pytest.raises(trtjit.InputError, match="newer than this onnx package knows"):
        import_onnx(m, [(2,)], check=False)
    for opset in (7, 13, onnx.defs.onnx_opset_version()):
        m = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])], opset=opset)
        assert trtjit.compile(m, [(2,)])(torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]


# ------------------------------------------------------------------------------ recurrent layers
def _recurrent_model(op: str, direction: str, seq: int, batch: int, inp: int, hidden: int, gen, **attrs):
    """One LSTM/GRU node with weights, biases, sequence lengths and initial states as initializers."""
    nd = 2 if direction == "bidirectional" else 1
    gates = {"LSTM": 4, "GRU": 3}[op]
    w = torch.randn(nd, gates * hidden, inp, generator=gen).numpy() * 0.5
    r = torch.randn(nd, gates * hidden, hidden, generator=gen).numpy() * 0.5
    b = torch.randn(nd, 2 * gates * hidden, generator=gen).numpy() * 0.5
    h0 = torch.randn(nd, batch, hidden, generator=gen).numpy()
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in ((w, "W"), (r, "R"), (b, "B"), (h0, "h0"))]
    ins = ["x", "W", "R", "B", "", "h0"]
    outs = [vi("y", [seq, nd, batch, hidden]), vi("yh", [nd, batch, hidden])]
    if op == "LSTM":
        c0 = torch.randn(nd, batch, hidden, generator=gen).numpy()
        p = torch.randn(nd, 3 * hidden, generator=gen).numpy() * 0.3
        inits += [numpy_helper.from_array(c0.astype(np.float32), "c0"), numpy_helper.from_array(p.astype(np.float32), "P")]
        ins += ["c0", "P"]
        outs.append(vi("yc", [nd, batch, hidden]))
    node = helper.make_node(op, ins, [o.name for o in outs], hidden_size=hidden, direction=direction, **attrs)
    return make_model([node], [vi("x", [seq, batch, inp])], outs, inits, opset=14)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op,attrs", [("LSTM", {}), ("GRU", {"linear_before_reset": 0}),
                                      ("GRU", {"linear_before_reset": 1})], ids=["lstm", "gru", "gru_lbr"])
def test_lstm_gru_match_onnxruntime(op, attrs, direction, gen):
    """Sequence of 4 steps, batch 2, initial hidden (and cell) states, peepholes for the LSTM: every output
    (all hidden states, last hidden, last cell) against onnxruntime."""
    m = _recurrent_model(op, direction, 4, 2, 3, 5, gen, **attrs)
    x = torch.randn(4, 2, 3, generator=gen).numpy()
    check(trtjit.compile(m, [(4, 2, 3)]), m, {"x": x})


def test_broadcast_operands_in_gather_and_gemm_epilogue(gen):
    """A run-time Gather with one index and a batched MatMul whose epilogue operand varies only along the
    batch (both need a tile of pointers for a value the tile shares), against onnxruntime."""
    nodes = [helper.make_node("Gather", ["table", "i"], ["g"], axis=0),
             helper.make_node("MatMul", ["a", "b"], ["m"]),
             helper.make_node("Mul", ["m", "s"], ["y"])]
    m = make_model(nodes, [vi("table", [5, 3]), vi("i", [1, 1], TensorProto.INT64), vi("a", [2, 4, 1, 8]),
                           vi("b", [2, 4, 8, 8]), vi("s", [2, 4, 1, 1])],
                   [vi("g", [1, 1, 3]), vi("y", [2, 4, 1, 8])])
    feeds = {"table": torch.randn(5, 3, generator=gen).numpy(), "i": np.array([[3]], np.int64),
             "a": torch.randn(2, 4, 1, 8, generator=gen).numpy(), "b": torch.randn(2, 4, 8, 8, generator=gen).numpy(),
             "s": torch.randn(2, 4, 1, 1, generator=gen).numpy()}
    eng = trtjit.compile(m, {k: torch.from_numpy(v) for k, v in feeds.items()})
    check(eng, m, feeds)


def test_constant_pad_with_runtime_value(gen):
    """Pad whose constant value is a run-time scalar: the pad pieces and the input are one cat kernel in
    which the scalar is a broadcast load under each piece's mask."""
    m = make_model([helper.make_node("Pad", ["x", "pads", "v"], ["y"], mode="constant")],
                   [vi("x", [1, 3, 4, 5]), vi("v", [])], [vi("y", [1, 3, 7, 12])],
                   [numpy_helper.from_array(np.array([0, 0, 1, 3, 0, 0, 2, 4], np.int64), "pads")])
    feeds = {"x": torch.randn(1, 3, 4, 5, generator=gen).numpy(), "v": np.array(1.5, np.float32)}
    eng = trtjit.compile(m, {k: torch.from_numpy(v) for k, v in feeds.items()})
    check(eng, m, feeds)
