"""Rich display for notebooks, with a plain-text form of everything for terminals and logs.

- ``GraphView`` (``graph.show(focus=..., radius=...)``, and ``Graph._repr_svg_``/``_repr_html_``): the IR
  as an SVG drawing, layered by topological depth (no graphviz needed), with op kinds colored, fused nodes
  listing the ops of their body, dtypes on every node, and a way to draw only part of a large graph.
- pass diffs (``diff_html``/``diff_text``), walked pipelines (``steps_html``/``steps_text``).
- ``kernel_source``: a kernel's Triton source, highlighted with pygments in notebooks.
- ``layer_table``: one row per kernel (pandas DataFrame); ``layer_table_text`` without pandas.
- captures, layer comparisons and pipeline checks from ``trtjit.explore``.
"""

from __future__ import annotations

import difflib
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trtjit.errors import GraphError, TrtjitError
from trtjit.ir import Graph, Value, dtype_name
from trtjit.ops import get_op

MAX_NODES = 300  # a graph larger than this is summarized, not drawn, unless asked for explicitly
MAX_LIST = 40  # list entries shown before "... (+n more)"

SHORT_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64", "int64": "i64",
               "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "bool"}
DTYPE_COLOR = {"fp32": "#3b6fb6", "fp16": "#2b8a4b", "bf16": "#16807f", "fp64": "#5a4fa3", "i8": "#b8562b",
               "u8": "#b8562b", "i32": "#7a6a2f", "i64": "#7a6a2f", "i16": "#7a6a2f", "bool": "#777777"}
KIND_FILL = {"input": "#d8f0d8", "constant": "#eeeeee", "source": "#eeeeee", "view": "#fdf6d8",
             "pointwise": "#dce8fb", "reduction": "#fde3c8", "gemm": "#f9d4d4", "conv": "#f9d4d4",
             "pool": "#e5dcfa", "composite": "#ececf8", "fused": "#f0e4fa"}
FUSED_FILL = {"fused_gemm": "#f9d4d4", "fused_reduction": "#fde3c8", "fused_pointwise": "#dce8fb"}
FUSED_STROKE = "#7b3fb5"
HIGHLIGHT = "#e8590c"
MONO = "ui-monospace,SFMono-Regular,Menlo,Consolas,DejaVu Sans Mono,monospace"
FONT = f"font-family:{MONO}"
CHAR_W = 6.7  # width of one character at 11px in a monospace font
LINE_H = 14


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _trunc(s: str, n: int = 44) -> str:
    if len(s) <= n:
        return s
    head = (n - 1) // 2
    return s[:head] + "…" + s[-(n - 1 - head):]


def _short(dtype: torch.dtype) -> str:
    name = dtype_name(dtype)
    return SHORT_DTYPE.get(name, name)


def _kind(op: str) -> str:
    if op in ("input", "constant"):
        return op
    try:
        return get_op(op).kind
    except Exception:
        return "source"


def _more(items: Sequence[Any], n: int = MAX_LIST) -> tuple[list[Any], int]:
    return list(items[:n]), max(0, len(items) - n)


def dataframe(rows: list[dict[str, Any]]) -> Any:
    """A pandas DataFrame of ``rows`` (pandas is needed only for this)."""
    try:
        import pandas as pd
    except ImportError:
        raise TrtjitError("this table needs pandas (pip install pandas); the text form needs nothing") from None
    return pd.DataFrame(rows)


