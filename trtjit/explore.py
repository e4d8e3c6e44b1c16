"""Explore the compiler step by step: for notebooks and for finding where numerics go wrong.

    import trtjit.explore as tx

    graph = tx.import_torch(model, (x,))          # the IR before any pass
    step = tx.run_pass(graph, "decompose")        # graph untouched; step.after is the new graph
    step                                          # what changed: nodes added/removed/fused, rules fired
    walker = tx.PassWalker(graph, opt_level=2)    # one pass at a time: walker.step(), walker.run_to(...)
    cap = tx.capture(graph, (x,))                 # every intermediate tensor, by value name
    cmp = tx.compare(graph, engine, (x,))         # layer by layer; cmp.first_divergence

Values are matched by name. A fused node's outputs are the values of its body's output nodes, which keep
the names of the nodes that were fused (``trtjit.fusion.fuse_group``), so ``%act`` means the same tensor
before and after ``act`` was fused into a GEMM epilogue. A pass that rewrites a node in place under the
same name (BatchNorm folding scales a conv's weights) changes what that name holds: compare across such a
pass by the graph outputs (``check_pipeline``) rather than by layer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from trtjit.errors import InputError, TrtjitError
from trtjit.interpreter import run_graph
from trtjit.ir import Graph, Value
from trtjit.options import BuildOptions
from trtjit.passmanager import Pass, PassContext, PassRecord, load_pass
from trtjit.passmanager import run_pass as _run_pass
from trtjit.pipeline import PIPELINES

# Relative-error tolerance per dtype (max|a-b| / max|a|), as in the test suite; integer values must match.
TOL: dict[torch.dtype, float] = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2,
                                 torch.bfloat16: 2e-2}
_PRECISION_TOL = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 2e-2}


# ----------------------------------------------------------------------------------------------- graphs
def import_torch(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor) -> Graph:
    """The IR of ``model`` as ``trtjit.compile`` imports it (eval mode, before any pass)."""
    from trtjit.builder import _check_inputs
    from trtjit.frontend_torch import import_module

    args = _check_inputs(model, example_inputs)
    was_training = model.training
    model.eval()
    try:
        return import_module(model, args)
    finally:
        model.train(was_training)


def copy_graph(graph: Graph) -> Graph:
    """A copy a pass may rewrite freely: node records, attributes, meta and fused bodies are copied;
    constant tensors are shared (passes replace constants, they never write into them)."""
    g = graph.copy()
    _deepen(g, graph)
    return g


def _deepen(g: Graph, orig: Graph) -> None:
    g.meta = copy.deepcopy(orig.meta)
    for name in g.nx:
        n = g.node(name)
        n.attrs = {k: (v if isinstance(v, Graph) else copy.deepcopy(v)) for k, v in n.attrs.items()}
        for k, v in n.attrs.items():
            if isinstance(v, Graph):
                _deepen(v, orig.node(name).attrs[k])


def body_nodes(graph: Graph, name: str) -> list[str]:
    """Names of the compute nodes fused into node ``name`` (empty for a node that is not fused)."""
    body = graph.node(name).attrs.get("body")
    if not isinstance(body, Graph):
        return []
    out: list[str] = []
    for n in body:
        if n.op in ("input", "constant"):
            continue
        out.extend(body_nodes(body, n.name) or [n.name])
    return out


def canonical(graph: Graph, v: Value) -> Value:
    """The value ``v`` stands for before fusion: a fused node's i-th output is its body's i-th output."""
    body = graph.node(v.node).attrs.get("body")
    if isinstance(body, Graph) and v.index < len(body.outputs):
        return canonical(body, body.outputs[v.index])
    return v


# ------------------------------------------------------------------------------------------ pass diffs
@dataclass
class GraphDiff:
    """What differs between two graphs (usually before and after one pass), with the pass's own record
    when there is one: rules fired and, for those that did not, why."""

    before_nodes: int
    after_nodes: int
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    fused: dict[str, list[str]] = field(default_factory=dict)
    fused_ops: dict[str, str] = field(default_factory=dict)
    changed: dict[str, str] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)
    record: PassRecord | None = None
    title: str = ""

    @property
    def absorbed(self) -> list[str]:
        """Nodes of the old graph that now live inside a fused node."""
        return sorted({n for names in self.fused.values() for n in names})

    @property
    def fired(self) -> list[dict[str, Any]]:
        return [e for e in self.record.events if e["fired"]] if self.record else []

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return [e for e in self.record.events if not e["fired"]] if self.record else []

    @property
    def rules_fired(self) -> dict[str, int]:
        """Rule name -> how many times it fired."""
        out: dict[str, int] = {}
        for e in self.fired:
            out[e["rule"]] = out.get(e["rule"], 0) + 1
        return out

    @property
    def touched(self) -> list[str]:
        """Nodes of the new graph that this change created or rewrote (to highlight in a drawing)."""
        return sorted(set(self.added) | set(self.fused) | set(self.changed))

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.fused or self.changed)

    def __str__(self) -> str:
        from trtjit.display import diff_text
        return diff_text(self)

    def _repr_html_(self) -> str:
        from trtjit.display import diff_html
        return diff_html(self)


def _inputs_str(g: Graph, name: str) -> list[str]:
    return [str(v) for v in g.inputs_of(name)]


def diff_graphs(before: Graph, after: Graph, record: PassRecord | None = None, title: str = "") -> GraphDiff:
    """Nodes added, removed (not counting those fused), fused (new fused node -> the nodes in its body that
    were top-level nodes before) and changed in place (op, inputs, output specs, attributes, constant value)."""
    b, a = set(before.nx.nodes), set(after.nx.nodes)
    diff = GraphDiff(len(before), len(after), record=record, title=title or (record.name if record else ""))
    for name in after.topo_order():
        n = after.node(name)
        if not isinstance(n.attrs.get("body"), Graph):
            continue
        inner = body_nodes(after, name)
        old = before.node(name) if name in b else None
        if old is not None and old.op == n.op and body_nodes(before, name) == inner:
            continue
        diff.fused[name] = [x for x in inner if x in b and (x not in a or x == name)]
        diff.fused_ops[name] = " + ".join(_body_op(after, name, x) for x in inner)
    absorbed = set(diff.absorbed)
    diff.removed = sorted(x for x in b - a if x not in absorbed)
    diff.added = sorted(x for x in a - b if x not in diff.fused)

    def rewired(old: list[Value], new: list[Value]) -> bool:
        """True when every differing input is explained: it now reads the fused node holding the old value,
        or the old value's node is gone and this is what replaced it (``replace_all_uses``)."""
        ok = len(old) == len(new)
        for o, v in zip(old, new):
            if o == v or canonical(after, v) == o:
                continue
            if o.node not in a:
                diff.replaced.setdefault(str(o), str(v))
            else:
                ok = False
        return ok

    rewired(list(before.outputs), list(after.outputs))
    for name in after.topo_order():
        if name not in b or name in diff.fused:
            continue
        o, n = before.node(name), after.node(name)
        what = []
        if o.op != n.op:
            what.append(f"{o.op} -> {n.op}")
        elif not rewired(before.inputs_of(name), after.inputs_of(name)):
            what.append(f"inputs ({', '.join(_inputs_str(before, name))}) -> ({', '.join(_inputs_str(after, name))})")
        if [str(s) for s in o.outputs] != [str(s) for s in n.outputs]:
            what.append(f"{', '.join(map(str, o.outputs))} -> {', '.join(map(str, n.outputs))}")
        if o.op == n.op:
            keys = [k for k in sorted(set(o.attrs) | set(n.attrs))
                    if not isinstance(o.attrs.get(k), Graph) and o.attrs.get(k) != n.attrs.get(k)]
            what.extend(f"{k}={o.attrs.get(k)} -> {n.attrs.get(k)}" for k in keys)
            if o.op == "constant" and o.value is not n.value and not what and not torch.equal(o.value, n.value):
                what.append("constant value changed")
        if what:
            diff.changed[name] = "; ".join(what)
    return diff


