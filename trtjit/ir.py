"""The graph IR: a networkx MultiDiGraph of small node records.

One node per op. A node has a stable name (tracing back to the module path it came from), an op name
from the op table (`trtjit.ops`), JSON-able attributes, and one TensorSpec per output. Weights are
``constant`` nodes that hold their tensor. An edge ``u -> v`` carries ``out`` (which output of ``u``)
and ``in`` (which input of ``v``), so multi-output ops and several consumers are plain graph structure.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import networkx as nx
import torch

from trtjit.errors import GraphError, InputError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "float8_e4m3fn": torch.float8_e4m3fn,  # fp8 GEMM operands (precision="fp8")
    "uint8": torch.uint8,
    "bool": torch.bool,
    # unsigned 16/32/64-bit: torch has few kernels for them; the op table computes their references in
    # int64 (ops.py: _wide_uint) and the generated Triton code uses the unsigned types natively
    "uint16": torch.uint16,
    "uint32": torch.uint32,
    "uint64": torch.uint64,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise GraphError(f"dtype {dtype} is not supported by trtjit") from None


@dataclass(frozen=True)
class TensorSpec:
    """Static shape and dtype of one tensor."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @staticmethod
    def of(t: torch.Tensor) -> TensorSpec:
        return TensorSpec(tuple(int(s) for s in t.shape), t.dtype)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def meta(self) -> torch.Tensor:
        """An empty tensor on the meta device, for shape inference through torch itself."""
        from trtjit.dynamic import GuardError, is_dynamic
        if is_dynamic(self.shape):  # torch would read a SymDim's opt value: evaluate it at a batch first
            raise GuardError(f"{self}: a meta tensor of a batch-proportional shape (use trtjit.dynamic.two_point)")
        return torch.empty(self.shape, dtype=self.dtype, device="meta")

    def to_json(self) -> dict:
        from trtjit.dynamic import encode
        return {"shape": encode(list(self.shape)), "dtype": dtype_name(self.dtype)}

    @staticmethod
    def from_json(d: dict, batch: Any = None) -> TensorSpec:
        """``batch``: the graph's BatchRange when its shapes hold batch-proportional sizes (trtjit.dynamic)."""
        if d.get("dtype") not in DTYPES:
            raise GraphError(f"unknown dtype {d.get('dtype')!r} in serialized graph")
        if batch is not None:
            from trtjit.dynamic import SymDim, decode
            return TensorSpec(tuple(s if isinstance(s, SymDim) else int(s) for s in decode(d["shape"], batch)),
                              DTYPES[d["dtype"]])
        return TensorSpec(tuple(int(s) for s in d["shape"]), DTYPES[d["dtype"]])

    def __str__(self) -> str:
        return f"{dtype_name(self.dtype)}[{','.join(map(str, self.shape))}]"


class Value(NamedTuple):
    """One output of one node: the unit that flows along edges."""

    node: str
    index: int = 0

    def __str__(self) -> str:
        return f"%{self.node}" + (f".{self.index}" if self.index else "")


@dataclass
class Node:
    """A node record: op, attributes, output specs; ``value`` only for constants."""

    name: str
    op: str
    attrs: dict[str, Any] = field(default_factory=dict)
    outputs: list[TensorSpec] = field(default_factory=list)
    value: torch.Tensor | None = None
    source: str = ""

    @property
    def spec(self) -> TensorSpec:
        return self.outputs[0]