def _text_table(columns: list[str], rows: list[list[Any]], max_width: int = 60) -> str:
    cells = [[str(c) for c in columns]] + [[_fmt(c) for c in r] for r in rows]
    widths = [min(max(len(r[i]) for r in cells), max_width) for i in range(len(columns))]
    return "\n".join("  ".join(_trunc(c, max_width).ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if math.isinf(v):
            return "inf"
        return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)


def _html_table(columns: list[str], rows: list[list[Any]], styles: list[str] | None = None,
                raw: Iterable[int] = ()) -> str:
    raw = set(raw)
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{_esc(c)}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        st = f" style='{styles[i]}'" if styles and styles[i] else ""
        tds = "".join(f"<td style='text-align:left;padding:2px 8px;vertical-align:top'>"
                      f"{c if j in raw else _esc(_fmt(c))}</td>" for j, c in enumerate(r))
        body.append(f"<tr{st}>{tds}</tr>")
    return (f"<table style='border-collapse:collapse;{FONT};font-size:12px'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


# ---------------------------------------------------------------------------------------- selection
def match_nodes(graph: Graph, key: str) -> list[str]:
    """Nodes that ``key`` names: the node itself; else the fused node whose body holds it; else every node
    whose name or source starts with it (``"encoder.norm1"`` finds ``encoder.norm1.mean``, ...)."""
    from trtjit.explore import body_nodes

    if key in graph:
        return [key]
    hits = [n for n in graph.topo_order() if key in body_nodes(graph, n)]
    if hits:
        return hits
    for starts in (lambda s: s == key or any(s.startswith(key + sep) for sep in ".:_/"),  # whole name parts
                   lambda s: s.startswith(key)):
        hits = [n for n in graph.topo_order() if starts(n) or starts(graph.node(n).source or "")]
        if hits:
            return hits
    close = difflib.get_close_matches(key, list(graph.nx.nodes), n=5, cutoff=0.5)
    raise GraphError(f"no node matches {key!r} (by name, fused body or name prefix)"
                     + (f"; similar names: {close}" if close else ""))


def select_nodes(graph: Graph, focus: str | Iterable[str] | None = None, radius: int = 2,
                 prefix: str | None = None, nodes: Iterable[str] | None = None) -> tuple[set[str], list[str]]:
    """(selected node names, focus nodes): the nodes within ``radius`` edges of ``focus``, plus those whose
    name or source starts with ``prefix``, plus ``nodes``; every node when none is given."""
    if focus is None and prefix is None and nodes is None:
        return set(graph.nx.nodes), []
    chosen: set[str] = set()
    seeds: list[str] = []
    if nodes is not None:
        for n in nodes:
            if n not in graph:
                raise GraphError(f"no node named {n!r} in graph")
            chosen.add(n)
    if prefix is not None:
        hits = [n for n in graph.nx if n.startswith(prefix) or (graph.node(n).source or "").startswith(prefix)]
        if not hits:
            raise GraphError(f"no node name or source starts with {prefix!r}")
        chosen.update(hits)
    if focus is not None:
        for key in [focus] if isinstance(focus, str) else list(focus):
            seeds.extend(m for m in match_nodes(graph, key) if m not in seeds)
        frontier, seen = list(seeds), set(seeds)
        for _ in range(max(radius, 0)):
            nxt = []
            for n in frontier:
                for m in [*graph.nx.predecessors(n), *graph.nx.successors(n)]:
                    if m not in seen:
                        seen.add(m)
                        nxt.append(m)
            frontier = nxt
        chosen |= seen
    return chosen, seeds


# ------------------------------------------------------------------------------------------- layout
@dataclass
class _Box:
    name: str
    lines: list[tuple[str, str]]  # (text, style): title, op, body, spec, note
    fill: str
    stroke: str = "#555555"
    stroke_width: float = 1.0
    dash: str = ""
    fused: bool = False
    badge: str = ""
    tooltip: str = ""
    w: float = 0.0
    h: float = 0.0
    x: float = 0.0  # center
    y: float = 0.0  # top
    depth: int = 0


def _node_box(graph: Graph, name: str, hidden_in: int, hidden_out: int, highlight: bool,
              outputs: dict[str, list[int]], max_body: int) -> _Box:
    from trtjit.explore import body_nodes

    n = graph.node(name)
    kind = _kind(n.op)
    lines: list[tuple[str, str]] = [(_trunc(name), "title")]
    body = n.attrs.get("body")
    fused = isinstance(body, Graph)
    if fused:
        inner = body_nodes(graph, name)
        lines.append((f"{n.op} ({len(inner)} ops)", "op"))
        shown, more = _more(inner, max_body)
        for b in shown:
            op = _inner_op(graph, name, b)
            lines.append((_trunc(f"  {op:<8} {b}", 44), "body"))
        if more:
            lines.append((f"  … +{more} more", "body"))
    elif n.op not in ("input", "constant"):
        attrs = {k: v for k, v in n.attrs.items() if not isinstance(v, Graph)}
        attr_s = " ".join(f"{k}={_fmt(v)}" for k, v in attrs.items())
        lines.append((_trunc(f"{n.op} {attr_s}".strip(), 44), "op"))
    elif n.op == "input":
        lines.append(("input", "op"))
    specs = [str(s) for s in n.outputs]
    spec = ", ".join(specs[:2]) + (f", … ({len(specs)} outputs)" if len(specs) > 2 else "")
    lines.append((_trunc(spec, 44), "spec"))
    if name in outputs:
        lines.append((f"→ output {', '.join(map(str, outputs[name]))}", "note"))
    if hidden_in or hidden_out:
        parts = ([f"{hidden_in} input{'s' if hidden_in > 1 else ''}"] if hidden_in else []) + \
                ([f"{hidden_out} user{'s' if hidden_out > 1 else ''}"] if hidden_out else [])
        lines.append((f"⋯ {' and '.join(parts)} not shown", "note"))
    dtypes = sorted({_short(s.dtype) for s in n.outputs})
    badge = dtypes[0] if len(dtypes) == 1 else ("mixed" if dtypes else "")
    fill = FUSED_FILL.get(n.op, KIND_FILL["fused"]) if fused else KIND_FILL.get(kind, "#ffffff")
    stroke, sw, dash = ("#555555", 1.0, "")
    if fused:
        stroke, sw = FUSED_STROKE, 1.6
    if kind in ("constant", "view"):
        dash = "4,2" if kind == "view" else ""
        stroke = "#999999"
    if name in outputs:
        sw = max(sw, 2.2)
    if highlight:
        stroke, sw = HIGHLIGHT, 3.0
    src = f"  # {n.source}" if n.source and n.source != name else ""
    tip = graph.format_node(name) if n.op != "constant" else f"%{name}: {spec} = constant(){src}"
    if fused:
        tip += "\n" + "\n".join("    " + line for line in str(body).splitlines())
    box = _Box(name, lines, fill, stroke, sw, dash, fused, badge, tip)
    badge_w = len(badge) * 6.2 + 10 if badge else 0
    widths = [len(t) * CHAR_W + (badge_w + 6 if st == "title" else 0) for t, st in lines]
    box.w = max(90.0, max(widths) + 16)
    box.h = len(lines) * LINE_H + 10
    return box


def _inner_op(graph: Graph, fused: str, name: str) -> str:
    from trtjit.explore import _body_op
    try:
        return _body_op(graph, fused, name)
    except Exception:
        return "?"


def _pava(desired: list[float], widths: list[float], gap: float) -> list[float]:
    """Centers as close as possible (least squares) to ``desired`` keeping boxes in order and apart."""
    offs, acc = [], 0.0
    for i, w in enumerate(widths):
        if i:
            acc += (widths[i - 1] + w) / 2 + gap
        offs.append(acc)
    ys = [d - o for d, o in zip(desired, offs)]
    blocks: list[list[float]] = []  # [sum, count]
    for y in ys:
        blocks.append([y, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    out: list[float] = []
    for s, c in blocks:
        out.extend([s / c] * int(c))
    return [y + o for y, o in zip(out, offs)]


def _layout(graph: Graph, order: list[str], boxes: dict[str, _Box], hgap: float = 22, vgap: float = 38,
            margin: float = 12, top: float = 0) -> tuple[float, float, list[tuple[str, str, int]]]:
    sel = set(order)
    edges = []
    for v in order:
        for u_val in graph.inputs_of(v):
            if u_val.node in sel:
                edges.append((u_val.node, v, u_val.index))
    edges = list(dict.fromkeys(edges))
    preds: dict[str, list[str]] = {n: [] for n in order}
    succs: dict[str, list[str]] = {n: [] for n in order}
    for u, v, _ in edges:
        preds[v].append(u)
        succs[u].append(v)
    depth: dict[str, int] = {}
    for n in order:
        depth[n] = max((depth[p] + 1 for p in preds[n]), default=0)
    for n in order:  # sources other than graph inputs sit just above their first consumer
        if not preds[n] and succs[n] and graph.node(n).op != "input":
            depth[n] = max(depth[n], min(depth[s] for s in succs[n]) - 1)
    layers: dict[int, list[str]] = {}
    for n in order:
        layers.setdefault(depth[n], []).append(n)
        boxes[n].depth = depth[n]
    levels = sorted(layers)
    pos = {n: float(i) for d in levels for i, n in enumerate(layers[d])}

    def sweep(down: bool) -> None:
        for d in (levels[1:] if down else list(reversed(levels[:-1]))):
            nbr = preds if down else succs
            bary = {n: (sum(pos[m] for m in nbr[n]) / len(nbr[n]) if nbr[n] else pos[n]) for n in layers[d]}
            layers[d].sort(key=lambda n: bary[n])
            for i, n in enumerate(layers[d]):
                pos[n] = float(i)

    for _ in range(4):
        sweep(True)
        sweep(False)
    # x: pack, then pull each layer toward its neighbors' centers (least squares, no overlap)
    for d in levels:
        x = 0.0
        for n in layers[d]:
            boxes[n].x = x + boxes[n].w / 2
            x += boxes[n].w + hgap
    for it in range(6):
        down = it % 2 == 0
        for d in (levels[1:] if down else list(reversed(levels[:-1]))):
            nbr = preds if down else succs
            lay = layers[d]
            want = [sum(boxes[m].x for m in nbr[n]) / len(nbr[n]) if nbr[n] else boxes[n].x for n in lay]
            for n, x in zip(lay, _pava(want, [boxes[n].w for n in lay], hgap)):
                boxes[n].x = x
    left = min(b.x - b.w / 2 for b in boxes.values())
    y = top + margin
    for d in levels:
        h = max(boxes[n].h for n in layers[d])
        for n in layers[d]:
            boxes[n].x += margin - left
            boxes[n].y = y
        y += h + vgap
    width = max(b.x + b.w / 2 for b in boxes.values()) + margin
    return width, y - vgap + margin, edges


def _svg(graph: Graph, names: set[str], highlight: set[str], constants: bool, title: str, max_body: int) -> str:
    order = [n for n in graph.topo_order() if n in names and (constants or graph.node(n).op != "constant")]
    if not order:
        return ("<svg xmlns='http://www.w3.org/2000/svg' width='200' height='30'><text x='8' y='20' "
                f"font-family='{MONO}' font-size='12px'>(nothing to draw)</text></svg>")
    drawn = set(order)
    outputs: dict[str, list[int]] = {}
    for i, v in enumerate(graph.outputs):
        outputs.setdefault(v.node, []).append(i)
    boxes = {}
    for n in order:
        hin = len([p for p in graph.producers(n) if p not in drawn and (constants or graph.node(p).op != "constant")])
        hout = len([c for c in graph.consumers(n) if c not in drawn])
        boxes[n] = _node_box(graph, n, hin, hout, n in highlight, outputs, max_body)
    head = 22 if title else 0
    width, height, edges = _layout(graph, order, boxes, top=head)
    width = max(width, len(title) * CHAR_W + 24)
    multi = {n for n in order if len(graph.node(n).outputs) > 1}
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
           f"viewBox='0 0 {width:.0f} {height:.0f}' font-family='{MONO}' font-size='11px'>",
           "<defs><marker id='trtjit-arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' "
           "markerHeight='7' orient='auto-start-reverse'><path d='M 0 0 L 10 5 L 0 10 z' fill='#666'/></marker>"
           "</defs>"]
    if title:
        out.append(f"<text x='12' y='16' style='font-size:12px;font-weight:bold'>{_esc(title)}</text>")
    for u, v, idx in edges:
        a, b = boxes[u], boxes[v]
        x1, y1, x2, y2 = a.x, a.y + a.h, b.x, b.y
        dy = max((y2 - y1) / 2, 12)
        out.append(f"<path d='M {x1:.1f} {y1:.1f} C {x1:.1f} {y1 + dy:.1f}, {x2:.1f} {y2 - dy:.1f}, {x2:.1f} "
                   f"{y2 - 1:.1f}' fill='none' stroke='#888' stroke-width='1.1' marker-end='url(#trtjit-arrow)'>"
                   f"<title>{_esc(f'{Value(u, idx)} -> %{v}')}</title></path>")
        if u in multi:
            out.append(f"<text x='{x1 + 3:.1f}' y='{y1 + 11:.1f}' style='font-size:9px' fill='#666'>{idx}</text>")
    for n in order:
        b = boxes[n]
        x0 = b.x - b.w / 2
        out.append(f"<g><title>{_esc(b.tooltip)}</title>")
        if b.fused:
            out.append(f"<rect x='{x0 - 3:.1f}' y='{b.y - 3:.1f}' width='{b.w + 6:.1f}' height='{b.h + 6:.1f}' "
                       f"rx='6' fill='none' stroke='{FUSED_STROKE}' stroke-width='1'/>")
        dash = f" stroke-dasharray='{b.dash}'" if b.dash else ""
        out.append(f"<rect x='{x0:.1f}' y='{b.y:.1f}' width='{b.w:.1f}' height='{b.h:.1f}' rx='4' fill='{b.fill}' "
                   f"stroke='{b.stroke}' stroke-width='{b.stroke_width}'{dash}/>")
        for i, (text, st) in enumerate(b.lines):
            style = {"title": "font-weight:bold", "op": "", "body": "font-size:10px;fill:#3d2a55",
                     "spec": "fill:#333", "note": "font-size:10px;font-style:italic;fill:#666"}[st]
            out.append(f"<text x='{x0 + 8:.1f}' y='{b.y + 15 + i * LINE_H:.1f}' style='{style}' "
                       f"xml:space='preserve'>{_esc(text)}</text>")
        if b.badge:
            bw = len(b.badge) * 6.2 + 10
            col = DTYPE_COLOR.get(b.badge, "#777777")
            out.append(f"<rect x='{x0 + b.w - bw - 4:.1f}' y='{b.y + 4:.1f}' width='{bw:.1f}' height='13' rx='6' "
                       f"fill='{col}'/><text x='{x0 + b.w - bw / 2 - 4:.1f}' y='{b.y + 14:.1f}' "
                       f"text-anchor='middle' style='font-size:9.5px;font-weight:bold' fill='white'>"
                       f"{_esc(b.badge)}</text>")
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


_LEGEND = [("input", KIND_FILL["input"]), ("weight", KIND_FILL["constant"]), ("view (no kernel)", KIND_FILL["view"]),
           ("pointwise", KIND_FILL["pointwise"]), ("reduction", KIND_FILL["reduction"]),
           ("gemm / conv", KIND_FILL["gemm"]), ("pool", KIND_FILL["pool"])]


class GraphView:
    """A drawable view of a graph or of part of it: SVG in notebooks, text in terminals.

    ``focus`` (node names, names of ops inside fused nodes, or name prefixes) with ``radius`` edges around
    them, ``prefix`` (every node whose name or source starts with it) and ``nodes`` (explicit names) select
    what to draw; the whole graph otherwise. ``constants=False`` hides weights; ``highlight`` marks nodes
    (the focus nodes by default); graphs with more than ``max_nodes`` nodes are summarized unless you pass
    ``max_nodes=None``.
    """

    def __init__(self, graph: Graph, focus: str | Iterable[str] | None = None, radius: int = 2,
                 prefix: str | None = None, nodes: Iterable[str] | None = None, constants: bool = True,
                 highlight: Iterable[str] | None = None, max_nodes: int | None = MAX_NODES, max_body: int = 8,
                 title: str | None = None) -> None:
        self.graph = graph
        self.names, self.focus = select_nodes(graph, focus, radius, prefix, nodes)
        keys = [] if focus is None else [focus] if isinstance(focus, str) else list(focus)
        self.highlight = set(highlight) if highlight is not None else set(self.focus)
        self.constants = constants
        self.max_nodes = max_nodes
        self.max_body = max_body
        partial = len(self.names) < len(graph)
        what = (f"{len(self.names)} of {len(graph)} nodes" if partial else f"{len(graph)} nodes")
        around = f" around {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}" if keys else ""
        self.title = title if title is not None else (
            what + around + (f" with prefix {prefix!r}" if prefix else "") + (f" (radius {radius})" if keys else ""))

    @property
    def too_big(self) -> bool:
        return self.max_nodes is not None and len(self.names) > self.max_nodes

    @property
    def svg(self) -> str:
        """The SVG text (drawn even when the view is larger than ``max_nodes``)."""
        return _svg(self.graph, self.names, self.highlight, self.constants, self.title, self.max_body)

    def save(self, path: str) -> str:
        """Write the SVG to ``path`` (open it in any browser)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.svg)
        return path

    def _repr_svg_(self) -> str | None:
        return None if self.too_big else self.svg

    def _repr_html_(self) -> str:
        if self.too_big:
            counts = sorted(self.graph.subgraph(self.names).op_counts().items(), key=lambda kv: -kv[1])
            ops = ", ".join(f"{op} x{c}" for op, c in counts[:12])
            return (f"<div style='{FONT};font-size:12px'><b>{_esc(self.title)}</b>: too many to draw "
                    f"(max_nodes={self.max_nodes}). Ops: {_esc(ops)}.<br>Draw part of it with "
                    "<code>graph.show(focus=\"layer.name\", radius=2)</code> or <code>graph.show(prefix=\"encoder.\")"
                    "</code>, or all of it with <code>graph.show(max_nodes=None)</code>.</div>")
        legend = " ".join(f"<span style='background:{c};border:1px solid #999;padding:0 4px;margin-right:4px'>"
                          f"{_esc(k)}</span>" for k, c in _LEGEND)
        legend += (f" <span style='border:2px solid {FUSED_STROKE};padding:0 4px;margin-right:4px'>fused kernel</span>"
                   f"<span style='border:2px solid {HIGHLIGHT};padding:0 4px'>highlighted</span>")
        return (f"<div style='overflow:auto;max-height:900px;border:1px solid #ddd;padding:4px'>{self.svg}</div>"
                f"<div style='{FONT};font-size:11px;margin-top:3px'>{legend} &nbsp;(hover a node for details)</div>")

    def __str__(self) -> str:
        lines = [f"# {self.title}"]
        for name in self.graph.topo_order():
            if name not in self.names or (not self.constants and self.graph.node(name).op == "constant"):
                continue
            mark = "* " if name in self.highlight else ""
            lines.append(mark + self.graph.format_node(name))
            body = self.graph.node(name).attrs.get("body")
            if isinstance(body, Graph) and (name in self.highlight or len(self.names) < len(self.graph)):
                lines.extend("    | " + ln for ln in str(body).splitlines())
        outs = [str(v) for v in self.graph.outputs if v.node in self.names]
        if outs:
            lines.append("return " + ", ".join(outs))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<trtjit GraphView: {self.title}>"


def graph_svg(graph: Graph, **kwargs: Any) -> str:
    """The SVG drawing of ``graph`` (keyword arguments as for ``GraphView``)."""
    return GraphView(graph, **kwargs).svg


def graph_svg_or_none(graph: Graph) -> str | None:
    return GraphView(graph)._repr_svg_()


# -------------------------------------------------------------------------------------- pass diffs
def _diff_head(d: Any) -> tuple[str, str]:
    rec = d.record
    title = d.title or "graph diff"
    if rec is not None:
        head = (f"{title}: {d.before_nodes} -> {d.after_nodes} nodes (+{len(d.added)} added, -{len(d.removed)} "
                f"removed, {len(d.fused)} fused, {len(d.changed)} changed), {rec.seconds * 1e3:.1f} ms")
    else:
        head = (f"{title}: {d.before_nodes} -> {d.after_nodes} nodes (+{len(d.added)} added, -{len(d.removed)} "
                f"removed, {len(d.fused)} fused, {len(d.changed)} changed)")
    doc = ""
    if rec is not None:
        from trtjit.passmanager import load_pass
        try:
            doc = load_pass(rec.name).doc.split("\n\n")[0].replace("\n", " ")
        except Exception:
            doc = ""
    return head, doc


def diff_text(d: Any) -> str:
    """Plain-text form of a ``trtjit.explore.GraphDiff``."""
    head, doc = _diff_head(d)
    lines = [head]
    if doc:
        lines.append(f"  {doc}")

    def section(name: str, items: list[str]) -> None:
        if not items:
            return
        shown, more = _more(items)
        lines.append(f"{name} ({len(items)}):")
        lines.extend(f"  {s}" for s in shown)
        if more:
            lines.append(f"  ... (+{more} more)")

    section("fused", [f"{k} = {d.fused_ops.get(k, '')}   <- {', '.join(v)}" for k, v in d.fused.items()])
    section("added", d.added)
    section("removed", d.removed)
    section("changed", [f"{k}: {v}" for k, v in d.changed.items()])
    section("replaced (consumers now read)", [f"{k} -> {v}" for k, v in d.replaced.items()])
    if d.record is not None:
        section("rules fired", [f"{r} x{n}" for r, n in d.rules_fired.items()])
        section("where they fired", [f"{e['node']}: {e['rule']}" + (f" ({e['detail']})" if e["detail"] else "")
                                     for e in d.fired])
        section("rules not fired", [f"{e['node']}: {e['rule']} -- {e['detail']}" for e in d.skipped])
    if d.empty and not (d.record and d.record.events):
        lines.append("(no change)")
    return "\n".join(lines)


def diff_html(d: Any) -> str:
    """HTML form of a ``trtjit.explore.GraphDiff``."""
    head, doc = _diff_head(d)
    parts = [f"<div style='{FONT};font-size:12px'><b>{_esc(head)}</b>"]
    if doc:
        parts.append(f"<div style='color:#555;margin:2px 0 6px 0'>{_esc(doc)}</div>")

    def section(name: str, columns: list[str], rows: list[list[Any]], open_: bool = True,
                styles: list[str] | None = None) -> None:
        if not rows:
            return
        shown, more = _more(rows)
        extra = f"<div>… (+{more} more)</div>" if more else ""
        parts.append(f"<details{' open' if open_ else ''}><summary>{_esc(name)} ({len(rows)})</summary>"
                     f"{_html_table(columns, shown, styles[:len(shown)] if styles else None)}{extra}</details>")

    section("fused", ["fused node", "ops", "absorbed nodes"],
            [[k, d.fused_ops.get(k, ""), ", ".join(v)] for k, v in d.fused.items()],
            styles=["background:#f3eafb"] * len(d.fused))
    section("added", ["node"], [[n] for n in d.added], styles=["background:#e6f4e6"] * len(d.added))
    section("removed", ["node"], [[n] for n in d.removed], styles=["background:#fbe7e7"] * len(d.removed))
    section("changed", ["node", "change"], [[k, v] for k, v in d.changed.items()])
    section("replaced (consumers now read)", ["old value", "new value"], [[k, v] for k, v in d.replaced.items()],
            open_=len(d.replaced) <= 12)
    if d.record is not None:
        section("rules fired", ["rule", "times"], [[r, n] for r, n in d.rules_fired.items()],
                styles=["background:#e6f4e6"] * len(d.rules_fired))
        section("where they fired", ["node", "rule", "detail"], [[e["node"], e["rule"], e["detail"]] for e in d.fired],
                open_=len(d.fired) <= 12)
        section("rules not fired, and why", ["node", "rule", "why not"],
                [[e["node"], e["rule"], e["detail"]] for e in d.skipped], open_=len(d.skipped) <= 12)
    if d.empty and not (d.record and d.record.events):
        parts.append("<div>(no change)</div>")
    parts.append("</div>")
    return "".join(parts)


def _step_row(s: Any) -> list[Any]:
    fired = ", ".join(f"{r} x{n}" for r, n in s.rules_fired.items())
    return [s.index, s.name, f"{s.diff.before_nodes} -> {s.diff.after_nodes}", len(s.added), len(s.removed),
            len(s.fused), len(s.changed), fired or "-", f"{s.record.seconds * 1e3:.1f}"]


_STEP_COLS = ["#", "pass", "nodes", "added", "removed", "fused", "changed", "rules fired", "ms"]


def steps_text(steps: list[Any], remaining: list[str]) -> str:
    out = _text_table(_STEP_COLS, [_step_row(s) for s in steps], max_width=70)
    if remaining:
        out += f"\nstill to run: {', '.join(remaining)}"
    return out


def steps_html(steps: list[Any], remaining: list[str]) -> str:
    styles = ["" if s.diff.empty else "background:#f6f1fb" for s in steps]
    out = f"<div style='{FONT};font-size:12px'>" + _html_table(_STEP_COLS, [_step_row(s) for s in steps], styles)
    if remaining:
        out += f"<div>still to run: {_esc(', '.join(remaining))}</div>"
    return out + "</div>"


# ------------------------------------------------------------------------------------------ kernels
class KernelSource:
    """One kernel's Triton source: highlighted in notebooks (pygments), plain text elsewhere."""

    def __init__(self, kernel: Any, ops: list[str] | None = None) -> None:
        self.kernel = kernel
        self.ops = ops or []

    @property
    def header(self) -> str:
        k = self.kernel
        fuses = " + ".join(self.ops) if self.ops else ", ".join(k.covers)
        return (f"kernel {k.name} (template {k.template}, node {k.node}): {fuses}; grid "
                f"{'x'.join(map(str, k.grid))}, {k.num_warps} warps")

    def __str__(self) -> str:
        return f"# {self.header}\n{self.kernel.source}"

    def _repr_html_(self) -> str:
        try:
            from pygments import highlight
            from pygments.formatters import HtmlFormatter
            from pygments.lexers import PythonLexer
            code = highlight(self.kernel.source, PythonLexer(), HtmlFormatter(noclasses=True, style="default"))
        except ImportError:
            code = f"<pre>{_esc(self.kernel.source)}</pre>"
        return f"<div style='{FONT};font-size:12px'><b>{_esc(self.header)}</b></div>{code}"

    def __repr__(self) -> str:
        return str(self)


class KernelSources(list):
    """Several kernels' sources, shown one after another."""

    def __str__(self) -> str:
        return "\n\n".join(str(k) for k in self)

    def _repr_html_(self) -> str:
        return "".join(k._repr_html_() for k in self)

    def __repr__(self) -> str:
        return str(self)


def _ops_of(engine: Any, k: Any) -> list[str]:
    node = engine.graph.node(k.node)
    body = node.attrs.get("body")
    return [body.node(n).op if isinstance(body, Graph) and n in body else node.op for n in k.covers]


def kernel_source(obj: Any, name: str | int | None = None) -> KernelSource | KernelSources:
    """The source of kernel ``name`` (kernel name, index, or the IR node it computes) of an engine, or of a
    ``KernelSpec``; all kernels of the engine when ``name`` is None."""
    from trtjit.codegen.common import KernelSpec

    if isinstance(obj, KernelSpec):
        return KernelSource(obj)
    kernels = obj.kernels
    if name is None:
        return KernelSources(KernelSource(k, _ops_of(obj, k)) for k in kernels)
    if isinstance(name, int):
        k = kernels[name]
    else:
        hits = [k for k in kernels if k.name == name] or [k for k in kernels if k.node == name] or \
               [k for k in kernels if name in k.covers]
        if not hits:
            close = difflib.get_close_matches(name, [k.name for k in kernels], n=5, cutoff=0.4)
            raise TrtjitError(f"no kernel named {name!r} (or computing node {name!r})"
                              + (f"; similar kernels: {close}" if close else ""))
        k = hits[0]
    return KernelSource(k, _ops_of(obj, k))


# --------------------------------------------------------------------------------------- layer table
def layer_rows(engine: Any, profile: list[Any] | None = None, inputs: Sequence[torch.Tensor] | None = None,
               iters: int = 10) -> list[dict[str, Any]]:
    from trtjit.dynamic import hint

    """One dict per kernel: kernel, template, node, fused_ops, n_ops, dtype, precision, grid, time_ms
    (NaN unless profiled: pass ``inputs`` to profile now, or a ``profile()`` result), output_bytes, buffer
    (where its outputs live: arena offset or a fresh output tensor), flops, rules."""
    if inputs:
        profile = engine.profile(*inputs, iters=iters)
    times = {p.name: p.ms for p in profile or []}
    offsets = engine.graph.meta.get("memory_plan", {}).get("offsets", {})
    rows = []
    for k in engine.kernels:
        node = engine.graph.node(k.node)
        ops = _ops_of(engine, k)
        dts = sorted({_short(s.dtype) for s in node.outputs})
        prec = "/".join(dts)
        if k.template == "gemm" and engine.options.tf32 and dts == ["fp32"]:
            prec = "tf32"
        off = offsets.get(f"{k.node}:0")
        rows.append({"kernel": k.name, "template": k.template, "node": k.node, "fused_ops": " + ".join(ops),
                     "n_ops": len(ops), "dtype": ", ".join(dtype_name(s.dtype) for s in node.outputs),
                     "precision": prec, "grid": "x".join(map(str, k.grid)),
                     "time_ms": float(times[k.name]) if k.name in times else math.nan,
                     "output_bytes": sum(hint(s.nbytes) for s in node.outputs),  # a dynamic batch at opt
                     "buffer": f"arena+{off}" if off is not None else "output", "flops": k.flops,
                     "rules": ", ".join(node.attrs.get("rules", []) or [])})
    return rows


def layer_table(engine: Any, profile: list[Any] | None = None, inputs: Sequence[torch.Tensor] | None = None,
                iters: int = 10) -> Any:
    """``layer_rows`` as a pandas DataFrame, one row per kernel in launch order."""
    return dataframe(layer_rows(engine, profile, inputs, iters))


def layer_table_text(engine: Any, profile: list[Any] | None = None, inputs: Sequence[torch.Tensor] | None = None,
                     iters: int = 10) -> str:
    """``layer_rows`` as a text table (no pandas needed)."""
    rows = layer_rows(engine, profile, inputs, iters)
    cols = ["kernel", "template", "fused_ops", "precision", "grid", "time_ms", "output_bytes", "buffer"]
    return _text_table(cols, [[r[c] for c in cols] for r in rows], max_width=48)


# ------------------------------------------------------------------------- captures and comparisons
_CAP_COLS = ["value", "op", "where", "shape", "dtype", "min", "max", "mean", "absmax", "nonfinite"]


def capture_text(cap: Any, limit: int = 200) -> str:
    rows, more = _more(cap.rows(), limit)
    out = f"{cap!r}\n" + _text_table(_CAP_COLS, [[r[c] for c in _CAP_COLS] for r in rows], max_width=44)
    return out + (f"\n... (+{more} more)" if more else "")


def capture_html(cap: Any, limit: int = 200) -> str:
    rows, more = _more(cap.rows(), limit)
    styles = ["background:#fbe7e7" if r["nonfinite"] else "" for r in rows]
    return (f"<div style='{FONT};font-size:12px'><b>{_esc(repr(cap))}</b>"
            + _html_table(_CAP_COLS, [[r[c] for c in _CAP_COLS] for r in rows], styles)
            + (f"<div>… (+{more} more)</div>" if more else "") + "</div>")


_CMP_COLS = ["value", "op", "where", "shape", "dtype", "max_rel_error", "tol", "status"]


def _cmp_summary(c: Any) -> list[str]:
    first = c.first_divergence
    lines = [f"{c.reference} vs {c.candidate}: {len(c.rows)} values matched by name, "
             f"{len(c.diverged)} diverged"]
    if first is not None:
        lines.append(f"first divergence: {first}")
    bad_out = [o for o in c.outputs if o.diverged]
    lines.append("outputs: " + ("all agree" if not bad_out else "; ".join(str(o) for o in bad_out)))
    if c.only_reference:
        shown, more = _more(c.only_reference, 8)
        lines.append(f"only in reference ({len(c.only_reference)}): {', '.join(shown)}{' ...' if more else ''}")
    if c.only_candidate:
        shown, more = _more(c.only_candidate, 8)
        lines.append(f"only in candidate ({len(c.only_candidate)}): {', '.join(shown)}{' ...' if more else ''}")
    return lines


def comparison_text(c: Any, limit: int = 200) -> str:
    rows, more = _more(c.rows_dicts(), limit)
    table = _text_table(_CMP_COLS, [[r[k] for k in _CMP_COLS] for r in rows], max_width=44)
    return "\n".join(_cmp_summary(c)) + "\n" + table + (f"\n... (+{more} more)" if more else "")


def comparison_html(c: Any, limit: int = 200) -> str:
    rows, more = _more(c.rows_dicts(), limit)
    first = c.first_divergence
    styles = []
    for r in rows:
        if first is not None and r["value"] == first.name:
            styles.append("background:#f8c9c9;font-weight:bold")
        elif r["status"] == "diverged":
            styles.append("background:#fbe7e7")
        elif r["status"] != "ok":
            styles.append("color:#888")
        else:
            styles.append("")
    summary = "".join(f"<div>{_esc(s)}</div>" for s in _cmp_summary(c))
    return (f"<div style='{FONT};font-size:12px'>{summary}"
            + _html_table(_CMP_COLS, [[r[k] for k in _CMP_COLS] for r in rows], styles)
            + (f"<div>… (+{more} more)</div>" if more else "") + "</div>")


_CHECK_COLS = ["step", "pass", "nodes", "max_rel_error", "ok"]


def pipeline_check_text(p: Any) -> str:
    bad = p.first_bad
    head = (f"outputs vs the unoptimized graph after each pass (tol {p.tol:.0e}): "
            + (f"first bad: {bad['pass']} (step {bad['step']})" if bad else "all ok"))
    return head + "\n" + _text_table(_CHECK_COLS, [[r[c] for c in _CHECK_COLS] for r in p.rows])


def pipeline_check_html(p: Any) -> str:
    bad = p.first_bad
    head = (f"outputs vs the unoptimized graph after each pass (tol {p.tol:.0e}): "
            + (f"first bad: {bad['pass']} (step {bad['step']})" if bad else "all ok"))
    styles = ["" if r["ok"] else "background:#fbe7e7" for r in p.rows]
    return (f"<div style='{FONT};font-size:12px'><b>{_esc(head)}</b>"
            + _html_table(_CHECK_COLS, [[r[c] for c in _CHECK_COLS] for r in p.rows], styles) + "</div>")


__all__ = ["GraphView", "KernelSource", "KernelSources", "capture_html", "capture_text", "comparison_html",
           "comparison_text", "dataframe", "diff_html", "diff_text", "graph_svg", "kernel_source", "layer_rows",
           "layer_table", "layer_table_text", "match_nodes", "select_nodes", "steps_html", "steps_text"]