def _body_op(graph: Graph, fused: str, name: str) -> str:
    body = graph.node(fused).attrs["body"]
    if name in body:
        return body.node(name).op
    for n in body:
        if isinstance(n.attrs.get("body"), Graph) and name in body_nodes(body, n.name):
            return _body_op(body, n.name, name)
    return "?"


@dataclass
class PassStep:
    """One pass applied to a copy of a graph: ``before`` is untouched, ``after`` is the result."""

    index: int
    name: str
    doc: str
    before: Graph
    after: Graph
    record: PassRecord
    diff: GraphDiff

    @property
    def graph(self) -> Graph:
        return self.after

    added = property(lambda self: self.diff.added)
    removed = property(lambda self: self.diff.removed)
    fused = property(lambda self: self.diff.fused)
    changed = property(lambda self: self.diff.changed)
    fired = property(lambda self: self.diff.fired)
    skipped = property(lambda self: self.diff.skipped)
    rules_fired = property(lambda self: self.diff.rules_fired)

    def summary(self) -> str:
        return f"{self.index}. {self.record.summary()}"

    def show(self, radius: int = 1, **kwargs: Any) -> Any:
        """Draw the new graph around what this pass touched (touched nodes highlighted); the whole
        graph when nothing was touched."""
        from trtjit.display import GraphView

        touched = [n for n in self.diff.touched if n in self.after]
        if not touched:
            return GraphView(self.after, **kwargs)
        return GraphView(self.after, focus=touched, radius=radius, highlight=touched, **kwargs)

    def show_before(self, radius: int = 1, **kwargs: Any) -> Any:
        """Draw the old graph around the nodes this pass removed, fused or changed (highlighted)."""
        from trtjit.display import GraphView

        gone = [n for n in [*self.diff.removed, *self.diff.absorbed, *self.diff.changed] if n in self.before]
        if not gone:
            return GraphView(self.before, **kwargs)
        return GraphView(self.before, focus=gone, radius=radius, highlight=gone, **kwargs)

    def __str__(self) -> str:
        return str(self.diff)

    def _repr_html_(self) -> str:
        return self.diff._repr_html_()

    def __repr__(self) -> str:
        return f"<PassStep {self.summary()}>"


