"""One before/expected test per pass in passes/: each builds a small graph by hand, runs that single pass
with verification on, checks the rewritten structure and the rules recorded in the pass log, and checks
the reference interpreter gives the same outputs before and after (random inputs). Negative cases check
that rewrites which would be wrong (or create cycles) do not happen, and say why in the log.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close_rel

import trtjit
from trtjit.ir import Graph, TensorSpec, Value
from trtjit.layout import compute_layouts, is_kernel_node
from trtjit.ops import get_op
from trtjit.passmanager import Pass, PassContext, PassRecord, load_pass, run_pass

F32 = torch.float32


# ------------------------------------------------------------------------------------------- helpers
def V(name: str, index: int = 0) -> Value:
    return Value(name, index)


def inp(g: Graph, name: str, *shape: int, dtype: torch.dtype = F32) -> Value:
    return g.add_input(name, TensorSpec(tuple(shape), dtype))


def op(g: Graph, kind: str, ins: list[Value], name: str, **attrs) -> Value:
    return Value(g.add(kind, ins, attrs, name=name).name)


def random_inputs(graph: Graph, gen: torch.Generator) -> list[torch.Tensor]:
    out = []
    for name in graph.inputs:
        spec = graph.node(name).spec
        if spec.dtype == torch.bool:
            out.append(torch.rand(spec.shape, generator=gen) < 0.5)
        else:
            out.append(torch.randn(spec.shape, generator=gen).to(spec.dtype))
    return out


def run_one(name: str, graph: Graph) -> tuple[Graph, PassRecord]:
    """Run the single pass ``name`` with verification; return the graph and its log record."""
    ctx = PassContext(trtjit.BuildOptions(verify=True))
    graph = run_pass(load_pass(name), graph, ctx)
    assert [r.name for r in ctx.log] == [name]
    graph.verify()
    return graph, ctx.log[0]


def check_pass(name: str, graph: Graph, gen: torch.Generator, tol: float = 1e-4) -> tuple[Graph, PassRecord]:
    """``run_one`` plus: the reference interpreter agrees before and after the pass."""
    graph.verify()
    xs = random_inputs(graph, gen)
    before = [t.clone() for t in trtjit.run_graph(graph, xs)]
    graph, rec = run_one(name, graph)
    after = trtjit.run_graph(graph, xs)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert_close_rel(a, b, tol)
    return graph, rec


def fired(rec: PassRecord, rule: str | None = None) -> list[str]:
    return [e["node"] for e in rec.events if e["fired"] and (rule is None or e["rule"] == rule)]


def skipped(rec: PassRecord, rule: str | None = None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in rec.events:
        if not e["fired"] and (rule is None or e["rule"] == rule):
            out.setdefault(e["node"], []).append(e["detail"])
    return out


def body_ops(graph: Graph, name: str) -> list[str]:
    return [n.op for n in graph.node(name).attrs["body"] if n.op not in ("input", "constant")]


def ops_of(graph: Graph) -> list[str]:
    return [n.op for n in graph]


def rule_name(module: str, attr: str) -> str:
    import importlib

    return getattr(importlib.import_module(f"trtjit.passes.{module}"), attr)


# -------------------------------------------------------------------------------- dead_code_elimination
def test_dead_code_elimination(gen):
    g = Graph()
    x = inp(g, "x", 4, 6)
    inp(g, "unused_input", 3)
    live = op(g, "exp", [x], "live")
    shared = op(g, "neg", [x], "shared")
    d1 = op(g, "sin", [x], "dead1")
    op(g, "cos", [d1], "dead2")
    op(g, "abs", [shared], "dead3")  # dead consumer of a live value
    g.add_constant("dead_w", torch.randn(5, generator=gen))
    out = op(g, "add", [live, shared], "out")
    g.outputs = [out]

    g, rec = check_pass("dead_code_elimination", g, gen)
    assert sorted(rec.removed) == ["dead1", "dead2", "dead3", "dead_w"]
    assert sorted(fired(rec, "unused => removed")) == sorted(rec.removed)
    assert g.inputs == ["x", "unused_input"], "graph inputs are part of the signature and stay"
    assert sorted(g.op_counts().items()) == [("add", 1), ("exp", 1), ("input", 2), ("neg", 1)]


# ---------------------------------------------------------------------------------------- remove_noops
def test_remove_noops(gen):
    COPY, IDENTITY, CHAIN = (rule_name("remove_noops", r) for r in ("COPY", "IDENTITY", "CHAIN"))
    g = Graph()
    x = inp(g, "x", 2, 3, 4)
    c = op(g, "copy", [x], "c")
    p1 = op(g, "permute", [c], "p1", dims=[1, 0, 2])
    p2 = op(g, "permute", [p1], "p2", dims=[2, 0, 1])  # composes to one permute [2, 1, 0] of x
    p3 = op(g, "permute", [x], "p3", dims=[0, 2, 1])
    p4 = op(g, "permute", [p3], "p4", dims=[0, 2, 1])  # composes to the identity
    r1 = op(g, "reshape", [x], "r1", shape=[6, 4])
    r2 = op(g, "reshape", [r1], "r2", shape=[24])  # one reshape of x
    e = op(g, "expand", [x], "e", shape=[2, 3, 4])
    s = op(g, "slice", [x], "s", dim=2, start=0)
    s2 = op(g, "slice", [x], "s2", dim=2, start=0, end=10)
    sq = op(g, "squeeze", [x], "sq", dims=[])
    keep_slice = op(g, "slice", [x], "keep_slice", dim=2, start=0, step=2)  # a real view: stays
    keep_perm = op(g, "permute", [x], "keep_perm", dims=[1, 0, 2])  # a real view: stays
    g.outputs = [op(g, "exp", [r2], "o1"), op(g, "add", [e, s], "o2"), op(g, "mul", [s2, sq], "o3"),
                 op(g, "neg", [p2], "o4"), op(g, "sub", [p4, x], "o5"), keep_slice,
                 op(g, "abs", [keep_perm], "o6")]

    g, rec = check_pass("remove_noops", g, gen)
    assert "copy" not in ops_of(g)
    for gone in ("c", "p1", "p4", "r1", "e", "s", "s2", "sq"):
        assert gone not in g, gone
    assert "p3" not in g or not g.users("p3"), "the inner permute of an identity pair must be unused"
    assert g.inputs_of("p2") == [x] and g.node("p2").attrs["dims"] == [2, 1, 0]
    assert g.inputs_of("r2") == [x] and g.node("r2").attrs["shape"] == [24]
    assert g.inputs_of("o2") == [x, x] and g.inputs_of("o3") == [x, x] and g.inputs_of("o5") == [x, x]
    assert g.inputs_of("keep_slice") == [x] and g.inputs_of("keep_perm") == [x]
    assert fired(rec, COPY) == ["c"]
    assert sorted(fired(rec, IDENTITY)) == ["e", "p4", "s", "s2", "sq"]
    assert sorted(fired(rec, CHAIN)) == ["p2", "p4", "r2"]


# ------------------------------------------------------------------------------------ constant_folding
def test_constant_folding(gen):
    FOLD = rule_name("constant_folding", "FOLD")
    w = torch.randn(3, 4, generator=gen)
    g = Graph()
    x = inp(g, "x", 4, 3)
    big_in = inp(g, "big_in", 1000)
    wv = g.add_constant("w", w)
    wt = op(g, "permute", [wv], "wt", dims=[1, 0])
    two = g.add_constant("two", torch.tensor(2.0))
    half = g.add_constant("half", torch.tensor(0.5))
    k = op(g, "mul", [two, half], "k")  # scalar arithmetic: 1.0
    ws = op(g, "mul", [wt, k], "ws")  # weight transpose times a folded scalar
    one = g.add_constant("one", torch.tensor([3.0]))
    big = op(g, "expand", [one], "big", shape=[1000])  # 1000x growth: must stay a view
    g.outputs = [op(g, "add", [x, ws], "out"), op(g, "add", [big_in, big], "out_big")]

    g, rec = check_pass("constant_folding", g, gen)
    assert sorted(fired(rec, FOLD)) == ["k", "ws", "wt"]
    assert g.node("ws").op == "constant"
    assert torch.equal(g.node("ws").value, w.t().contiguous() * 1.0)
    assert g.node("ws").value.is_contiguous()
    for gone in ("w", "wt", "two", "half", "k"):  # folded in turn; each lost its last user
        assert gone not in g, gone
    assert g.inputs_of("out") == [x, V("ws")]
    # the huge broadcast is left alone, with the reason logged
    assert g.node("big").op == "expand" and g.inputs_of("big") == [V("one")]
    assert "big" in skipped(rec, FOLD)
    assert "1000 elements from 1 read" in skipped(rec, FOLD)["big"][0]


def test_constant_folding_owns_contiguous_values(gen):
    """A folded value is contiguous and owns its storage, copied once at most: a transpose or a reshape of a
    constant is copied (the input stays intact, and another user of it may keep it); a fresh result (a product)
    is kept without another copy."""
    from trtjit.passes.constant_folding import _owned_contiguous

    w = torch.randn(3, 4, generator=gen)
    t = _owned_contiguous(w.t(), [w])
    assert t.is_contiguous() and t.untyped_storage().data_ptr() != w.untyped_storage().data_ptr()
    assert torch.equal(t, w.t())
    r = _owned_contiguous(w.reshape(12), [w])
    assert r.untyped_storage().data_ptr() != w.untyped_storage().data_ptr() and torch.equal(r, w.reshape(12))
    p = w * 2.0
    assert _owned_contiguous(p, [w]) is p
    row = torch.randn(4, 8, generator=gen)[1]  # contiguous, but a slice of a larger storage: copied to its own
    assert _owned_contiguous(row, []).untyped_storage().nbytes() == row.nbytes


def test_constant_folding_same_constant_twice(gen):
    """w * w: the constant read twice is removed once (it used to crash with a networkx error)."""
    c = torch.randn(4, generator=gen)
    g = Graph()
    x = inp(g, "x", 4)
    cv = g.add_constant("c", c)
    sq = op(g, "mul", [cv, cv], "sq")
    g.outputs = [op(g, "add", [x, sq], "out")]
    g, rec = check_pass("constant_folding", g, gen)
    assert g.node("sq").op == "constant" and torch.equal(g.node("sq").value, c * c)
    assert "c" not in g and rec.removed == ["c"]


# -------------------------------------------------------------------------------------- fold_batchnorm
def _bn_stats(g: Graph, gen: torch.Generator, c: int, prefix: str = "bn") -> list[Value]:
    return [g.add_constant(f"{prefix}.mean", torch.randn(c, generator=gen)),
            g.add_constant(f"{prefix}.var", torch.rand(c, generator=gen) + 0.5),
            g.add_constant(f"{prefix}.weight", torch.randn(c, generator=gen)),
            g.add_constant(f"{prefix}.bias", torch.randn(c, generator=gen))]


def _conv_bn_graph(gen: torch.Generator, bias_shape: tuple[int, ...] | None = (1, 4, 1, 1),
                   conv_used_twice: bool = False) -> Graph:
    g = Graph()
    x = inp(g, "x", 2, 3, 6, 6)
    conv = op(g, "conv2d", [x, g.add_constant("conv.weight", torch.randn(4, 3, 3, 3, generator=gen))], "conv",
              padding=[1, 1])
    y = conv
    if bias_shape is not None:
        y = op(g, "add", [conv, g.add_constant("conv.b", torch.randn(bias_shape, generator=gen))], "conv_bias")
    bn = op(g, "batch_norm", [y, *_bn_stats(g, gen, 4)], "bn", eps=1e-3)
    g.outputs = [op(g, "relu", [bn], "act")]
    if conv_used_twice:
        g.outputs.append(op(g, "sigmoid", [conv], "other_user"))
    return g


@pytest.mark.parametrize("with_bias", [True, False])
def test_fold_batchnorm_conv(gen, with_bias):
    CONV_BN = rule_name("fold_batchnorm", "CONV_BN")
    g = _conv_bn_graph(gen, (1, 4, 1, 1) if with_bias else None)
    g, rec = check_pass("fold_batchnorm", g, gen)
    assert "batch_norm" not in ops_of(g) and "bn" not in g and "conv_bias" not in g
    assert fired(rec, CONV_BN) == ["conv"]
    assert rec.fired[0]["detail"] == "folded bn"
    assert g.inputs_of("conv")[1] == V("conv.weight_bn")
    assert g.node("conv.bias").op == "add" and g.inputs_of("conv.bias") == [V("conv"), V("conv.bias_bn")]
    assert g.node("conv.bias_bn").spec.shape == (1, 4, 1, 1)
    assert g.inputs_of("act") == [V("conv.bias")]


@pytest.mark.parametrize("with_bias", [True, False])
def test_fold_batchnorm_linear(gen, with_bias):
    LINEAR_BN = rule_name("fold_batchnorm", "LINEAR_BN")
    g = Graph()
    x = inp(g, "x", 5, 6)
    ins = [x, g.add_constant("fc.weight", torch.randn(8, 6, generator=gen))]
    if with_bias:
        ins.append(g.add_constant("fc.b", torch.randn(8, generator=gen)))
    fc = op(g, "linear", ins, "fc")
    g.outputs = [op(g, "batch_norm", [fc, *_bn_stats(g, gen, 8)], "bn")]

    g, rec = check_pass("fold_batchnorm", g, gen)
    assert "batch_norm" not in ops_of(g)
    assert fired(rec, LINEAR_BN) == ["fc"]
    assert g.inputs_of("fc")[1] == V("fc.weight_bn")
    if with_bias:
        assert g.inputs_of("fc")[2] == V("fc.bias_bn") and g.outputs == [V("fc")]
    else:
        assert g.outputs == [V("fc.bias")] and g.inputs_of("fc.bias") == [V("fc"), V("fc.bias_bn")]


def test_fold_batchnorm_skips_conv_with_another_user(gen):
    CONV_BN = rule_name("fold_batchnorm", "CONV_BN")
    g = _conv_bn_graph(gen, None, conv_used_twice=True)
    g, rec = check_pass("fold_batchnorm", g, gen)
    assert g.node("bn").op == "batch_norm" and g.inputs_of("bn")[0] == V("conv")
    assert g.inputs_of("conv")[1] == V("conv.weight")
    assert not rec.fired and not rec.added and not rec.removed
    assert "not a conv/linear used only here" in skipped(rec, CONV_BN)["bn"][0]


def test_fold_batchnorm_skips_runtime_statistics(gen):
    CONV_BN = rule_name("fold_batchnorm", "CONV_BN")
    g = Graph()
    x = inp(g, "x", 2, 3, 5, 5)
    mean = inp(g, "mean", 4)
    conv = op(g, "conv2d", [x, g.add_constant("w", torch.randn(4, 3, 1, 1, generator=gen))], "conv")
    stats = _bn_stats(g, gen, 4)
    g.outputs = [op(g, "batch_norm", [conv, mean, *stats[1:]], "bn")]
    g, rec = check_pass("fold_batchnorm", g, gen)
    assert g.node("bn").op == "batch_norm" and not rec.fired
    assert skipped(rec, CONV_BN)["bn"] == ["batch_norm statistics are not constants"]


def test_fold_batchnorm_width_broadcast_add_is_not_a_bias(gen):
    g = Graph()  # a 4x4 image, so that a [4] constant (W == C == 4) broadcasts legally along W
    x = inp(g, "x", 1, 3, 4, 4)
    conv = op(g, "conv2d", [x, g.add_constant("conv.weight", torch.randn(4, 3, 3, 3, generator=gen))], "conv",
              padding=[1, 1])
    y = op(g, "add", [conv, g.add_constant("row", torch.randn(4, generator=gen))], "add_row")
    g.outputs = [op(g, "batch_norm", [y, *_bn_stats(g, gen, 4)], "bn")]
    check_pass("fold_batchnorm", g, gen)


# ------------------------------------------------------------------------------------------- decompose
def test_decompose(gen):
    DECOMPOSE = rule_name("decompose", "DECOMPOSE")
    g = Graph()
    x = inp(g, "x", 2, 4, 8)
    q = inp(g, "q", 2, 3, 8)
    sm = op(g, "softmax", [x], "sm", dim=-1)
    lsm = op(g, "log_softmax", [x], "lsm", dim=1)
    ln = op(g, "layer_norm", [sm, g.add_constant("ln.w", torch.randn(8, generator=gen)),
                              g.add_constant("ln.b", torch.randn(8, generator=gen))], "ln", normalized_shape=[8])
    rms = op(g, "rms_norm", [ln], "rms", normalized_shape=[8])
    bn = op(g, "batch_norm", [lsm, *_bn_stats(g, gen, 4)], "bn")
    fc = op(g, "linear", [rms, g.add_constant("fc.w", torch.randn(8, 8, generator=gen)),
                          g.add_constant("fc.b", torch.randn(8, generator=gen))], "fc")
    mask = torch.rand(3, 4, generator=gen) < 0.5
    mask[:, 0] = True
    att = op(g, "sdpa", [q, fc, bn, g.add_constant("mask", mask)], "att")
    var = op(g, "var", [x], "var", dims=[2], keepdim=True)
    g.outputs = [att, var]
    composites = ["sm", "lsm", "ln", "rms", "bn", "fc", "var"]  # sdpa is not composite: it has a kernel

    g, rec = check_pass("decompose", g, gen)
    assert not [n.name for n in g if get_op(n.op).kind == "composite"]
    assert g.node("att").op == "sdpa"
    assert sorted(fired(rec, DECOMPOSE)) == sorted(composites)
    assert sorted(rec.removed) == sorted(composites)
    for name in rec.added:  # every new node traces back to the composite it came from
        assert name.split(".")[0] in composites, name
    ln_ops = [g.node(n).op for n in rec.added if n.startswith("ln.") and g.node(n).op != "constant"]
    assert sorted(ln_ops) == ["add", "add", "mean", "mean", "mul", "mul", "mul", "rsqrt", "sub"]
    assert g.outputs[0] == V("att")
    assert g.node("fc.matmul").op == "matmul" and g.node("fc.weight_t").op == "permute"


# -------------------------------------------------------------------------------- fuse_gemm_epilogue
def test_fuse_gemm_epilogue(gen):
    GEMM, CONV = rule_name("fuse_gemm_epilogue", "GEMM"), rule_name("fuse_gemm_epilogue", "CONV")
    g = Graph()
    x = inp(g, "x", 3, 4, 5)
    res = inp(g, "res", 3, 4, 6)
    img = inp(g, "img", 1, 3, 6, 6)
    mm = op(g, "matmul", [x, g.add_constant("w", torch.randn(5, 6, generator=gen))], "mm")
    b = op(g, "add", [mm, g.add_constant("b", torch.randn(6, generator=gen))], "bias")
    r = op(g, "relu", [b], "act")
    s = op(g, "mul", [r, g.add_constant("s", torch.tensor(0.5))], "scale")
    out = op(g, "add", [s, res], "residual")
    cv = op(g, "conv2d", [img, g.add_constant("cw", torch.randn(4, 3, 3, 3, generator=gen))], "conv")
    cb = op(g, "add", [cv, g.add_constant("cb", torch.randn(1, 4, 1, 1, generator=gen))], "conv_bias")
    ca = op(g, "silu", [cb], "conv_act")
    g.outputs = [out, op(g, "amax", [ca], "pool", dims=[2, 3])]

    g, rec = check_pass("fuse_gemm_epilogue", g, gen)
    assert g.node("mm").op == "fused_gemm"
    assert body_ops(g, "mm") == ["matmul", "add", "relu", "mul", "add"]
    assert g.node("mm").attrs["rules"] == [GEMM] and g.node("mm").attrs["kernel_name"] == "gemm_mm"
    assert g.outputs[0] == V("mm") and g.node("mm").spec.shape == (3, 4, 6)
    for gone in ("bias", "act", "scale", "residual", "conv_bias", "conv_act"):
        assert gone not in g
    assert body_ops(g, "conv") == ["conv2d", "add", "silu"] and g.node("conv").attrs["rules"] == [CONV]
    assert g.inputs_of("pool") == [V("conv")]
    events = {(e["rule"], e["node"], e["fired"]): e["detail"] for e in rec.events}
    assert events[(GEMM, "mm", True)] == "matmul + bias + relu + scale + residual add"
    assert events[(CONV, "conv", True)] == "conv2d + bias + silu"
    assert events[(CONV, "conv", False)] == "epilogue stops: 'pool' is amax, not pointwise"


def test_fuse_gemm_epilogue_dag_and_stops(gen):
    GEMM = rule_name("fuse_gemm_epilogue", "GEMM")
    g = Graph()
    a = inp(g, "a", 4, 5)
    w = inp(g, "w", 5, 6)
    big = inp(g, "big", 2, 4, 6)
    shared = op(g, "matmul", [a, w], "shared")  # two pointwise users joining again: the whole DAG fuses
    r = op(g, "relu", [shared], "relu")
    sg = op(g, "sigmoid", [shared], "sig")
    grow = op(g, "matmul", [a, w], "grow")  # the next op broadcasts to a bigger shape: no epilogue
    gr = op(g, "add", [grow, big], "grow_add")
    out_mm = op(g, "matmul", [a, w], "out_mm")  # a graph output itself: kept as a second output
    red = op(g, "matmul", [a, w], "red")  # read by a reduction: not pointwise
    g.outputs = [op(g, "mul", [r, sg], "prod"), gr, out_mm, op(g, "exp", [out_mm], "after_out"),
                 op(g, "sum", [red], "red_sum", dims=[1])]

    g, rec = check_pass("fuse_gemm_epilogue", g, gen)
    assert body_ops(g, "shared") == ["matmul", "relu", "sigmoid", "mul"]
    assert len(g.node("shared").outputs) == 1 and g.outputs[0] == V("shared")
    assert body_ops(g, "out_mm") == ["matmul", "exp"] and len(g.node("out_mm").outputs) == 2
    assert g.outputs[2:4] == [V("out_mm", 0), V("out_mm", 1)] or g.outputs[2:4] == [V("out_mm", 1), V("out_mm", 0)]
    for name in ("grow", "red"):
        assert body_ops(g, name) == ["matmul"] and g.node(name).attrs["rules"] == []
    assert g.node("grow_add").op == "add" and g.node("red_sum").op == "sum"
    assert sorted(fired(rec, GEMM)) == ["out_mm", "shared"]
    why = skipped(rec, GEMM)
    assert why["grow"] == ["no epilogue: 'grow_add' changes the shape to [2, 4, 6]"]
    assert why["red"] == ["no epilogue: 'red_sum' is sum, not pointwise"]


# ------------------------------------------------------------------------------------- fuse_reductions
def test_fuse_reductions_softmax_with_prologue(gen):
    ROW = rule_name("fuse_reductions", "ROW")
    g = Graph()
    x = inp(g, "x", 3, 8)
    y = op(g, "mul", [x, g.add_constant("t", torch.tensor(0.7))], "temp")
    m = op(g, "amax", [y], "max", dims=[1], keepdim=True)
    e = op(g, "exp", [op(g, "sub", [y, m], "shift")], "exp")
    s = op(g, "sum", [e], "sum", dims=[1], keepdim=True)
    p = op(g, "div", [e, s], "probs")
    g.outputs = [p, op(g, "matmul", [p, inp(g, "v", 8, 4)], "pv")]

    g, rec = check_pass("fuse_reductions", g, gen)
    assert g.node("max").op == "fused_reduction" and g.node("max").attrs["rules"] == [ROW]
    assert body_ops(g, "max") == ["mul", "amax", "sub", "exp", "sum", "div"]
    assert len(g.node("max").outputs) == 1 and g.inputs_of("pv")[0] == V("max")
    assert fired(rec, ROW) == ["max"] and rec.fired[0]["detail"] == "mul + amax + sub + exp + sum + div"
    assert sorted(op for op in g.op_counts()) == ["constant", "fused_reduction", "input", "matmul"]


def test_fuse_reductions_layer_norm_two_statistics(gen):
    g = Graph()
    x = inp(g, "x", 4, 8)
    mu = op(g, "mean", [x], "mean", dims=[1], keepdim=True)
    c = op(g, "sub", [x, mu], "center")
    var = op(g, "mean", [op(g, "mul", [c, c], "sq")], "var", dims=[1], keepdim=True)
    r = op(g, "rsqrt", [op(g, "add", [var, g.add_constant("eps", torch.tensor(1e-5))], "var_eps")], "rstd")
    g.outputs = [op(g, "mul", [c, r], "norm"), op(g, "squeeze", [mu], "mean_out", dims=[1])]

    g, rec = check_pass("fuse_reductions", g, gen)
    assert [n.op for n in g if n.op not in ("input", "constant")] == ["fused_reduction", "squeeze"]
    assert body_ops(g, "mean") == ["mean", "sub", "mul", "mean", "add", "rsqrt", "mul"]
    assert [s.shape for s in g.node("mean").outputs] == [(4, 1), (4, 8)]  # the mean is used outside
    assert g.outputs[0] == V("mean", 1) and g.inputs_of("mean_out") == [V("mean", 0)]


def test_fuse_reductions_negative(gen):
    ROW = rule_name("fuse_reductions", "ROW")
    g = Graph()
    x = inp(g, "x", 4, 4)
    w = inp(g, "w", 4, 4)
    z = inp(g, "z", 3, 4, 5)
    # cycle: a feeds the row sum and a matmul; add(matmul, sum) cannot join the row kernel
    a = op(g, "exp", [x], "a")
    s = op(g, "sum", [a], "s", dims=[1], keepdim=True)
    m = op(g, "matmul", [a, w], "mm")
    b = op(g, "add", [m, s], "b")
    # different reduced dims over one tensor: two kernels
    r1 = op(g, "sum", [z], "r1", dims=[1], keepdim=True)
    r2 = op(g, "amax", [z], "r2", dims=[2], keepdim=True)
    both = op(g, "add", [r1, r2], "both")
    # a reduction over a size-1 dim is left alone
    one = op(g, "mean", [op(g, "unsqueeze", [x], "x1", dim=1)], "one", dims=[1])
    g.outputs = [b, both, one]

    g, rec = check_pass("fuse_reductions", g, gen)
    assert g.node("b").op == "add" and g.node("mm").op == "matmul"
    assert body_ops(g, "s") == ["exp", "sum"]
    assert g.inputs_of("b") == [V("mm"), V("s", 1)] and g.inputs_of("mm")[0] == V("s", 0)  # s exposes exp(x) too
    assert "fusing would create a cycle" in skipped(rec, ROW)["b"]
    assert g.node("r1").op == "fused_reduction" and g.node("r2").op == "fused_reduction"
    assert "sum" in body_ops(g, "r1") and "amax" not in body_ops(g, "r1")
    assert body_ops(g, "r2") == ["amax"]
    assert any("the group reduces [3, 4, 5] over [1]" in d for d in skipped(rec, ROW)["r2"])
    assert g.node("one").op == "mean"
    assert skipped(rec, ROW)["one"] == ["reduces over no elements; left as its own kernel"]
    assert sorted(fired(rec, ROW)) == ["r1", "r2", "s"]


# -------------------------------------------------------------------------------------- fuse_pointwise
def test_fuse_pointwise_chain(gen):
    CHAIN = rule_name("fuse_pointwise", "CHAIN")
    g = Graph()
    x = inp(g, "x", 4, 6)
    y = inp(g, "y", 4, 6)
    bias = inp(g, "bias", 6)
    e = op(g, "exp", [x], "e")
    m = op(g, "mul", [e, y], "m")
    a = op(g, "add", [m, bias], "a")  # broadcast input read in place
    c = op(g, "gt", [a, x], "c")  # a bool output in the same group
    g.outputs = [op(g, "where", [c, a, e], "out"), e]

    g, rec = check_pass("fuse_pointwise", g, gen)
    assert [n.op for n in g if n.op != "input"] == ["fused_pointwise"]
    assert body_ops(g, "out") == ["exp", "mul", "add", "gt", "where"]
    assert g.node("out").attrs["rules"] == [CHAIN] and g.node("out").attrs["kernel_name"] == "pointwise_out"
    assert g.inputs_of("out") == [x, y, bias]
    assert [s.shape for s in g.node("out").outputs] == [(4, 6), (4, 6)]  # e is used outside
    assert g.outputs == [V("out", 1), V("out", 0)]
    assert fired(rec, CHAIN) == ["out"] and rec.fired[0]["detail"] == "exp + mul + add + gt + where"


def test_fuse_pointwise_negative(gen):
    CHAIN = rule_name("fuse_pointwise", "CHAIN")
    g = Graph()
    x = inp(g, "x", 4, 6)
    v = inp(g, "v", 6)
    w = inp(g, "w", 6, 6)
    small = op(g, "exp", [v], "small")  # shape [6]
    big = op(g, "add", [x, small], "big")  # shape [4, 6]: not merged with its producer
    a = op(g, "sigmoid", [big], "a")
    mm = op(g, "matmul", [a, w], "mm")
    b = op(g, "mul", [a, mm], "b")  # merging a and b would make a -> mm -> {a, b} a cycle
    g.outputs = [b]

    g, rec = check_pass("fuse_pointwise", g, gen)
    kinds = {n.name: n.op for n in g if n.op != "input"}
    assert kinds == {"small": "fused_pointwise", "a": "fused_pointwise", "mm": "matmul", "b": "fused_pointwise"}
    assert body_ops(g, "small") == ["exp"] and body_ops(g, "a") == ["add", "sigmoid"]
    assert body_ops(g, "b") == ["mul"] and g.node("b").attrs["rules"] == []
    assert g.inputs_of("mm")[0] == V("a") and g.inputs_of("b") == [V("a"), V("mm")]
    why = skipped(rec, CHAIN)
    assert why["big"] == ["producer 'small' has shape [6]"]
    assert why["b"] == ["merging with 'a' would create a cycle"]
    assert fired(rec, CHAIN) == ["a"]


# ----------------------------------------------------------------------------------- materialize_views
def test_materialize_views(gen):
    RESHAPE_COPY, OUTPUT_COPY = (rule_name("materialize_views", r) for r in ("RESHAPE_COPY", "OUTPUT_COPY"))
    g = Graph()
    x = inp(g, "x", 2, 3, 4)
    p = op(g, "permute", [x], "p", dims=[0, 2, 1])
    r = op(g, "reshape", [p], "r", shape=[8, 3])  # no strides express this: needs a copy
    e = op(g, "exp", [r], "e")
    t = op(g, "permute", [e], "t", dims=[1, 0])  # a strided view as an output
    ok = op(g, "reshape", [e], "ok", shape=[24])  # viewable: stays a view, feeds a kernel
    g.outputs = [x, t, e, e, op(g, "neg", [ok], "n")]
    with pytest.raises(trtjit.BuildError, match="needs a copy"):
        compute_layouts(g)

    g, rec = check_pass("materialize_views", g, gen)
    assert g.node("r.copy").op == "copy" and g.inputs_of("r.copy") == [p] and g.inputs_of("r") == [V("r.copy")]
    assert fired(rec, RESHAPE_COPY) == ["r"]
    assert sorted(fired(rec, OUTPUT_COPY)) == ["e", "t", "x"]
    assert g.outputs[2] == V("e") and g.outputs[4] == V("n") and g.node("ok").op == "reshape"
    assert len(set(g.outputs)) == len(g.outputs)
    layouts = compute_layouts(g)  # strict: every value has a layout now
    for v in g.outputs:
        lay = layouts[v]
        assert lay.root == v and lay.is_contiguous and is_kernel_node(g, v.node), v


# ------------------------------------------------------------------------------------- fold_view_chains
def test_fold_view_chains_mha_split(gen):
    """nn.MultiheadAttention's q.view(L, B*H, hd).transpose(0, 1).view(B, H, L, hd) on a strided slice of the
    packed projection: rewritten as view(L, B, H, hd).permute(1, 2, 0, 3), which needs no copy."""
    SPLIT = rule_name("fold_view_chains", "SPLIT_PERMUTE")
    g = Graph()
    x = inp(g, "x", 5, 2, 3, 8)  # [L, B, 3, E] packed projection
    q = op(g, "select", [op(g, "permute", [x], "t", dims=[2, 0, 1, 3])], "q", dim=0, index=1)  # [L, B, E] strided
    v = op(g, "reshape", [q], "v", shape=[5, 4, 4])  # merges B with the head dim across unrelated strides
    tr = op(g, "permute", [v], "tr", dims=[1, 0, 2])
    out = op(g, "reshape", [tr], "out", shape=[2, 2, 5, 4])
    keep = op(g, "reshape", [x], "keep", shape=[10, 24])  # a viewable reshape: untouched
    g.outputs = [op(g, "exp", [out], "e"), op(g, "neg", [keep], "n")]
    assert compute_layouts(g, strict=False)[v] is None
    g, rec = check_pass("fold_view_chains", g, gen)
    assert fired(rec, SPLIT) == ["v"]
    assert g.node("v.split").attrs["shape"] == [5, 2, 2, 4] and g.node("tr.split").attrs["dims"] == [1, 2, 0, 3]
    assert "v" not in g and "tr" not in g and "out" not in g and g.node("keep").op == "reshape"
    layouts = compute_layouts(g)  # strict: every value is a strided view now, no copy needed
    assert layouts[V("tr.split")].root == V("x")


def test_fold_view_chains_updates_layouts_incrementally(gen, monkeypatch):
    """After each rewrite the pass updates only the layouts that changed (the new views and the views
    downstream of them); after every update they equal a full recomputation. Two chains (q and k of one
    packed projection), each with a view of its result downstream."""
    from trtjit.passes import fold_view_chains

    from trtjit.layout import update_layouts

    calls = []

    def checked(graph, layouts, roots):
        update_layouts(graph, layouts, roots)
        assert layouts == compute_layouts(graph, strict=False)
        calls.append(roots)

    monkeypatch.setattr(fold_view_chains, "update_layouts", checked)
    g = Graph()
    x = inp(g, "x", 5, 2, 3, 8)
    t = op(g, "permute", [x], "t", dims=[2, 0, 1, 3])
    outs = []
    for i, nm in ((0, "q"), (1, "k")):
        s = op(g, "select", [t], nm, dim=0, index=i)
        v = op(g, "reshape", [s], f"{nm}v", shape=[5, 4, 4])
        tr = op(g, "permute", [v], f"{nm}tr", dims=[1, 0, 2])
        o = op(g, "reshape", [tr], f"{nm}o", shape=[2, 2, 5, 4])
        outs.append(op(g, "exp", [op(g, "permute", [o], f"{nm}p", dims=[0, 1, 3, 2])], f"{nm}e"))
    g.outputs = outs
    g, rec = check_pass("fold_view_chains", g, gen)
    assert fired(rec) == ["qv", "kv"] and len(calls) == 2
    assert compute_layouts(g)[V("kp")].root == V("x")  # strict: no copy left


def test_fold_view_chains_negative(gen):
    """A chain that is viewable already, or whose shapes do not nest, is left alone."""
    g = Graph()
    x = inp(g, "x", 6, 4)
    a = op(g, "reshape", [op(g, "permute", [x], "t", dims=[1, 0])], "a", shape=[8, 3])  # 4*6 -> 8*3: no nesting
    b = op(g, "permute", [a], "b", dims=[1, 0])
    c = op(g, "reshape", [x], "c", shape=[2, 3, 4])  # viewable
    g.outputs = [op(g, "exp", [b], "e"), op(g, "neg", [op(g, "permute", [c], "p", dims=[2, 0, 1])], "n")]
    g, rec = check_pass("fold_view_chains", g, gen)
    assert fired(rec) == [] and {"a", "b", "c", "p"} <= set(n.name for n in g)


# ------------------------------------------------------------------------------------------ memory_plan
def _chain_graph() -> Graph:
    g = Graph()
    x = inp(g, "x", 8, 16)
    a = op(g, "exp", [x], "a")
    b = op(g, "neg", [a], "b")
    c = op(g, "sin", [b], "c")
    d = op(g, "cos", [c], "d")
    e = op(g, "abs", [d], "e")
    f = op(g, "mul", [e, a], "f")  # a lives until f
    bt = op(g, "permute", [b], "bt", dims=[1, 0])  # a view keeps b alive until its reader
    h = op(g, "add", [f, op(g, "permute", [bt], "btt", dims=[1, 0])], "h")
    s = op(g, "sum", [h], "s", dims=[1])  # a smaller buffer
    k = op(g, "mul", [h, op(g, "unsqueeze", [s], "s1", dim=1)], "k")
    g.outputs = [op(g, "sigmoid", [k], "out"), s]
    return g


def test_memory_plan(gen):
    PLAN = rule_name("memory_plan", "PLAN")
    g, rec = check_pass("memory_plan", _chain_graph(), gen)
    plan = g.meta["memory_plan"]
    offsets, lifetimes = plan["offsets"], plan["lifetimes"]
    kernels = [n for n in g.topo_order() if is_kernel_node(g, n)]
    step = {n: i for i, n in enumerate(kernels)}
    assert kernels == ["a", "b", "c", "d", "e", "f", "h", "s", "k", "out"]
    # every intermediate kernel buffer is planned; graph outputs get their own allocations
    assert set(offsets) == set(lifetimes) == {f"{n}:0" for n in kernels if n not in ("out", "s")}
    assert lifetimes["a:0"] == [step["a"], step["f"]]
    assert lifetimes["b:0"] == [step["b"], step["h"]], "a view's reader must keep its root alive"
    assert lifetimes["c:0"] == [step["c"], step["d"]]
    assert lifetimes["h:0"] == [step["h"], step["k"]]

    nbytes = {key: g.node(key.split(":")[0]).spec.nbytes for key in offsets}
    for key, off in offsets.items():
        assert off % 256 == 0 and off + nbytes[key] <= plan["arena_bytes"]
    keys = sorted(offsets)
    for i, k1 in enumerate(keys):
        for k2 in keys[i + 1:]:
            (f1, l1), (f2, l2) = lifetimes[k1], lifetimes[k2]
            if f1 <= l2 and f2 <= l1:  # alive at the same time: byte ranges must be disjoint
                o1, o2 = offsets[k1], offsets[k2]
                assert o1 + nbytes[k1] <= o2 or o2 + nbytes[k2] <= o1, (k1, k2, offsets, lifetimes)
    assert plan["naive_bytes"] == sum(-(-n // 256) * 256 for n in nbytes.values())
    assert plan["arena_bytes"] < plan["naive_bytes"]
    assert fired(rec, PLAN) == ["<graph>"]


def test_memory_plan_engine_runs_with_shared_buffers(gen):
    """The whole opt_level=0 pipeline on the chain: buffers really are reused, and results stay right."""
    g = _chain_graph()
    xs = random_inputs(g, gen)
    expected = trtjit.run_graph(_chain_graph(), xs)
    engine = trtjit.build(g, trtjit.BuildOptions(opt_level=0, verify=True))
    plan = engine.memory_plan()
    assert 0 < plan["arena_bytes"] < plan["naive_bytes"]
    for _ in range(2):  # the arena is reused across calls
        for a, b in zip(engine.run(*xs), expected):
            assert_close_rel(a, b)


# ---------------------------------------------------------------------------- verify after a bad pass
def _victim() -> Graph:
    g = Graph()
    x = inp(g, "x", 4, 6)
    e = op(g, "exp", [x], "e")
    g.outputs = [op(g, "add", [e, x], "a")]
    return g


def _wrong_spec(g: Graph) -> None:
    g.node("e").outputs = [TensorSpec((9,), F32)]


def _dangling_input(g: Graph) -> None:
    g.nx.remove_edge("e", "a", key=0)


def _cycle(g: Graph) -> None:
    g.set_input("e", 0, V("a"))


def _missing_output(g: Graph) -> None:
    g.outputs.append(V("gone"))


def _unknown_op(g: Graph) -> None:
    g.node("e").op = "exp_not_in_table"


def _bad_body(g: Graph) -> None:
    body = g.node("a").attrs["body"]
    body.node("e").outputs = [TensorSpec((4, 6), torch.float16)]


@pytest.mark.parametrize("breakage,fuse_first,message", [
    (_wrong_spec, False, r"node 'e' \(exp\) records outputs \['float32\[9\]'\].* \(after pass 'bad_pass'\)"),
    (_dangling_input, False, r"node 'a' \(add\) has dangling or duplicate inputs \[1\] \(after pass 'bad_pass'\)"),
    (_cycle, False, r"cycle through .*'[ae]'.* \(after pass 'bad_pass'\)"),
    (_missing_output, False, r"graph output %gone does not exist \(after pass 'bad_pass'\)"),
    (_unknown_op, False, r"node 'e': op 'exp_not_in_table' is not in the op table \(after pass 'bad_pass'\)"),
    (_bad_body, True, r"node 'e' \(exp\) records outputs .* \(after pass 'bad_pass: body of a'\)"),
], ids=["wrong_spec", "dangling_input", "cycle", "missing_output", "unknown_op", "fused_body"])
def test_verify_after_bad_pass_names_pass_and_node(breakage, fuse_first, message):
    g = _victim()
    if fuse_first:
        g, _ = run_one("fuse_pointwise", g)

    def bad(graph: Graph, ctx: PassContext) -> Graph:
        breakage(graph)
        return graph

    ctx = PassContext(trtjit.BuildOptions(verify=True))
    with pytest.raises(trtjit.GraphError, match=message):
        run_pass(Pass("bad_pass", bad, "breaks the graph on purpose"), g, ctx)
    assert [r.name for r in ctx.log] == ["bad_pass"]  # the record is kept for the post-mortem

    g = _victim()  # without verification the same pass goes through unnoticed
    if fuse_first:
        g, _ = run_one("fuse_pointwise", g)
    run_pass(Pass("bad_pass", bad, ""), g, PassContext(trtjit.BuildOptions(verify=False)))


def test_error_raised_inside_a_pass_names_the_pass():
    def failing(graph: Graph, ctx: PassContext) -> Graph:
        graph.node("no_such_node")
        return graph

    with pytest.raises(trtjit.GraphError, match=r"in pass 'failing_pass': no node named 'no_such_node'"):
        run_pass(Pass("failing_pass", failing, ""), _victim(), PassContext(trtjit.BuildOptions(verify=True)))


# --------------------------------------------------------------------------------------- fuse_attention
def test_fuse_attention_eager_pattern(gen):
    ATT = rule_name("fuse_attention", "ATTENTION")
    g = Graph()
    q, k, v = inp(g, "q", 2, 3, 5, 8), inp(g, "k", 2, 3, 6, 8), inp(g, "v", 2, 3, 6, 4)
    keep = torch.rand(5, 6, generator=gen) > 0.3
    keep[:, 0] = True
    kt = op(g, "permute", [k], "kt", dims=[0, 1, 3, 2])
    s = op(g, "matmul", [q, kt], "scores")
    s = op(g, "div", [s, g.add_constant("sqrt_d", torch.tensor(8.0 ** 0.5))], "scaled")
    s = op(g, "where", [g.add_constant("keep", keep), s, g.add_constant("neg", torch.tensor(-1e9))], "masked")
    p = op(g, "softmax", [s], "probs", dim=-1)
    out = op(g, "matmul", [p, v], "pv")
    shared = op(g, "matmul", [q, kt], "shared_scores")  # scores used twice: no fusion
    sp = op(g, "softmax", [shared], "shared_probs", dim=-1)
    g.outputs = [out, op(g, "matmul", [sp, v], "pv2"), shared]

    g, rec = check_pass("fuse_attention", g, gen)
    att = [n for n in g if n.op == "sdpa"]
    assert len(att) == 1 and g.outputs[0] == V(att[0].name)
    assert abs(att[0].attrs["scale"] - 8.0 ** -0.5) < 1e-6 and len(g.inputs_of(att[0].name)) == 4
    assert fired(rec, ATT) == ["pv"]
    assert skipped(rec, ATT)["pv2"] == ["scores do not come from a matmul used only here"]


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_fuse_attention_drops_an_all_keep_mask(kind, gen):
    """HF BERT without an attention_mask passes sdpa an expanded constant all-True mask: the kernel skips it.
    A mask that drops a key stays."""
    NO_MASK = rule_name("fuse_attention", "NO_MASK")
    g = Graph()
    q, k, v = inp(g, "q", 2, 3, 5, 8), inp(g, "k", 2, 3, 6, 8), inp(g, "v", 2, 3, 6, 4)
    keep_all = torch.ones(1, 1, 5, 1, dtype=torch.bool) if kind == "bool" else torch.zeros(1, 1, 5, 1)
    some = torch.ones(1, 1, 5, 6, dtype=torch.bool) if kind == "bool" else torch.zeros(1, 1, 5, 6)
    some[..., 2] = False if kind == "bool" else -1e4
    m_all = op(g, "expand", [g.add_constant("keep_all", keep_all)], "m_all", shape=[1, 1, 5, 6])
    a = op(g, "sdpa", [q, k, v, m_all], "a", scale=None)
    b = op(g, "sdpa", [q, k, v, g.add_constant("some", some)], "b", scale=None)
    g.outputs = [a, b]
    g, rec = check_pass("fuse_attention", g, gen)
    assert fired(rec, NO_MASK) == ["a"]
    assert len(g.inputs_of("a")) == 3 and len(g.inputs_of("b")) == 4 and g.outputs == [V("a"), V("b")]


# --------------------------------------------------------------------------------- merge_parallel_gemms
def test_merge_parallel_gemms_qkv(gen):
    MERGE = rule_name("merge_parallel_gemms", "MERGE")
    g = Graph()
    x = inp(g, "x", 2, 5, 8)
    outs = []
    for name, n in (("q", 8), ("k", 8), ("v", 4)):
        mm = op(g, "matmul", [x, g.add_constant(f"{name}.w", torch.randn(8, n, generator=gen))], name)
        outs.append(op(g, "add", [mm, g.add_constant(f"{name}.b", torch.randn(n, generator=gen))], f"{name}.bias"))
    other = op(g, "matmul", [inp(g, "y", 2, 5, 8), g.add_constant("o.w", torch.randn(8, 3, generator=gen))], "o")
    g.outputs = [*outs, other]

    g, rec = check_pass("merge_parallel_gemms", g, gen)
    mms = [n for n in g if n.op == "matmul"]
    assert sorted(n.spec.shape[-1] for n in mms) == [3, 20]  # q, k, v as one 8 -> 20 GEMM; "o" alone
    assert [g.node(v.node).op for v in g.outputs[:3]] == ["slice"] * 3
    assert fired(rec, MERGE) == ["q"] and "with biases" in rec.fired[0]["detail"]


def test_dump_writes_the_graph_after_each_pass_and_every_kernel(tmp_path, monkeypatch, gen):
    """TRTJIT_DUMP (or ``dump_dir=``): one file per pass, in pipeline order, holding that pass's summary and
    the graph after it; one file per kernel holding exactly the Triton source the engine keeps."""
    from trtjit.pipeline import PIPELINES

    monkeypatch.setenv("TRTJIT_DUMP", str(tmp_path))
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).eval()
    engine = trtjit.compile(model, (torch.randn(4, 16, generator=gen),))
    assert engine.options.dump_dir == str(tmp_path)
    passes = sorted(p.name for p in tmp_path.glob("[0-9][0-9]_*.txt"))
    assert passes == [f"{i:02d}_{n}.txt" for i, n in enumerate(PIPELINES[2])]
    fused = (tmp_path / f"{PIPELINES[2].index('fuse_gemm_epilogue'):02d}_fuse_gemm_epilogue.txt").read_text()
    assert fused.startswith("# fuse_gemm_epilogue: ") and "%0.matmul: float32[4,32] = fused_gemm(" in fused
    assert {p.name: p.read_text() for p in tmp_path.glob("kernel_*.py")} == \
        {f"kernel_{k.name}.py": k.source for k in engine.kernels}
