"""trtjit.explore as a notebook user drives it: one pass at a time, captures, layer-by-layer comparisons."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close_rel
from torch import nn

import trtjit
import trtjit.explore as tx
from trtjit.builder import lower
from trtjit.engine import Engine
from trtjit.errors import TrtjitError
from trtjit.examples import example
from trtjit.passmanager import Pass
from trtjit.pipeline import PIPELINES


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def mlp():
    model, inputs = example("mlp")
    return model, inputs, tx.import_torch(model, inputs)


@pytest.fixture(scope="module")
def layer():
    model, inputs = example("transformer_layer")
    return model, inputs, tx.import_torch(model, inputs)


def _convbn(gen):
    model = ConvBN().eval()
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.randn(8, generator=gen) * 0.2)
        model.bn.running_var.copy_(torch.rand(8, generator=gen) + 0.5)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    return model, (x,), tx.import_torch(model, (x,))


def test_run_pass_leaves_the_graph_alone_and_reports_what_changed(mlp):
    _, _, g = mlp
    text = str(g)
    step = tx.run_pass(g, "decompose")
    assert str(g) == text and "linear" in g.op_counts()
    assert "linear" not in step.after.op_counts() and step.before is g
    assert step.record.name == "decompose" and step.rules_fired == {"composite => table ops": 2}
    assert {"fc1", "fc2"} <= set(step.removed) and "fc1.matmul" in step.added
    assert step.diff.replaced["%fc1"] in {f"%{n}" for n in step.added}  # what consumers of fc1 read now
    assert "decompose: 8 -> " in str(step) and "composite => table ops" in str(step)
    with pytest.raises(TrtjitError, match="no pass named"):
        tx.run_pass(g, "no_such_pass")


def test_fusion_step_lists_fused_nodes_and_rules_that_did_not_fire(mlp):
    _, _, g = mlp
    w = tx.PassWalker(g, opt_level=2)
    step = w.run_to("fuse_gemm_epilogue")
    assert [s.name for s in w.steps] == PIPELINES[2][:len(w.steps)]
    assert w.remaining == PIPELINES[2][len(w.steps):]
    (anchor,) = [f for f, names in step.fused.items() if "act" in names]
    assert step.fused[anchor][0] == anchor and step.diff.fused_ops[anchor] == "matmul + add + gelu"
    assert "act" not in step.removed  # fused, not removed
    assert step.skipped and all(e["detail"] and e["rule"] in step.rules_fired for e in step.skipped)
    assert all(e["detail"] in str(step) for e in step.skipped)  # why the rule stopped where it did
    assert step.show().highlight == set(step.diff.touched)


def test_walking_the_pipeline_gives_what_compile_gives(layer, gen):
    model, _, g = layer
    w = tx.PassWalker(g, opt_level=2, verify=True)
    steps = list(w)
    assert [s.name for s in steps] == PIPELINES[2] and w.done
    with pytest.raises(TrtjitError, match="pipeline is finished"):
        w.step()
    for a, b in zip(steps, steps[1:]):
        assert b.before is a.after
    assert tx.walk(g)["memory_plan"].after.meta["memory_plan"] == w.graph.meta["memory_plan"]
    engine = w.build()
    ref_engine = trtjit.build(tx.copy_graph(g))  # what trtjit.compile does after importing
    assert str(engine.graph) == str(ref_engine.graph)
    assert [k.source for k in engine.kernels] == [k.source for k in ref_engine.kernels]
    x = torch.randn(2, 8, 32, generator=gen)
    with torch.no_grad():
        assert_close_rel(engine(x), model(x))


def test_capture_graph_and_engine(mlp, gen):
    model, _, g = mlp
    x = torch.randn(2, 32, generator=gen)
    cap = tx.capture(g, x)
    assert set(cap.entries) >= {trtjit.Value(n.name) for n in g}
    assert torch.equal(cap["x"], x) and cap.entry("act").op == "gelu"
    assert_close_rel(cap.outputs[0], model(x).detach())
    engine = trtjit.compile(model, (x,))
    ecap = tx.capture(engine, x)
    act = ecap.entry("act")  # fused into the first GEMM's epilogue, still found under its own name
    assert act.where == "gemm_fc1" and act.op == "gelu"
    assert_close_rel(act.tensor, cap["act"])
    assert [r["value"] for r in ecap.rows()][:1] == ["x"] and "act" in str(ecap)


def test_first_divergence_after_corrupting_a_constant(mlp, gen):
    _, _, g = mlp
    x = torch.randn(2, 32, generator=gen)
    bad = tx.copy_graph(g)
    w = bad.node("fc2.weight")
    w.value = w.value.clone()
    w.value[3, 5] += 1.0
    assert not torch.equal(g.node("fc2.weight").value, w.value)  # the original is untouched
    cmp = tx.compare(g, bad, x)
    first = cmp.first_divergence
    assert first is not None and first.name == "fc2" and first.op == "linear"
    assert "%fc2.weight" in first.note
    assert [r.name for r in cmp.rows if r.status == "ok"] == ["fc1", "act"]
    assert not cmp.ok and cmp.outputs[0].diverged
    assert tx.first_divergence(g, g, x) is None


def test_engine_divergence_names_the_kernel(layer, gen):
    _, _, g = layer
    x = torch.randn(2, 8, 32, generator=gen)
    final = tx.walk(g).final
    good = Engine(final, lower(final, trtjit.BuildOptions()), trtjit.BuildOptions())
    cmp = tx.compare(final, good, x)
    assert cmp.ok and len(cmp.rows) >= len(good.kernels)
    bad_graph = tx.copy_graph(final)
    node = bad_graph.node("linear1.bias")
    node.value = node.value + 0.5
    bad = Engine(bad_graph, lower(bad_graph, trtjit.BuildOptions()), trtjit.BuildOptions())
    cmp = tx.compare(final, bad, x)
    first = cmp.first_divergence
    (kernel,) = [k for k in bad.kernels if any(a.node == "linear1.bias" for a in k.args)]
    assert first is not None and first.where == kernel.name
    assert "linear1.bias" in first.note and "first divergence" in str(cmp)


def test_compare_across_fusion_matches_values_inside_fused_nodes(layer, gen):
    _, _, g = layer
    x = torch.randn(2, 8, 32, generator=gen)
    steps = tx.walk(g)
    cmp = tx.compare(steps["dead_code_elimination"].after, steps.final, x)
    assert cmp.ok and not cmp.only_reference
    assert len(cmp.rows) > 30


def test_batchnorm_folding_rewrite_is_explained_and_pipeline_check_is_clean(gen):
    model, inputs, g = _convbn(gen)
    step = tx.walk(g)["fold_batchnorm"]
    assert step.rules_fired == {"conv + bn => conv": 1}
    assert "conv" in step.changed and "weight_bn" in step.changed["conv"]
    first = tx.compare(g, step.after, inputs).first_divergence
    assert first.name == "conv" and "rewritten by a pass" in first.note  # same name, folded weights
    chk = tx.check_pipeline(g, inputs)
    assert chk.ok and [r["pass"] for r in chk.rows][-1].startswith("engine")


def test_check_pipeline_finds_a_broken_pass(mlp, gen):
    _, _, g = mlp
    x = torch.randn(2, 32, generator=gen)

    def broken(graph, ctx):
        node = graph.node("fc1.bias")
        node.value = node.value * 2
        return graph

    before = g.node("fc1.bias").value.clone()
    passes = [*PIPELINES[2][:5], Pass("broken", broken, "doubles a bias"), *PIPELINES[2][5:]]
    chk = tx.check_pipeline(g, x, passes=passes, engine=False)
    assert chk.first_bad["pass"] == "broken" and chk.first_bad["step"] == 5
    assert "first bad: broken" in str(chk) and all(r["ok"] for r in chk.rows[:5])
    assert torch.equal(g.node("fc1.bias").value, before) and tx.check_pipeline(g, x, engine=False).ok


def test_fp16_engine_is_compared_at_fp16_tolerance(mlp, gen):
    _, _, g = mlp
    x = torch.randn(2, 32, generator=gen)
    final = tx.walk(g, precision="fp16").final
    engine = trtjit.build(tx.copy_graph(g), trtjit.BuildOptions(precision="fp16"))
    cmp = tx.compare(final, engine, x)
    assert cmp.ok and {r.tol for r in cmp.rows} == {1e-2}, str(cmp)
    assert "fp16" in set(engine.layers()["precision"])