def _options(options: BuildOptions | None, opt_level: int | None, overrides: dict[str, Any]) -> BuildOptions:
    if opt_level is not None:
        overrides = {**overrides, "opt_level": opt_level}
    return BuildOptions.make(options, **overrides)


def _load(p: str | Pass) -> Pass:
    return p if isinstance(p, Pass) else load_pass(p)


def run_pass(graph: Graph, pass_: str | Pass, options: BuildOptions | None = None, index: int = 0,
             **overrides: Any) -> PassStep:
    """Run one pass (by name, e.g. ``"fuse_pointwise"``) on a copy of ``graph`` and return the step:
    the new graph (``.after``), the pass's record and the diff. ``graph`` itself is not changed."""
    p = _load(pass_)
    ctx = PassContext(BuildOptions.make(options, **overrides))
    after = _run_pass(p, copy_graph(graph), ctx, index)
    rec = ctx.log[-1]
    return PassStep(index, p.name, p.doc, graph, after, rec, diff_graphs(graph, after, rec))


class PassWalker:
    """Walk an optimization level's pipeline one pass at a time.

        w = PassWalker(graph, opt_level=2)
        w.step()                   # the next pass -> PassStep
        w.run_to("fuse_pointwise") # through the next pass of that name
        w.graph                    # the graph so far; w.steps, w.remaining
        engine = w.build()         # remaining passes, then code generation
    """

    def __init__(self, graph: Graph, opt_level: int | None = None, options: BuildOptions | None = None,
                 passes: Sequence[str | Pass] | None = None, **overrides: Any) -> None:
        self.options = _options(options, opt_level, overrides)
        names = list(passes) if passes is not None else PIPELINES[self.options.opt_level]
        self.passes: list[Pass] = [_load(p) for p in names]
        self.start = graph
        self.graph = graph
        self.steps: list[PassStep] = []
        self.ctx = PassContext(self.options)
        if self.options.verify:
            graph.verify(context="import")

    @property
    def remaining(self) -> list[str]:
        return [p.name for p in self.passes[len(self.steps):]]

    @property
    def done(self) -> bool:
        return len(self.steps) == len(self.passes)

    def step(self) -> PassStep:
        if self.done:
            raise TrtjitError(f"the pipeline is finished: all {len(self.passes)} passes ran")
        i = len(self.steps)
        p = self.passes[i]
        before = self.graph
        after = _run_pass(p, copy_graph(before), self.ctx, i)
        rec = self.ctx.log[-1]
        st = PassStep(i, p.name, p.doc, before, after, rec, diff_graphs(before, after, rec))
        self.steps.append(st)
        self.graph = after
        return st

    def run_to(self, name: str) -> PassStep:
        """Run passes up to and including the next one called ``name``; return its step."""
        if name not in self.remaining:
            raise TrtjitError(f"no pass {name!r} left in the pipeline; remaining: {self.remaining}")
        while True:
            st = self.step()
            if st.name == name:
                return st

    def run_all(self) -> StepList:
        while not self.done:
            self.step()
        return StepList(self.steps)

    def build(self) -> Any:
        """Run the remaining passes, generate the kernels and return the engine (as ``trtjit.build``)."""
        from trtjit.builder import lower
        from trtjit.engine import Engine

        self.run_all()
        return Engine(self.graph, lower(self.graph, self.options), self.options, list(self.ctx.log))

    def __iter__(self) -> Iterator[PassStep]:
        while not self.done:
            yield self.step()

    def __str__(self) -> str:
        from trtjit.display import steps_text
        return steps_text(self.steps, self.remaining)

    def _repr_html_(self) -> str:
        from trtjit.display import steps_html
        return steps_html(self.steps, self.remaining)

    def __repr__(self) -> str:
        return (f"<PassWalker opt_level={self.options.opt_level}: {len(self.steps)}/{len(self.passes)} passes run, "
                f"graph has {len(self.graph)} nodes>")


