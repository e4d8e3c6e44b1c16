"""trtjit.display: graph drawings, pass diffs, kernel sources and layer tables, in HTML and plain text."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest
import torch

import trtjit
import trtjit.display as td
import trtjit.explore as tx
from trtjit.errors import GraphError, TrtjitError
from trtjit.examples import example

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def built():
    model, inputs = example("transformer_layer")
    graph = tx.import_torch(model, inputs)
    walker = tx.PassWalker(graph, opt_level=2)
    return graph, walker.run_all(), walker.build(), inputs


def _texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # valid XML
    assert root.tag == f"{SVG}svg"
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_graph_draws_itself_as_svg_with_fused_groups_and_dtypes(built):
    _, steps, engine, _ = built
    g = engine.graph
    svg = g._repr_svg_()
    texts = _texts(svg)
    fused = [n.name for n in g if n.op.startswith("fused_")]
    assert len(fused) >= 5
    for name in fused:
        assert any(name in t or td._trunc(name) in t for t in texts), name
    assert any("fused_reduction" in t for t in texts) and any(t.strip().startswith("rsqrt") for t in texts)
    assert "fp32" in texts and any("float32[2,8,32]" in t for t in texts)
    html = g._repr_html_()
    assert html.count("<svg") == 1 and "fused kernel" in html
    assert "<svg" in steps[0].before._repr_html_()


def test_focus_and_prefix_draw_part_of_a_graph(built):
    _, _, engine, _ = built
    g = engine.graph
    whole = set(g.nx.nodes)
    view = g.show(focus="norm1", radius=1)
    (anchor,) = view.focus if len(view.focus) == 1 else [n for n in view.focus if g.node(n).op.startswith("fused")]
    assert anchor in view.names and view.names < whole
    assert set(g.producers(anchor)) | set(g.consumers(anchor)) <= view.names
    assert ET.fromstring(view.svg) is not None and "radius 1" in view.title
    assert str(view).startswith("# ") and f"* %{anchor}" in str(view)
    inner = g.show(focus="norm1.rstd", radius=0)  # an op inside a fused node finds the fused node
    assert inner.names == {anchor}
    pre = g.show(prefix="linear2", constants=False)
    assert pre.names and all(n.startswith("linear2") or g.node(n).source.startswith("linear2") for n in pre.names)
    assert not [line for line in str(pre).splitlines() if line.startswith("%") and "= constant()" in line]
    assert "constant" not in "".join(_texts(pre.svg))
    with pytest.raises(GraphError, match="no node matches 'norm_one'"):
        g.show(focus="norm_one")


def test_large_graph_is_summarized_not_drawn(built):
    graph, _, _, _ = built
    view = graph.show(max_nodes=10)
    assert view.too_big and view._repr_svg_() is None
    assert "too many to draw" in view._repr_html_() and "<svg" not in view._repr_html_()
    assert ET.fromstring(view.svg) is not None  # still drawable on request


def test_pass_diff_lists_rules_fired_and_why_others_did_not(built):
    _, steps, _, _ = built
    step = steps["fuse_gemm_epilogue"]
    html, text = step._repr_html_(), str(step)
    for rule in step.rules_fired:
        assert rule in text and html.count(td._esc(rule)) >= 1
    assert step.skipped and all(td._esc(e["detail"]) in html for e in step.skipped)
    assert "rules not fired" in text and "why not" in html and "fused (" in text
    assert "<table" in html and text.splitlines()[0].startswith("fuse_gemm_epilogue: ")
    dec = steps["decompose"]
    assert "replaced (consumers now read)" in str(dec) and "composite => table ops" in str(dec)
    assert "(no change)" in str(steps["fuse_pointwise"]) or steps["fuse_pointwise"].fused
    table = str(steps)
    assert all(s.name in table for s in steps) and "<table" in steps._repr_html_()


def test_kernel_source_highlighted_and_plain(built):
    _, _, engine, _ = built
    k = engine.kernels[0]
    src = td.kernel_source(engine, k.name)
    assert str(src).startswith(f"# kernel {k.name}") and "@triton.jit" in str(src)
    html = src._repr_html_()
    assert "<span" in html and "style=" in html and k.name in html
    assert td.kernel_source(engine, 0).kernel is k and td.kernel_source(engine, k.node).kernel is k
    assert td.kernel_source(k).kernel is k
    every = td.kernel_source(engine)
    assert len(every) == len(engine.kernels) and str(every).count("@triton.jit") == len(engine.kernels)
    with pytest.raises(TrtjitError, match="no kernel named"):
        td.kernel_source(engine, "nope")


def test_layer_table(built, gen):
    _, _, engine, inputs = built
    df = engine.layers()
    assert list(df["kernel"]) == [k.name for k in engine.kernels]
    for col in ("template", "fused_ops", "dtype", "precision", "time_ms", "output_bytes"):
        assert col in df.columns
    assert all(math.isnan(t) for t in df["time_ms"])
    k = engine.kernels[0]
    node = engine.graph.node(k.node)
    assert df["output_bytes"][0] == sum(s.nbytes for s in node.outputs)
    assert set(df["precision"]) == {"fp32"} and (df["n_ops"] >= 1).all()
    x = torch.randn(*inputs[0].shape, generator=gen)
    timed = td.layer_table(engine, inputs=(x,), iters=1)
    assert (timed["time_ms"] > 0).all()
    text = td.layer_table_text(engine)
    assert text.splitlines()[0].split()[:3] == ["kernel", "template", "fused_ops"]
    assert len(text.splitlines()) == len(engine.kernels) + 1


def test_capture_and_comparison_render(built, gen):
    graph, steps, engine, inputs = built
    x = torch.randn(*inputs[0].shape, generator=gen)
    cap = tx.capture(graph, x)
    assert "<table" in cap._repr_html_() and "absmax" in str(cap)
    assert len(cap.table()) == len([e for e in cap.entries.values() if e.kind != "constant"])
    cmp = tx.compare(steps.final, engine, x)
    assert "0 diverged" in str(cmp) and "<table" in cmp._repr_html_()
    assert list(cmp.table().columns)[:2] == ["value", "op"]
    chk = tx.check_pipeline(graph, x, engine=False)
    assert "all ok" in str(chk) and "<table" in chk._repr_html_()
    with pytest.raises(trtjit.InputError):
        tx.capture("not a graph", x)
