"""The IR: construction helpers, verify(), printing, subgraph extraction, JSON round trip."""

from __future__ import annotations

import json

import pytest
import torch

import trtjit
import trtjit.fusion
from trtjit.ir import Graph, Node, TensorSpec, Value
from trtjit.passmanager import Pass, PassContext, run_pass


def _graph(gen) -> Graph:
    g = Graph()
    x = g.add_input("x", TensorSpec((2, 3), torch.float32))
    w = g.add_constant("fc.weight", torch.randn(3, 4, generator=gen))
    mm = g.add("matmul", [x, w], name="fc")
    r = g.add("relu", [Value(mm.name)], name="act")
    s = g.add("add", [Value(r.name), Value(mm.name)], name="res")
    g.outputs = [Value(s.name), Value(r.name)]
    return g


def test_helpers(gen):
    g = _graph(gen)
    assert g.topo_order() == ["x", "fc.weight", "fc", "act", "res"]
    assert g.producers("res") == ["act", "fc"]
    assert g.consumers("fc") == ["act", "res"]
    assert g.users(Value("fc")) == [("act", 0), ("res", 1)]
    assert g.inputs_of("res") == [Value("act"), Value("fc")]
    assert g.spec(Value("res")) == TensorSpec((2, 4), torch.float32)
    g.verify()
    neg = g.add("neg", [Value("fc")], name="neg")
    g.replace_all_uses(Value("act"), Value(neg.name))
    assert g.inputs_of("res") == [Value("neg"), Value("fc")] and g.outputs[1] == Value("neg")
    g.remove_node("act")
    g.verify()


def test_multi_output_and_several_consumers(gen):
    g = Graph()
    x = g.add_input("x", TensorSpec((4, 4), torch.float32))
    a = g.add("exp", [x], name="a")
    b = g.add("neg", [x], name="b")
    sub = g.subgraph(["a", "b"])
    sub.verify()
    assert sub.inputs == ["x"] and sub.outputs == []  # nothing used outside yet
    g.outputs = [Value(a.name), Value(b.name)]
    fused = trtjit.fusion.fuse_group(g, ["a", "b"], "fused_pointwise", "b", "k", [])
    assert len(fused.outputs) == 2 and g.outputs == [Value("b", 0), Value("b", 1)]
    g.verify()
    xin = torch.randn(4, 4, generator=gen)
    e, n = trtjit.run_graph(g, [xin])
    assert torch.equal(e, xin.exp()) and torch.equal(n, -xin)


def test_subgraph_extracts_inputs_and_outputs(gen):
    g = _graph(gen)
    sub = g.subgraph(["act", "res"])
    assert sub.inputs == ["fc"]
    assert sub.outputs == [Value("act"), Value("res")]
    sub.verify()


def test_verify_names_the_problem(gen):
    g = _graph(gen)
    g.node("act").outputs = [TensorSpec((2, 5), torch.float32)]
    with pytest.raises(trtjit.GraphError, match="node 'act' \\(relu\\) records outputs"):
        g.verify()
    g = _graph(gen)
    g.nx.remove_edge("act", "res", key=0)
    with pytest.raises(trtjit.GraphError, match="'res' \\(add\\) has dangling or duplicate inputs"):
        g.verify()
    g = _graph(gen)
    g.nx.remove_edge("fc", "res", key=1)
    with pytest.raises(trtjit.GraphError, match="'res' \\(add\\) has 1 inputs, op expects 2"):
        g.verify()
    g = _graph(gen)
    g.nx.add_edge("res", "fc", key=2, out=0, **{"in": 2})
    with pytest.raises(trtjit.GraphError, match="cycle"):
        g.verify()
    g = _graph(gen)
    g.outputs.append(Value("fc", 3))
    with pytest.raises(trtjit.GraphError, match="graph output %fc.3 does not exist"):
        g.verify()