class StepList(list):
    """The steps of a walked pipeline; ``steps["fuse_pointwise"]`` is the (last) step of that pass."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            hits = [s for s in self if s.name == key]
            if not hits:
                raise KeyError(f"no pass {key!r} in these steps: {[s.name for s in self]}")
            return hits[-1]
        return super().__getitem__(key)

    @property
    def final(self) -> Graph:
        return self[-1].after

    def __str__(self) -> str:
        from trtjit.display import steps_text
        return steps_text(list(self), [])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from trtjit.display import steps_html
        return steps_html(list(self), [])


def walk(graph: Graph, opt_level: int | None = None, options: BuildOptions | None = None,
         **overrides: Any) -> StepList:
    """Run a whole pipeline one pass at a time and return every step (``graph`` is not changed)."""
    return PassWalker(graph, opt_level, options, **overrides).run_all()


# --------------------------------------------------------------------------------------------- capture
@dataclass
class Captured:
    """One captured value: its canonical name, the tensor, the op that made it and where it ran."""

    value: Value
    tensor: torch.Tensor
    op: str
    kind: str  # "input", "constant", "view" or "op"
    where: str  # the top-level node (graph) or kernel (engine) that produced it
    inputs: tuple[str, ...] = ()  # canonical names of the values the op read

    @property
    def name(self) -> str:
        return str(self.value)[1:]


class Capture(Mapping):
    """Every intermediate tensor of one run, keyed by value (``cap["encoder.norm1.shift"]`` or a ``Value``),
    in execution order, plus the run's outputs."""

    def __init__(self, source: str, entries: dict[Value, Captured], outputs: list[torch.Tensor],
                 sources: dict[Value, tuple[str, tuple[str, ...]]] | None = None) -> None:
        self.source = source
        self.entries = entries
        self.outputs = outputs
        self.sources = sources or {}  # every value computed, captured or not (inside kernels): op, inputs

    def _key(self, key: Any) -> Value:
        if isinstance(key, Value):
            return key
        if isinstance(key, str):
            key = key[1:] if key.startswith("%") else key
            if Value(key) in self.entries:
                return Value(key)
            node, _, idx = key.rpartition(".")
            if node and idx.isdigit() and Value(node, int(idx)) in self.entries:
                return Value(node, int(idx))
            return Value(key)
        raise KeyError(key)

    def __getitem__(self, key: Any) -> torch.Tensor:
        v = self._key(key)
        if v not in self.entries:
            raise KeyError(f"no captured value {key!r} in {self.source}")
        return self.entries[v].tensor

    def entry(self, key: Any) -> Captured:
        return self.entries[self._key(key)]

    def __iter__(self) -> Iterator[Value]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def rows(self, constants: bool = False) -> list[dict[str, Any]]:
        """Per value: name, op, where, shape, dtype, min, max, mean, absmax, non-finite count."""
        out = []
        for e in self.entries.values():
            if e.kind == "constant" and not constants:
                continue
            t = e.tensor.detach()
            f = t.double() if t.numel() else torch.zeros(1, dtype=torch.float64)
            finite = torch.isfinite(f)
            fin = f[finite] if finite.any() else torch.zeros(1, dtype=torch.float64)
            out.append({"value": e.name, "op": e.op, "where": e.where, "shape": list(t.shape),
                        "dtype": str(t.dtype).replace("torch.", ""), "min": float(fin.min()),
                        "max": float(fin.max()), "mean": float(fin.mean()), "absmax": float(fin.abs().max()),
                        "nonfinite": int((~finite).sum())})
        return out

    def table(self, constants: bool = False) -> Any:
        """``rows()`` as a pandas DataFrame."""
        from trtjit.display import dataframe
        return dataframe(self.rows(constants))

    def __str__(self) -> str:
        from trtjit.display import capture_text
        return capture_text(self)

    def _repr_html_(self) -> str:
        from trtjit.display import capture_html
        return capture_html(self)

    def __repr__(self) -> str:
        return f"<Capture of {self.source}: {len(self.entries)} values>"