class Graph:
    """A dataflow graph of ``Node`` records stored in a networkx MultiDiGraph."""

    def __init__(self) -> None:
        self.nx = nx.MultiDiGraph()
        self.inputs: list[str] = []
        self.outputs: list[Value] = []
        self.meta: dict[str, Any] = {}
        self._order = itertools.count()
        self._version = 0  # bumped by every edit through this class: the topological order's cache key
        self._topo: tuple[tuple[int, int, int], list[str]] | None = None

    # ---------------------------------------------------------------- access
    def node(self, name: str) -> Node:
        try:
            return self.nx.nodes[name]["node"]
        except KeyError:
            raise GraphError(f"no node named {name!r} in graph") from None

    def spec(self, v: Value) -> TensorSpec:
        return self.node(v.node).outputs[v.index]

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def __iter__(self) -> Iterator[Node]:
        for name in self.topo_order():
            yield self.node(name)

    @property
    def nodes(self) -> list[Node]:
        return [self.node(n) for n in self.topo_order()]

    def inputs_of(self, name: str) -> list[Value]:
        # straight from the adjacency dicts: networkx's in_edges view costs ~10x as much per call, and
        # passes, verification and engine loading ask thousands of times per graph
        edges = sorted((d["in"], u, d["out"]) for u, keyed in self.nx._pred.get(name, {}).items()
                       for d in keyed.values())
        return [Value(u, out) for _, u, out in edges]

    def users(self, v: Value | str) -> list[tuple[str, int]]:
        """(consumer, input index) pairs reading ``v`` (or any output of the node when given a name)."""
        name, idx = (v, None) if isinstance(v, str) else (v.node, v.index)
        out = [(w, d["in"]) for _, w, d in self.nx.out_edges(name, data=True) if idx is None or d["out"] == idx]
        return sorted(out, key=lambda p: (self.nx.nodes[p[0]]["order"], p[1]))

    def producers(self, name: str) -> list[str]:
        return list(dict.fromkeys(v.node for v in self.inputs_of(name)))

    def consumers(self, name: str) -> list[str]:
        return list(dict.fromkeys(w for w, _ in self.users(name)))

    def is_output(self, v: Value | str) -> bool:
        if isinstance(v, str):
            return any(o.node == v for o in self.outputs)
        return v in self.outputs

    # --------------------------------------------------------------- editing
    def unique_name(self, base: str) -> str:
        if base not in self.nx:
            return base
        for i in itertools.count(1):
            cand = f"{base}_{i}"
            if cand not in self.nx:
                return cand
        raise AssertionError  # pragma: no cover

    def add_node(self, node: Node, inputs: Sequence[Value] = ()) -> Node:
        if node.name in self.nx:
            raise GraphError(f"duplicate node name {node.name!r}")
        self._version += 1
        self.nx.add_node(node.name, node=node, order=next(self._order))
        for i, v in enumerate(inputs):
            if v.node not in self.nx:
                raise GraphError(f"node {node.name!r} reads {v}, which is not in the graph")
            self.nx.add_edge(v.node, node.name, key=i, out=v.index, **{"in": i})
        return node

    def add_input(self, name: str, spec: TensorSpec) -> Value:
        self.add_node(Node(name, "input", {}, [spec], source=name))
        self.inputs.append(name)
        return Value(name)

    def add_constant(self, name: str, tensor: torch.Tensor, source: str = "") -> Value:
        tensor = tensor.detach()
        node = Node(self.unique_name(name), "constant", {}, [TensorSpec.of(tensor)], tensor, source or name)
        self.add_node(node)
        return Value(node.name)

    def add(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None,
            name: str | None = None, source: str = "") -> Node:
        """Add an op node, inferring its output specs from the op table."""
        from trtjit.ops import get_op

        opdef = get_op(op)
        attrs = opdef.normalize_attrs(attrs or {}, where=name or op)
        specs = opdef.infer([self.spec(v) for v in inputs], attrs)
        node = Node(self.unique_name(name or op), op, attrs, specs, source=source)
        return self.add_node(node, inputs)

    def set_input(self, name: str, index: int, v: Value) -> None:
        self._version += 1
        for u, w, k, d in list(self.nx.in_edges(name, keys=True, data=True)):
            if d["in"] == index:
                self.nx.remove_edge(u, w, key=k)
        self.nx.add_edge(v.node, name, key=index, out=v.index, **{"in": index})

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Point every consumer of ``old`` (and the graph outputs) at ``new``."""
        for user, idx in self.users(old):
            self.set_input(user, idx, new)
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove_node(self, name: str) -> None:
        if self.users(name):
            raise GraphError(f"cannot remove {name!r}: still used by {self.consumers(name)}")
        self._version += 1
        self.nx.remove_node(name)
        if name in self.inputs:
            self.inputs.remove(name)

    def rename(self, old: str, new: str) -> None:
        """Give node ``old`` the free name ``new``, keeping its edges and graph-output references."""
        if new in self.nx:
            raise GraphError(f"cannot rename {old!r} to {new!r}: name taken")
        self._version += 1
        nx.relabel_nodes(self.nx, {old: new}, copy=False)
        self.node(new).name = new
        self.outputs = [Value(new, o.index) if o.node == old else o for o in self.outputs]
        self.inputs = [new if i == old else i for i in self.inputs]

    # ------------------------------------------------------------- traversal
    def topo_order(self) -> list[str]:
        """Topological order; ties broken by insertion order so it is stable. Cached until the graph changes
        (passes ask for it hundreds of times per build); the key also counts nodes and edges, so an edit made
        on ``self.nx`` directly is seen too."""
        key = (self._version, self.nx.number_of_nodes(), self.nx.number_of_edges())
        if self._topo is not None and self._topo[0] == key:
            return list(self._topo[1])
        order = nx.get_node_attributes(self.nx, "order")
        try:
            result = list(nx.lexicographical_topological_sort(self.nx, key=order.__getitem__))
            self._topo = (key, result)
            return list(result)
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(self.nx)
            raise GraphError(f"graph has a cycle through {[e[0] for e in cycle]}") from None

    def subgraph(self, names: Iterable[str]) -> Graph:
        """Extract ``names`` as a standalone graph.

        Values read from outside become input nodes (in first-use order); values used outside
        ``names`` (or graph outputs) become the outputs.
        """
        names = set(names)
        sub = Graph()
        ext: dict[Value, Value] = {}
        for name in self.topo_order():
            if name not in names:
                continue
            node = self.node(name)
            ins = []
            for v in self.inputs_of(name):
                if v.node in names:
                    ins.append(v)
                else:
                    if v not in ext:
                        ext[v] = sub.add_input(sub.unique_name(f"{v.node}.{v.index}" if v.index else v.node),
                                               self.spec(v))
                    ins.append(ext[v])
            sub.add_node(Node(node.name, node.op, dict(node.attrs), list(node.outputs), node.value, node.source), ins)
        for name in sub.topo_order():
            if name not in names:
                continue
            for i in range(len(self.node(name).outputs)):
                v = Value(name, i)
                if self.is_output(v) or any(u not in names for u, _ in self.users(v)):
                    sub.outputs.append(v)
        sub.meta["external_inputs"] = [list(v) for v in ext]
        return sub

    def copy(self) -> Graph:
        g = Graph()
        for name in self.topo_order():
            n = self.node(name)
            attrs = {k: (v.copy() if isinstance(v, Graph) else v) for k, v in n.attrs.items()}
            g.add_node(Node(n.name, n.op, attrs, list(n.outputs), n.value, n.source), self.inputs_of(name))
        g.inputs = list(self.inputs)
        g.outputs = list(self.outputs)
        g.meta = dict(self.meta)
        return g

    # ----------------------------------------------------------- verification
    def verify(self, context: str = "") -> None:
        """Check the graph: acyclic, inputs complete, specs agree with the op table, outputs exist."""
        from trtjit.ops import get_op

        where = f" (after pass {context!r})" if context else ""
        if not nx.is_directed_acyclic_graph(self.nx):
            cycle = nx.find_cycle(self.nx)
            raise GraphError(f"graph has a cycle through {[e[0] for e in cycle]}{where}")
        for name in self.inputs:
            if name not in self.nx or self.node(name).op != "input":
                raise GraphError(f"graph input {name!r} is not an input node{where}")
        for name in self.topo_order():
            node = self.node(name)
            idx = sorted(d["in"] for _, _, d in self.nx.in_edges(name, data=True))
            if idx != list(range(len(idx))):
                raise GraphError(f"node {name!r} ({node.op}) has dangling or duplicate inputs {idx}{where}")
            ins = self.inputs_of(name)
            for v in ins:
                if v.index >= len(self.node(v.node).outputs):
                    raise GraphError(f"node {name!r} reads output {v.index} of {v.node!r}, which has "
                                     f"{len(self.node(v.node).outputs)} output(s){where}")
            if node.op == "input":
                if name not in self.inputs:
                    raise GraphError(f"input node {name!r} is not listed among the graph inputs{where}")
                continue
            if node.op == "constant":
                if node.value is None or TensorSpec.of(node.value) != node.spec:
                    raise GraphError(f"constant {name!r} holds no tensor or one that disagrees with its spec{where}")
                continue
            try:
                opdef = get_op(node.op)
            except Exception as e:
                raise GraphError(f"node {name!r}: {e}{where}") from None
            if opdef.arity is not None and len(ins) != opdef.arity:
                raise GraphError(f"node {name!r} ({node.op}) has {len(ins)} inputs, op expects {opdef.arity}{where}")
            for body in (v for v in node.attrs.values() if isinstance(v, Graph)):
                body.verify(context=f"{context}: body of {name}" if context else f"body of {name}")
            try:
                expect = opdef.infer([self.spec(v) for v in ins], node.attrs)
            except Exception as e:
                raise GraphError(f"node {name!r} ({node.op}): shape inference failed: {e}{where}") from None
            if list(expect) != list(node.outputs):
                raise GraphError(f"node {name!r} ({node.op}) records outputs {[str(s) for s in node.outputs]} "
                                 f"but the op table infers {[str(s) for s in expect]}{where}")
        for v in self.outputs:
            if v.node not in self.nx or v.index >= len(self.node(v.node).outputs):
                raise GraphError(f"graph output {v} does not exist{where}")

    # --------------------------------------------------------------- display
    def format_node(self, name: str) -> str:
        n = self.node(name)
        outs = ", ".join(str(s) for s in n.outputs)
        ins = ", ".join(str(v) for v in self.inputs_of(name))
        attrs = {k: (f"<graph: {len(v)} nodes>" if isinstance(v, Graph) else v) for k, v in n.attrs.items()}
        attr_s = " " + " ".join(f"{k}={v}" for k, v in attrs.items()) if attrs else ""
        src = f"  # {n.source}" if n.source and n.source != n.name else ""
        return f"%{name}: {outs} = {n.op}({ins}){attr_s}{src}"

    def __str__(self) -> str:
        lines = [self.format_node(n) for n in self.topo_order()]
        lines.append("return " + ", ".join(str(v) for v in self.outputs))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<trtjit.Graph {len(self)} nodes, {len(self.inputs)} inputs, {len(self.outputs)} outputs>"

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in self.nx:
            op = self.node(name).op
            counts[op] = counts.get(op, 0) + 1
        return counts

    # -------------------------------------------------------------- notebooks (drawing: trtjit.display)
    def show(self, focus: str | Iterable[str] | None = None, radius: int = 2, **kwargs: Any) -> Any:
        """A drawable view (SVG in notebooks, text elsewhere) of this graph or of the part within
        ``radius`` edges of ``focus`` (node names or name prefixes); see ``trtjit.display.GraphView``."""
        from trtjit.display import GraphView
        return GraphView(self, focus=focus, radius=radius, **kwargs)

    def _repr_svg_(self) -> str | None:
        from trtjit.display import graph_svg_or_none
        return graph_svg_or_none(self)

    def _repr_html_(self) -> str:
        from trtjit.display import GraphView
        return GraphView(self)._repr_html_()

    # ------------------------------------------------------------ serializing
    def to_json(self, prefix: str = "") -> dict:
        """JSON-able description. Constants are referenced by key; get their tensors from ``weights()``."""
        from trtjit.dynamic import encode

        nodes = []
        for name in self.topo_order():
            n = self.node(name)
            attrs = {k: ({"__graph__": v.to_json(prefix=f"{prefix}{name}::")} if isinstance(v, Graph) else encode(v))
                     for k, v in n.attrs.items()}
            rec = {"name": name, "op": n.op, "attrs": attrs, "outputs": [s.to_json() for s in n.outputs],
                   "inputs": [list(v) for v in self.inputs_of(name)], "source": n.source}
            if n.op == "constant":
                rec["weight"] = prefix + name
            nodes.append(rec)
        return {"format": "trtjit-ir", "version": 1, "nodes": nodes, "inputs": list(self.inputs),
                "outputs": [list(v) for v in self.outputs], "meta": self.meta}

    def weights(self, prefix: str = "") -> dict[str, torch.Tensor]:
        out = {}
        for name in self.nx:
            n = self.node(name)
            if n.op == "constant":
                out[prefix + name] = n.value
            for v in n.attrs.values():
                if isinstance(v, Graph):
                    out.update(v.weights(prefix=f"{prefix}{name}::"))
        return out

    @staticmethod
    def from_json(d: dict, weights: dict[str, torch.Tensor], batch: Any = None) -> Graph:
        if not isinstance(d, dict) or d.get("format") != "trtjit-ir":
            raise GraphError("not a serialized trtjit graph (missing format tag 'trtjit-ir')")
        if d.get("version") != 1:
            raise GraphError(f"serialized graph has version {d.get('version')}, this trtjit reads version 1")
        g = Graph()
        try:
            from trtjit.dynamic import BatchRange, decode
            if "batch_range" in d.get("meta", {}):  # a dynamic-batch graph (trtjit.dynamic); bodies inherit it
                batch = BatchRange.from_json(d["meta"]["batch_range"])
            for rec in d["nodes"]:
                attrs = {k: (Graph.from_json(v["__graph__"], weights, batch) if isinstance(v, dict) and "__graph__" in v
                             else decode(v, batch)) for k, v in rec["attrs"].items()}
                value = None
                if rec["op"] == "constant":
                    if rec.get("weight") not in weights:
                        raise GraphError(f"constant {rec['name']!r}: weight {rec.get('weight')!r} is missing")
                    value = weights[rec["weight"]]
                node = Node(rec["name"], rec["op"], attrs, [TensorSpec.from_json(s, batch) for s in rec["outputs"]],
                            value, rec.get("source", ""))
                g.add_node(node, [Value(n, int(i)) for n, i in rec["inputs"]])
            g.inputs = list(d["inputs"])
            g.outputs = [Value(n, int(i)) for n, i in d["outputs"]]
            g.meta = dict(d.get("meta", {}))
        except (KeyError, TypeError, ValueError, InputError) as e:
            raise GraphError(f"malformed serialized graph: {type(e).__name__}: {e}") from None
        return g