def test_verify_after_pass_names_pass_and_node(gen):
    def bad(graph: Graph, ctx: PassContext) -> Graph:
        graph.node("res").op = "mul_nonexistent"
        return graph

    with pytest.raises(trtjit.GraphError, match="node 'res'.*after pass 'bad_pass'"):
        run_pass(Pass("bad_pass", bad, ""), _graph(gen), PassContext(trtjit.BuildOptions(verify=True)))


def test_print_one_line_per_node(gen):
    text = str(_graph(gen))
    lines = text.splitlines()
    assert len(lines) == 6
    assert lines[2] == "%fc: float32[2,4] = matmul(%x, %fc.weight)"
    assert lines[-1] == "return %res, %act"


def test_json_round_trip_keeps_weights_apart(gen):
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
    engine = trtjit.compile(m, (torch.randn(2, 4, generator=gen),))
    g = engine.graph
    doc = json.loads(json.dumps(g.to_json()))
    assert "value" not in json.dumps(doc)
    weights = g.weights()
    assert all(isinstance(t, torch.Tensor) for t in weights.values())
    g2 = Graph.from_json(doc, weights)
    g2.verify()
    assert str(g2) == str(g)
    x = torch.randn(2, 4, generator=gen)
    assert torch.equal(trtjit.run_graph(g2, [x])[0], trtjit.run_graph(g, [x])[0])
    with pytest.raises(trtjit.GraphError, match="weight .* is missing"):
        Graph.from_json(doc, {})
    with pytest.raises(trtjit.GraphError, match="not a serialized trtjit graph"):
        Graph.from_json({"nodes": []}, {})


def test_interpreter_captures_intermediates(gen):
    g = _graph(gen)
    x = torch.randn(2, 3, generator=gen)
    outs, env = trtjit.run_graph(g, [x], capture=True)
    assert torch.equal(env[Value("act")], torch.relu(env[Value("fc")]))
    assert torch.equal(outs[0], env[Value("res")])
    with pytest.raises(trtjit.InputError, match="input 'x': expected float32\\[2,3\\]"):
        trtjit.run_graph(g, [torch.randn(3, 3)])


def test_duplicate_and_unknown():
    g = Graph()
    g.add_input("x", TensorSpec((2,), torch.float32))
    with pytest.raises(trtjit.GraphError, match="duplicate node name"):
        g.add_node(Node("x", "input"))
    with pytest.raises(trtjit.GraphError, match="op 'frobnicate' is not in the op table"):
        g.add("frobnicate", [Value("x")])
    with pytest.raises(trtjit.GraphError, match="needs attribute 'dims'"):
        g.add("permute", [Value("x")])


def test_shape_inference_memo_keys_on_specs_and_typed_attrs():
    """OpDef memoizes meta-tensor inference per (input specs, attrs): repeated layers infer once, and no two
    different calls share an entry (attribute values are keyed with their type; graph bodies are not keyed)."""
    from trtjit.ops import _frozen, get_op
    op = get_op("sum")
    x = TensorSpec((2, 3, 5), torch.float16)
    a = op.infer([x], {"dims": [1], "keepdim": True})
    n = len(op._memo)
    assert op.infer([x], {"dims": [1], "keepdim": True}) == a == [TensorSpec((2, 1, 5), torch.float16)]
    assert len(op._memo) == n  # the second call was a hit
    assert op.infer([x], {"dims": [1], "keepdim": False}) == [TensorSpec((2, 5), torch.float16)]
    assert op.infer([x], {"dims": [2], "keepdim": True}) == [TensorSpec((2, 3, 1), torch.float16)]
    assert op.infer([TensorSpec((2, 3, 5), torch.float32)], {"dims": [1], "keepdim": True}) == \
        [TensorSpec((2, 1, 5), torch.float32)]
    assert len({_frozen(v) for v in (1, 1.0, True)}) == 3
    assert _frozen({"body": Graph()}) is None and _frozen([1, torch.zeros(1)]) is None
    assert _frozen({"a": [1, (2, 3)], "b": None}) == _frozen({"b": None, "a": [1, (2, 3)]})