def _is_engine(obj: Any) -> bool:
    from trtjit.engine import Engine
    return isinstance(obj, Engine)


def value_sources(graph: Graph, _outer: dict[str, str] | None = None,
                  _out: dict[Value, tuple[str, tuple[str, ...]]] | None = None) -> dict[Value, tuple[str, tuple[str, ...]]]:
    """Canonical value -> (op that computes it, canonical names of the values it reads), through fused
    bodies: the same answer for a graph and for its engine, so two runs can be compared op by op."""
    out: dict[Value, tuple[str, tuple[str, ...]]] = {} if _out is None else _out

    def name_of(v: Value) -> str:
        if _outer is not None and v.node in _outer and graph.node(v.node).op == "input":
            return _outer[v.node]
        return str(canonical(graph, v))[1:]

    for n in graph:
        if n.op in ("input", "constant"):
            continue
        ins = graph.inputs_of(n.name)
        body = n.attrs.get("body")
        if isinstance(body, Graph):
            value_sources(body, {b: name_of(v) for b, v in zip(body.inputs, ins)}, out)
            continue
        for i in range(len(n.outputs)):
            out[Value(n.name, i)] = (n.op, tuple(name_of(v) for v in ins))
    return out


def _finish(source: str, entries: dict[Value, Captured], outputs: list[torch.Tensor], graph: Graph) -> Capture:
    src = value_sources(graph)
    for v, e in entries.items():
        if v in src:
            e.op, e.inputs = src[v]
    return Capture(source, entries, outputs, src)


def _graph_capture(graph: Graph, inputs: Sequence[torch.Tensor], bodies: bool) -> Capture:
    from trtjit.ops import get_op

    outs, env = run_graph(graph, list(inputs), capture=True)
    entries: dict[Value, Captured] = {}

    def add_body(g: Graph, name: str, where: str, ins: list[torch.Tensor]) -> None:
        body = g.node(name).attrs["body"]
        _, benv = run_graph(body, ins, capture=True)
        for n in body:
            if n.op in ("input", "constant"):
                continue
            if isinstance(n.attrs.get("body"), Graph):
                add_body(body, n.name, where, [benv[v] for v in body.inputs_of(n.name)])
                continue
            kind = "view" if get_op(n.op).kind == "view" else "op"
            for i in range(len(n.outputs)):
                entries[Value(n.name, i)] = Captured(Value(n.name, i), benv[Value(n.name, i)], n.op, kind, where)

    for n in graph:
        fused = isinstance(n.attrs.get("body"), Graph)
        if fused and bodies:
            add_body(graph, n.name, n.name, [env[v] for v in graph.inputs_of(n.name)])
            continue
        kind = n.op if n.op in ("input", "constant") else ("view" if get_op(n.op).kind == "view" else "op")
        for i in range(len(n.outputs)):
            v = canonical(graph, Value(n.name, i))
            op = _op_at(graph, n.name, v) if fused else n.op
            entries[v] = Captured(v, env[Value(n.name, i)], op, kind, n.name)
    return _finish(f"graph ({len(graph)} nodes)", entries, list(outs), graph)


def _op_at(graph: Graph, fused: str, v: Value) -> str:
    try:
        return _body_op(graph, fused, v.node)
    except Exception:
        return graph.node(fused).op


def _engine_capture(engine: Any, inputs: Sequence[torch.Tensor]) -> Capture:
    from trtjit.layout import compute_layouts
    from trtjit.ops import get_op

    g = engine.graph
    raw: dict[Value, torch.Tensor] = {}  # buffer root -> a flat copy of the buffer, taken right after its kernel
    kernel_of: dict[str, str] = {}

    def grab(i: int, k: Any, bufs: dict[Value, torch.Tensor]) -> None:
        kernel_of[k.node] = k.name
        for j in range(len(g.node(k.node).outputs)):
            raw[Value(k.node, j)] = bufs[Value(k.node, j)].reshape(-1).clone()  # the arena is reused later

    outs = engine.run(*inputs, on_kernel=grab)
    layouts = compute_layouts(g)
    for name, t in zip(g.inputs, inputs):
        raw[Value(name)] = t.contiguous().reshape(-1).clone()

    def read(v: Value) -> torch.Tensor | None:
        """The value as its layout says it lives in its buffer (kernels may write permuted outputs)."""
        lay = layouts.get(v)
        if lay is None:
            return None
        if lay.root not in raw and g.node(lay.root.node).op == "constant":
            raw[lay.root] = g.node(lay.root.node).value.contiguous().reshape(-1).clone()
        base = raw.get(lay.root)
        return None if base is None else base.as_strided(lay.shape, lay.strides, lay.offset)

    entries: dict[Value, Captured] = {}
    for n in g:
        if n.op == "input":
            entries[Value(n.name)] = Captured(Value(n.name), inputs[g.inputs.index(n.name)], "input", "input", n.name)
        elif n.op == "constant":
            entries[Value(n.name)] = Captured(Value(n.name), n.value, "constant", "constant", n.name)
        elif get_op(n.op).kind == "view":
            t = read(Value(n.name))
            if t is not None:
                entries[Value(n.name)] = Captured(Value(n.name), t, n.op, "view", f"view of {layouts[Value(n.name)].root}")
        elif n.name in kernel_of:
            for j in range(len(n.outputs)):
                v = canonical(g, Value(n.name, j))
                op = _op_at(g, n.name, v) if isinstance(n.attrs.get("body"), Graph) else n.op
                entries[v] = Captured(v, read(Value(n.name, j)), op, "op", kernel_of[n.name])
    return _finish(f"engine ({len(engine.kernels)} kernels)", entries, list(outs), g)


def capture(obj: Any, inputs: Sequence[torch.Tensor] | torch.Tensor, bodies: bool = True) -> Capture:
    """Run a graph (reference interpreter) or an engine (kernel by kernel) on ``inputs`` and keep every
    intermediate tensor. Fused nodes of a graph are opened (``bodies=True``) so values inside them are
    kept too; an engine shows each kernel's outputs and the views of them."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if isinstance(obj, Capture):
        return obj
    if isinstance(obj, Graph):
        return _graph_capture(obj, inputs, bodies)
    if _is_engine(obj):
        return _engine_capture(obj, inputs)
    raise InputError(f"capture expects a trtjit Graph or Engine, got {type(obj).__name__}")


# --------------------------------------------------------------------------------------------- compare
def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max|out - ref| / max|ref| over finite elements; inf when the non-finite elements disagree."""
    a, b = ref.detach().double().cpu(), out.detach().double().cpu()
    if a.numel() == 0:
        return 0.0
    na, nb, ia, ib = a.isnan(), b.isnan(), a.isinf(), b.isinf()
    if not (torch.equal(na, nb) and torch.equal(ia, ib) and torch.equal(a[ia], b[ib])):
        return math.inf
    fin = torch.isfinite(a)
    if not fin.any():
        return 0.0
    diff = (a[fin] - b[fin]).abs().max()
    scale = a[fin].abs().max()
    if scale == 0:
        return 0.0 if diff == 0 else math.inf
    return float(diff / scale)


def tolerance(*dtypes: torch.dtype) -> float:
    """The tolerance for comparing tensors of these dtypes: the loosest float one; 0 for integers."""
    tols = [TOL.get(d, 0.0) for d in dtypes]
    return max(tols) if tols else 0.0


@dataclass
class LayerDiff:
    """One value compared: reference vs candidate."""

    name: str
    op: str
    where: str
    shape: tuple[int, ...]
    dtype: str
    error: float
    tol: float
    status: str  # "ok", "diverged" or "shape differs"
    note: str = ""  # for a diverged value: which of its inputs differ too, or that all agree

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    def __str__(self) -> str:
        err = "-" if math.isnan(self.error) else f"{self.error:.2e}"
        note = f"; {self.note}" if self.note else ""
        what = self.name if self.op == "output" else f"%{self.name} ({self.op}, {self.where})"
        return f"{what}: {self.status}, max rel error {err} (tol {self.tol:.0e}){note}"


@dataclass
class Comparison:
    """Layer-by-layer comparison of two runs on the same inputs, in the candidate's execution order."""

    reference: str
    candidate: str
    rows: list[LayerDiff]
    outputs: list[LayerDiff]
    only_reference: list[str]
    only_candidate: list[str]

    @property
    def diverged(self) -> list[LayerDiff]:
        return [r for r in self.rows if r.diverged]

    @property
    def first_divergence(self) -> LayerDiff | None:
        """The first layer (in execution order) whose values differ beyond tolerance; None when all agree."""
        return next((r for r in self.rows if r.diverged), None)

    @property
    def ok(self) -> bool:
        return not self.diverged and not any(o.diverged for o in self.outputs)

    def rows_dicts(self) -> list[dict[str, Any]]:
        return [{"value": r.name, "op": r.op, "where": r.where, "shape": list(r.shape), "dtype": r.dtype,
                 "max_rel_error": r.error, "tol": r.tol, "status": r.status, "note": r.note} for r in self.rows]

    def table(self) -> Any:
        """The rows as a pandas DataFrame."""
        from trtjit.display import dataframe
        return dataframe(self.rows_dicts())

    def __str__(self) -> str:
        from trtjit.display import comparison_text
        return comparison_text(self)

    def _repr_html_(self) -> str:
        from trtjit.display import comparison_html
        return comparison_html(self)

    def __repr__(self) -> str:
        first = self.first_divergence
        return (f"<Comparison {self.reference} vs {self.candidate}: {len(self.rows)} values matched, "
                f"{'first divergence at %' + first.name if first else 'no divergence'}>")


def _diff_row(name: str, op: str, where: str, a: torch.Tensor, b: torch.Tensor, tol: float | None,
              floor: float = 0.0) -> LayerDiff:
    if tol is not None:
        t = tol
    elif a.is_floating_point() or b.is_floating_point():
        t = max(tolerance(a.dtype, b.dtype), floor)
    else:
        t = 0.0  # integers and booleans must match exactly
    dtype = str(b.dtype).replace("torch.", "")
    if a.shape != b.shape:
        return LayerDiff(name, op, where, tuple(b.shape), dtype, math.nan, t, "shape differs")
    err = rel_error(b, a)
    return LayerDiff(name, op, where, tuple(b.shape), dtype, err, t, "ok" if err <= t else "diverged")


def compare(reference: Any, candidate: Any, inputs: Sequence[torch.Tensor] | torch.Tensor | None = None,
            tol: float | None = None, bodies: bool = True) -> Comparison:
    """Run ``reference`` and ``candidate`` (each a Graph, an Engine or a ``Capture``) on ``inputs`` and
    compare every value they share by name, then the outputs by position. ``only_reference`` and
    ``only_candidate`` list the computed values (not views) one side lacks.

    The error is max|cand - ref| / max|ref|; ``tol`` defaults to the loosest float dtype computed in either
    run (1e-4 all fp32, 1e-2 with fp16 tensors, 2e-2 with bf16); integers must match exactly. A value whose
    shape differs is not compared: its name was reused for another tensor.
    """
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if inputs is None and not (isinstance(reference, Capture) and isinstance(candidate, Capture)):
        raise InputError("compare needs inputs unless both sides are Captures")
    ca = capture(reference, inputs or (), bodies)
    cb = capture(candidate, inputs or (), bodies)
    # rounding differences of 16-bit storage anywhere upstream show in fp32 values downstream too
    floor = tolerance(*{e.tensor.dtype for c in (ca, cb) for e in c.entries.values()
                        if e.kind not in ("input", "constant") and e.tensor.is_floating_point()})
    rows = []
    for v, eb in cb.entries.items():
        if eb.kind in ("input", "constant"):
            continue
        ea = ca.entries.get(v)
        if ea is None:
            continue
        row = _diff_row(eb.name, eb.op if eb.op == ea.op else f"{ea.op} -> {eb.op}", eb.where, ea.tensor,
                        eb.tensor, tol, floor)
        if row.diverged:
            row.note = _why(ca, cb, ea, eb, tol, floor)
        rows.append(row)
    outs = [_diff_row(f"output {i}", "output", "output", a, b, tol, floor)
            for i, (a, b) in enumerate(zip(ca.outputs, cb.outputs))]
    if len(ca.outputs) != len(cb.outputs):
        outs.append(LayerDiff(f"{len(ca.outputs)} vs {len(cb.outputs)} outputs", "output", "output", (), "",
                              math.inf, 0.0, "diverged"))
    # views are free aliases that passes add and drop (remove_noops, a GEMM reading flattened rows in place):
    # only computed values are listed as missing on one side
    only_a = [e.name for v, e in ca.entries.items() if e.kind == "op" and v not in cb.entries]
    only_b = [e.name for v, e in cb.entries.items() if e.kind == "op" and v not in ca.entries]
    return Comparison(ca.source, cb.source, rows, outs, only_a, only_b)


def _why(ca: Capture, cb: Capture, ea: Captured, eb: Captured, tol: float | None, floor: float) -> str:
    """Which inputs of a diverged value differ too (or that it reads other values than the reference)."""
    notes = []
    if ea.op != eb.op:
        notes.append(f"op {ea.op} in reference, {eb.op} in candidate")
    extra = [n for n in eb.inputs if n not in ea.inputs]
    if extra:
        gone = [n for n in ea.inputs if n not in eb.inputs]
        notes.append(f"reads {', '.join('%' + n for n in extra)}"
                     + (f" where the reference reads {', '.join('%' + n for n in gone)}" if gone else "")
                     + " (rewritten by a pass?)")
    bad = []
    todo, seen = list(eb.inputs), set()
    while todo:  # values computed inside the same kernel were not captured: look through them
        n = todo.pop(0)
        if n in seen:
            continue
        seen.add(n)
        try:
            b = cb.entry(n)
        except KeyError:
            src = cb.sources.get(cb._key(n))
            todo.extend(src[1] if src else ())
            continue
        try:
            a = ca.entry(n)
        except KeyError:
            continue
        r = _diff_row(n, "", "", a.tensor, b.tensor, tol, floor)
        if r.status != "ok":
            bad.append(f"%{n} ({'shape' if r.status != 'diverged' else f'{r.error:.1e}'})")
    if bad:
        notes.append(f"inputs that differ too: {', '.join(bad)}")
    elif not extra and not notes:
        notes.append("all its inputs agree: the difference starts here")
    return "; ".join(notes)


def first_divergence(reference: Any, candidate: Any, inputs: Sequence[torch.Tensor] | torch.Tensor,
                     tol: float | None = None) -> LayerDiff | None:
    """The first layer where ``candidate`` departs from ``reference`` (None when none does)."""
    return compare(reference, candidate, inputs, tol).first_divergence


# --------------------------------------------------------------------------------- pipeline numerics
@dataclass
class PipelineCheck:
    """Output error after every pass (and of the built engine) against the graph before the pipeline."""

    rows: list[dict[str, Any]]
    tol: float

    @property
    def first_bad(self) -> dict[str, Any] | None:
        """The first pass (or "engine") whose outputs differ from the unoptimized graph's."""
        return next((r for r in self.rows if not r["ok"]), None)

    @property
    def ok(self) -> bool:
        return self.first_bad is None

    def table(self) -> Any:
        from trtjit.display import dataframe
        return dataframe(self.rows)

    def __str__(self) -> str:
        from trtjit.display import pipeline_check_text
        return pipeline_check_text(self)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from trtjit.display import pipeline_check_html
        return pipeline_check_html(self)


def check_pipeline(graph: Graph, inputs: Sequence[torch.Tensor] | torch.Tensor, opt_level: int | None = None,
                   tol: float | None = None, engine: bool = True, options: BuildOptions | None = None,
                   passes: Sequence[str | Pass] | None = None, **overrides: Any) -> PipelineCheck:
    """Walk the pipeline and, after every pass, run the graph with the reference interpreter and compare its
    outputs with the unoptimized graph's; finally build the engine and compare its outputs too. The first
    row that is not ok names the pass (or the code generator) that changed the numerics."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    walker = PassWalker(graph, opt_level, options, passes, **overrides)
    t = _PRECISION_TOL.get(walker.options.precision, 1e-4) if tol is None else tol
    ref = run_graph(graph, list(inputs))

    def row(i: int, name: str, nodes: int, outs: list[torch.Tensor]) -> dict[str, Any]:
        errs = [rel_error(o, r) for o, r in zip(outs, ref)]
        err = max(errs, default=0.0) if len(outs) == len(ref) else math.inf
        return {"step": i, "pass": name, "nodes": nodes, "max_rel_error": err, "ok": bool(err <= t)}

    rows = []
    for st in walker:
        rows.append(row(st.index, st.name, len(st.after), run_graph(st.after, list(inputs))))
    if engine:
        from trtjit.builder import lower
        from trtjit.engine import Engine

        eng = Engine(walker.graph, lower(walker.graph, walker.options), walker.options)
        rows.append(row(len(rows), "engine (generated kernels)", len(eng.kernels), eng.run(*inputs)))
    return PipelineCheck(rows, t)


__all__ = ["Capture", "Captured", "Comparison", "GraphDiff", "LayerDiff", "PassStep", "PassWalker", "PipelineCheck",
           "StepList", "canonical", "capture", "check_pipeline", "compare", "copy_graph", "diff_graphs",
           "first_divergence", "import_torch", "rel_error", "run_pass", "walk"]
