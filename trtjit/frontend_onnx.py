"""ONNX frontend: an ONNX model (file, bytes or ``onnx.ModelProto``) to a trtjit graph.

``import_onnx(model, inputs)`` binds every graph input to a static shape (from example tensors, shapes or a
``{name: shape}`` dict; named dynamic dimensions such as ``"batch"`` are unified across inputs), then walks
the nodes in order:

* values known at build time (initializers, ``Constant`` nodes, ``Shape`` of a tensor, and everything
  computed from those alone) stay constants: each node whose inputs are all constants is evaluated at import
  (with the op table's torch references, or onnx's numpy reference implementation for ops trtjit has no
  converter for), so shape-computation subgraphs (``Shape -> Gather -> Concat -> Reshape``, ``Range``,
  ``ConstantOfShape`` ...) fold away;
* ``If`` with a build-time condition is replaced by the chosen branch;
* an int/float graph input of rank <= 1 that an op needs at build time (the shape of a ``Reshape``, the
  ``k`` of a ``Range`` ...) is a *shape tensor* as in TensorRT: it is bound to the example value given at
  build time, and the engine refuses other values at run time;
* every other node maps to IR ops through the converter table below (``CONVERTERS``); ops in a custom
  domain (or unknown ones) are looked up in the plugin registry (``trtjit.plugins``); ops whose schema is an
  ONNX function are expanded into their function body when no converter exists.

Problems are collected over the whole model and reported at once (``UnsupportedOpError``: op type, node
names, and for unsupported variants the reason). Output names are kept (``graph.meta["output_names"]``) and
the engine returns outputs in graph order.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from trtjit.errors import BuildError, GraphError, InputError, TrtjitError, UnsupportedOpError
from trtjit.frontend_torch import matmul_nd
from trtjit.ir import DTYPE_NAMES, Graph, TensorSpec, Value, dtype_name
from trtjit.ops import OPS, get_op

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()
SHAPE_TENSOR_MAX_NUMEL = 64
SHAPE_TENSOR_DTYPES = (torch.int64, torch.int32, torch.bool)
FOLD_MAX_NUMEL = 1 << 16  # a node on constants producing more than this (and growing its input) stays a node

ONNX_DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT64: torch.int64, TensorProto.INT32: torch.int32,
    TensorProto.INT16: torch.int16, TensorProto.INT8: torch.int8, TensorProto.UINT8: torch.uint8,
    TensorProto.BOOL: torch.bool, TensorProto.UINT16: torch.uint16, TensorProto.UINT32: torch.uint32,
    TensorProto.UINT64: torch.uint64,
}
TORCH_TO_ONNX = {v: k for k, v in ONNX_DTYPES.items()}


def onnx_type_name(t: int) -> str:
    try:
        return TensorProto.DataType.Name(t)
    except ValueError:
        return f"type {t}"


class Unsupported(Exception):
    """Raised by a converter for a variant it cannot map; collected into one UnsupportedOpError."""


class _Missing:
    """Stands for the outputs of a node that could not be converted, so import goes on collecting."""


MISSING = _Missing()
Entry = Any  # torch.Tensor (build-time constant) | Value (run-time IR value) | _Missing


# ------------------------------------------------------------------------------------------ loading
def _safe_location(base: Path, location: str, what: str) -> Path:
    loc = Path(location)
    if loc.is_absolute() or ".." in loc.parts:
        raise InputError(f"{what}: external data location {location!r} must be a relative path inside the "
                         "model's directory")
    return base / loc


def load_model(model: Any, base_dir: str | os.PathLike | None = None) -> tuple[onnx.ModelProto, Path | None]:
    """The ModelProto of ``model`` (path, bytes or ModelProto) and the directory external data is read from."""
    if isinstance(model, onnx.ModelProto):
        return model, Path(base_dir) if base_dir is not None else None
    if isinstance(model, (bytes, bytearray)):
        try:
            return onnx.load_model_from_string(bytes(model)), Path(base_dir) if base_dir is not None else None
        except Exception as e:
            raise InputError(f"the bytes given are not an ONNX model ({type(e).__name__}: "
                             f"{_first_line(e)})") from None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise InputError(f"{path}: no such ONNX model file")
        try:
            m = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise InputError(f"{path}: not a valid ONNX model ({type(e).__name__}: {_first_line(e)})") from None
        if not m.graph.node and not m.graph.output:
            raise InputError(f"{path}: not a valid ONNX model (it has no graph: no nodes and no outputs)")
        return m, Path(base_dir) if base_dir is not None else path.parent
    raise InputError(f"an ONNX model must be a path, bytes or onnx.ModelProto, got {type(model).__name__}")


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else ""


def tensor_from_proto(tp: TensorProto, base_dir: Path | None, what: str = "") -> torch.Tensor:
    """A torch tensor from a TensorProto, reading external data (``*.onnx.data``) from ``base_dir``."""
    what = what or f"tensor {tp.name!r}"
    if tp.data_type == TensorProto.STRING:
        raise Unsupported(f"{what} holds strings, which trtjit does not support")
    if tp.data_location == TensorProto.EXTERNAL:
        info = {e.key: e.value for e in tp.external_data}
        if "location" not in info:
            raise InputError(f"{what}: external data without a location")
        if base_dir is None:
            raise InputError(f"{what}: the model stores it in external file {info['location']!r}; pass the model "
                             "as a file path (or base_dir=) so trtjit can find it")
        f = _safe_location(base_dir, info["location"], what)
        if not f.is_file():
            raise InputError(f"{what}: external data file {str(f)!r} does not exist")
        off, length = int(info.get("offset", 0)), info.get("length")
        need = off + (int(length) if length is not None else 0)
        n = math.prod(tp.dims) * _itemsize(tp.data_type)
        need = max(need, off + n) if length is None else need
        if f.stat().st_size < need:
            raise InputError(f"{what}: external data file {str(f)!r} is truncated ({f.stat().st_size} bytes, "
                             f"needs {need})")
        if length is not None and int(length) != n:
            raise InputError(f"{what}: external data length {length} does not match {list(tp.dims)} of "
                             f"{onnx_type_name(tp.data_type)} ({n} bytes)")
    try:
        arr = numpy_helper.to_array(tp, str(base_dir) if base_dir is not None else "")
    except Exception as e:
        raise InputError(f"{what}: cannot read its data ({type(e).__name__}: {_first_line(e)})") from None
    return np_to_torch(arr, what)


def _itemsize(dt: int) -> int:
    try:
        return int(np.dtype(helper.tensor_dtype_to_np_dtype(dt)).itemsize)
    except Exception:
        return 1


def np_to_torch(arr: Any, what: str = "tensor") -> torch.Tensor:
    arr = np.asarray(arr)
    if arr.dtype.name in NARROW_BY_NP:
        return NARROW_BY_NP[arr.dtype.name].to_storage(arr)
    if arr.dtype == object or arr.dtype.kind in "USO":
        raise Unsupported(f"{what} holds strings or objects, which trtjit does not support")
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(np.array(arr, order="C", copy=True).view(np.int16)).view(torch.bfloat16)
    if arr.dtype.kind == "V" or arr.dtype.name not in _NP_OK:
        raise Unsupported(f"{what} has dtype {arr.dtype.name}, which trtjit does not support")
    try:
        return torch.from_numpy(np.array(arr, order="C", copy=True))
    except TypeError:
        raise Unsupported(f"{what} has numpy dtype {arr.dtype}, which trtjit does not support") from None


_NP_OK = {"float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool", "uint16", "uint32",
          "uint64"}


def torch_to_np(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        import ml_dtypes  # onnx depends on it

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.detach().cpu().numpy()


# ---------------------------------------------------------------------------------- input binding
def _is_shape(x: Any) -> bool:
    return isinstance(x, (tuple, list, torch.Size)) and all(isinstance(s, (int, np.integer)) for s in x)


ABSENT = "absent"  # the example of an empty optional input


def _as_example(x: Any, name: str) -> tuple[tuple[int, ...], Any]:
    if x is None:
        return (), ABSENT
    if isinstance(x, (list, tuple)) and x and all(isinstance(t, (torch.Tensor, np.ndarray)) for t in x):
        # the tensors of a sequence input
        return (len(x),), [_as_example(t, f"{name}[{i}]")[1] for i, t in enumerate(x)]
    if isinstance(x, torch.Tensor):
        return tuple(int(s) for s in x.shape), x
    if isinstance(x, np.ndarray) or np.isscalar(x) and not isinstance(x, (int, float)):
        t = np_to_torch(np.asarray(x), f"example for input {name!r}")
        return tuple(t.shape), t
    if _is_shape(x):
        return tuple(int(s) for s in x), None
    raise InputError(f"input {name!r}: expected an example tensor (torch or numpy) or a shape, got "
                     f"{type(x).__name__}")


def normalize_inputs(inputs: Any, names: list[str]) -> dict[str, tuple[tuple[int, ...], torch.Tensor | None]]:
    """``inputs`` as {input name: (shape, example tensor or None)}."""
    if inputs is None:
        return {}
    if isinstance(inputs, dict):
        unknown = [k for k in inputs if k not in names]
        if unknown:
            raise InputError(f"inputs name {unknown}, which the model does not have; its inputs are {names}")
        return {k: _as_example(v, k) for k, v in inputs.items()}
    if isinstance(inputs, (torch.Tensor, np.ndarray)) or (_is_shape(inputs) and len(inputs) and len(names) == 1
                                                          and not isinstance(inputs[0], (tuple, list))):
        inputs = [inputs]
    if not isinstance(inputs, (tuple, list)):
        raise InputError("inputs must be example tensors, shapes, or a dict {input name: tensor or shape}; got "
                         f"{type(inputs).__name__}")
    if len(inputs) != len(names):
        raise InputError(f"the model takes {len(names)} input(s) {names}, got {len(inputs)}")
    return {n: _as_example(v, n) for n, v in zip(names, inputs)}


# ------------------------------------------------------------------------------------- the importer
class Importer:
    """One import: the IR graph being built and the environment of ONNX value names."""

    def __init__(self, model: onnx.ModelProto, base_dir: Path | None, inputs: Any, registry: Any = None) -> None:
        self.model = model
        self.base_dir = base_dir
        self.g = Graph()
        self.env: dict[str, Entry] = {}
        self.unsupported: dict[str, list[str]] = {}
        self.examples: dict[str, torch.Tensor] = {}
        self.bound: dict[str, torch.Tensor] = {}
        self.const_values: dict[int, Value] = {}
        self.const_names: dict[int, str] = {}
        self.dims: dict[str, int] = {}
        self.narrow: dict[str, int] = {}  # value name -> ONNX narrow element type (see NARROW)
        self.registry = registry
        self.opsets = {(o.domain or ""): o.version for o in model.opset_import}
        if "ai.onnx" in self.opsets:
            self.opsets.setdefault("", self.opsets["ai.onnx"])
        self.opset = self.opsets.get("", MAX_OPSET)
        self.fallback_cache: dict[Any, Any] = {}
        self._inputs = inputs

    # ------------------------------------------------------------------- graph inputs and constants
    def run(self) -> Graph:
        g = self.model.graph
        if self.opset < MIN_OPSET:
            raise InputError(f"the model uses ONNX opset {self.opset}; trtjit imports opsets {MIN_OPSET} to "
                             f"{MAX_OPSET} (convert it with onnx.version_converter.convert_version)")
        if self.opset > MAX_OPSET:
            raise InputError(f"the model uses ONNX opset {self.opset}, newer than this onnx package knows "
                             f"({MAX_OPSET}); upgrade onnx")
        inits = {t.name for t in g.initializer}
        real = [vi for vi in g.input if vi.name not in inits]
        given = normalize_inputs(self._inputs, [vi.name for vi in real])
        for t in g.initializer:
            self.env[t.name] = self._tensor(t, f"initializer {t.name!r}")
            self.const_names[id(self.env[t.name])] = t.name
            if t.data_type in NARROW:
                self.narrow[t.name] = t.data_type
        for t in g.sparse_initializer:
            self.env[t.values.name] = self._sparse(t)
        for vi in real:
            self._add_input(vi, given.get(vi.name))
        self.convert_nodes(list(g.node), self.opset)
        if self.unsupported:
            raise UnsupportedOpError(self.unsupported)
        outs, names, seqs = [], [], {}
        for vi in g.output:
            e = self.env.get(vi.name)
            if e is None:
                raise InputError(f"graph output {vi.name!r} is not produced by any node")
            if isinstance(e, Seq):  # a sequence output: its tensors as outputs "name.0", "name.1" ...
                seqs[vi.name] = len(e)
                for i, t in enumerate(e):
                    outs.append(self.value(t, f"{vi.name}.{i}") if isinstance(t, torch.Tensor) else t)
                    names.append(f"{vi.name}.{i}")
                continue
            v = self.value(e, vi.name)
            self._check_declared(vi, v)
            outs.append(v)
            names.append(vi.name)
        self.g.outputs = outs
        self.g.meta["output_names"] = names
        if seqs:
            self.g.meta["onnx_sequence_outputs"] = seqs
        narrow_out = {n: NARROW[self.narrow[n]].name for n in names if n in self.narrow}
        if narrow_out:
            self.g.meta["onnx_narrow_outputs"] = narrow_out  # stored as NARROW[...].storage
        self.g.meta["input_names"] = list(self.g.inputs)
        self.g.meta["out_spec"] = None
        self.g.meta["frontend"] = "onnx"
        self.g.meta["onnx_opset"] = self.opset
        # ONNX tensor name -> IR value, for INT8 calibration caches: TensorRT names tensors as ONNX does
        self.g.meta["onnx_tensors"] = {k: list(v) for k, v in self.env.items() if isinstance(v, Value)
                                       and k != (v.node if v.index == 0 else f"{v.node}:{v.index}")}
        if self.bound:
            self.g.meta["bound_inputs"] = {k: {"dtype": dtype_name(t.dtype), "shape": list(t.shape),
                                               "value": t.reshape(-1).tolist()} for k, t in self.bound.items()}
        if self.dims:
            self.g.meta["onnx_dims"] = dict(self.dims)
        return self.g

    def _tensor(self, tp: TensorProto, what: str) -> torch.Tensor | _Missing:
        try:
            return tensor_from_proto(tp, self.base_dir, what)
        except Unsupported as e:
            self.unsupported.setdefault("<initializer>", []).append(f"{tp.name} ({e})")
            return MISSING

    def _sparse(self, sp: onnx.SparseTensorProto) -> torch.Tensor | _Missing:
        try:
            arr = numpy_helper.to_array(onnx.numpy_helper.from_array(
                _sparse_to_dense(sp, self.base_dir), sp.values.name))
            return np_to_torch(arr, f"sparse initializer {sp.values.name!r}")
        except Unsupported as e:
            self.unsupported.setdefault("<initializer>", []).append(f"{sp.values.name} ({e})")
            return MISSING

    def _add_input(self, vi: onnx.ValueInfoProto, given: tuple[tuple[int, ...], torch.Tensor | None] | None) -> None:
        name = vi.name
        if vi.type.HasField("optional_type"):
            if given is not None and given[1] is ABSENT:
                self.env[name] = None  # an empty optional: as an omitted input
                return
            inner = onnx.ValueInfoProto()
            inner.name = name
            inner.type.CopyFrom(vi.type.optional_type.elem_type)
            self._add_input(inner, given)
            return
        if vi.type.HasField("sequence_type") and vi.type.sequence_type.elem_type.HasField("tensor_type"):
            self._add_sequence_input(vi, given)
            return
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            raise InputError(f"graph input {name!r} is not a tensor ({vi.type.WhichOneof('value')}); trtjit "
                             "engines take tensor inputs only")
        if tt.elem_type in NARROW:
            self.narrow[name] = tt.elem_type
        elif tt.elem_type not in ONNX_DTYPES:
            raise InputError(f"graph input {name!r} has element type {onnx_type_name(tt.elem_type)}, which "
                             "trtjit does not support")
        dtype = NARROW[tt.elem_type].storage if tt.elem_type in NARROW else ONNX_DTYPES[tt.elem_type]
        declared = list(tt.shape.dim) if tt.HasField("shape") else None
        if given is None:
            if declared is None or any(not d.HasField("dim_value") for d in declared):
                dyn = [d.dim_param or "?" for d in (declared or []) if not d.HasField("dim_value")]
                raise InputError(f"graph input {name!r} has dynamic dimension(s) {dyn or '(unknown rank)'}; pass "
                                 "its shape (or an example tensor) to trtjit.compile")
            shape = tuple(int(d.dim_value) for d in declared)
        else:
            shape, ex = given
            if ex is not None:
                if ex.dtype != dtype:
                    raise InputError(f"input {name!r}: the model declares {onnx_type_name(tt.elem_type)} "
                                     f"({dtype}), the example tensor is {ex.dtype}")
                self.examples[name] = ex.detach().cpu()
            if declared is not None:
                if len(declared) != len(shape):
                    raise InputError(f"input {name!r}: the model declares rank {len(declared)} "
                                     f"{_fmt_dims(declared)}, got shape {list(shape)}")
                for i, (d, s) in enumerate(zip(declared, shape)):
                    if d.HasField("dim_value") and d.dim_value != s:
                        raise InputError(f"input {name!r}: dimension {i} is {d.dim_value} in the model, got {s}"
                                         f" (shape {list(shape)})")
                    if d.dim_param:
                        if d.dim_param in self.dims and self.dims[d.dim_param] != s:
                            raise InputError(f"input {name!r}: dimension {i} ({d.dim_param!r}) is {s}, but "
                                             f"{d.dim_param!r} was bound to {self.dims[d.dim_param]} by another "
                                             "input")
                        self.dims[d.dim_param] = s
        self.env[name] = self.g.add_input(name, TensorSpec(shape, dtype))

    def _add_sequence_input(self, vi: onnx.ValueInfoProto, given: Any) -> None:
        """A sequence input: one graph input per tensor of the example sequence ("name.0", "name.1" ...),
        so an engine is built for a sequence of that length and those shapes."""
        tt = vi.type.sequence_type.elem_type.tensor_type
        if tt.elem_type not in ONNX_DTYPES:
            raise InputError(f"graph input {vi.name!r}: a sequence of {onnx_type_name(tt.elem_type)}, which trtjit "
                             "does not support")
        if given is not None and given == ((), None):
            given = ((0,), [])  # [] given: an empty sequence
        if given is None or not isinstance(given[1], list):
            raise InputError(f"graph input {vi.name!r} is a sequence: pass its tensors (a list) as the example")
        seq = Seq()
        for i, ex in enumerate(given[1]):
            if ex.dtype != ONNX_DTYPES[tt.elem_type]:
                raise InputError(f"input {vi.name!r}[{i}]: the model declares {onnx_type_name(tt.elem_type)}, the "
                                 f"example tensor is {ex.dtype}")
            n = f"{vi.name}.{i}"
            self.examples[n] = ex.detach().cpu()
            seq.append(self.g.add_input(n, TensorSpec(tuple(ex.shape), ex.dtype)))
        self.env[vi.name] = seq

    def _check_declared(self, vi: onnx.ValueInfoProto, v: Value) -> None:
        spec = self.g.spec(v)
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            return
        if tt.elem_type and ONNX_DTYPES.get(tt.elem_type) not in (None, spec.dtype):
            raise BuildError(f"graph output {vi.name!r}: the model declares {onnx_type_name(tt.elem_type)}, trtjit "
                             f"computed {spec.dtype}; a trtjit ONNX converter bug")
        if tt.HasField("shape"):
            dims = list(tt.shape.dim)
            ok = len(dims) == len(spec.shape) and all(
                (not d.HasField("dim_value") or d.dim_value == s) and
                (not d.dim_param or d.dim_param not in self.dims or self.dims[d.dim_param] == s)
                for d, s in zip(dims, spec.shape))
            if not ok and dims:
                raise BuildError(f"graph output {vi.name!r}: the model declares shape {_fmt_dims(dims)}, trtjit "
                                 f"computed {list(spec.shape)}")

    # ------------------------------------------------------------------------------ materializing
    def value(self, e: Entry, name: str = "const") -> Value:
        """The IR value of an environment entry (constants become constant nodes, once each)."""
        if isinstance(e, Value):
            return e
        if isinstance(e, torch.Tensor):
            key = id(e)
            if key not in self.const_values:
                if e.dtype not in DTYPE_NAMES:
                    raise Unsupported(f"constant {name!r} has dtype {e.dtype}, which trtjit does not support")
                name = self.const_names.get(key, name)
                self.const_values[key] = self.g.add_constant(_const_name(name), e.contiguous(), source=name)
                self._keep = getattr(self, "_keep", [])
                self._keep.append(e)  # id() stays unique while the tensor lives
            return self.const_values[key]
        raise Unsupported("value is not available")

    # ----------------------------------------------------------------------------------- node loop
    def convert_nodes(self, nodes: Sequence[onnx.NodeProto], opset: int, scope: str = "") -> None:
        for i, node in enumerate(nodes):
            self.convert_node(node, opset, i, scope)

    def convert_node(self, node: onnx.NodeProto, opset: int, index: int = 0, scope: str = "") -> None:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        name = scope + (node.name or (node.output[0] if node.output and node.output[0] else f"{node.op_type}_{index}"))
        key = node.op_type if not domain else f"{domain}::{node.op_type}"
        ins: list[Entry | None] = []
        for n in node.input:
            if not n:
                ins.append(None)
            elif n in self.env:
                ins.append(self.env[n])
            else:
                raise InputError(f"node {name!r} ({key}): input {n!r} is not a graph input, initializer or output "
                                 "of an earlier node (the model is not in topological order or is malformed)")
        known = (domain == "" and node.op_type in CONVERTERS) or key in DOMAIN_CONVERTERS or \
            self._plugin_for(node, domain) is not None
        if any(x is MISSING for x in ins):
            if not known and not self._schema_function(node, opset, domain):
                self.unsupported.setdefault(key, []).append(name)
            self._set_outputs(node, [MISSING] * len(node.output))
            return
        if any(isinstance(x, Seq) for x in ins) and (domain or node.op_type not in SEQUENCE_OPS):
            self.unsupported.setdefault(key, []).append(f"{name} (a sequence input; trtjit takes sequences only in "
                                                        f"{', '.join(SEQUENCE_OPS)})")
            self._set_outputs(node, [MISSING] * len(node.output))
            return
        narrow_in = [n for n in node.input if n in self.narrow]
        if narrow_in and (domain or node.op_type not in NARROW_OPS):
            t = NARROW[self.narrow[narrow_in[0]]].name
            self.unsupported.setdefault(key, []).append(
                f"{name} (input {narrow_in[0]!r} has element type {t}, which trtjit takes only in "
                f"{', '.join(NARROW_OPS)})")
            self._set_outputs(node, [MISSING] * len(node.output))
            return
        ctx = NodeCtx(self, node, name, ins, opset if not domain else self.opsets.get(domain, 1), domain)
        try:
            outs = self._dispatch(ctx, domain)
        except Unsupported as e:
            outs = self._try_fold(ctx, str(e))
            if outs is None:
                self.unsupported.setdefault(key, []).append(f"{name} ({e})" if str(e) else name)
                outs = [MISSING] * len(node.output)
        except TrtjitError as e:
            if isinstance(e, UnsupportedOpError):
                raise
            raise type(e)(f"node {name!r} ({key}): {e}") from e if not str(e).startswith("node ") else e
        except Exception as e:
            raise BuildError(f"node {name!r} ({key}): {type(e).__name__}: {_first_line(e)}") from e
        self._set_outputs(node, outs)

    def _set_outputs(self, node: onnx.NodeProto, outs: Sequence[Entry]) -> None:
        outs = _as_list(outs)
        for i, n in enumerate(node.output):
            if not n:
                continue
            if i < len(outs) and outs[i] is None and node.op_type in OPTIONAL_OPS:
                self.env[n] = None  # an empty optional
                continue
            if i >= len(outs) or outs[i] is None:
                raise BuildError(f"node {node.name or n!r} ({node.op_type}): output {i} ({n!r}) is not supported")
            self.env[n] = outs[i]

    def _dispatch(self, ctx: NodeCtx, domain: str) -> list[Entry]:
        node = ctx.node
        plugin = self._plugin_for(node, domain)
        if domain == "" and node.op_type in CONVERTERS:
            check_attrs(node, ctx.opset)
            out = CONVERTERS[node.op_type](ctx)
        elif domain and ctx.key in DOMAIN_CONVERTERS and plugin is None:
            out = DOMAIN_CONVERTERS[ctx.key](ctx)
        elif plugin is not None:
            out = _convert_plugin(ctx, plugin)
        else:
            folded = self._try_fold(ctx, "")
            if folded is not None:
                return folded
            if self._expand_function(ctx):
                return [self.env[n] if n else None for n in node.output]
            what = "is not in the default ONNX domain and no plugin is registered for it" if domain else \
                "has no trtjit converter"
            raise Unsupported(f"op {ctx.key} {what}" if domain else "")
        return _as_list(out)

    def _plugin_for(self, node: onnx.NodeProto, domain: str) -> Any:
        from trtjit import plugins

        reg = self.registry or plugins.REGISTRY
        if domain == "" and node.op_type in CONVERTERS:
            return None
        return reg.find_for_onnx(domain, node.op_type, _attr_value(node, "plugin_version"))

    # ----------------------------------------------------------------------- constant evaluation
    def _try_fold(self, ctx: NodeCtx, reason: str) -> list[Entry] | None:
        """Outputs of ``ctx.node`` computed now with onnx's reference implementation when its inputs are
        all known at build time (binding shape-tensor inputs), else None."""
        node = ctx.node
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
            return None
        vals = []
        for i, x in enumerate(ctx.ins):
            if x is None:
                vals.append(None)
            elif isinstance(x, torch.Tensor):
                vals.append(x)
            elif self._bindable(node.input[i], x) or not reason and self._bindable(node.input[i], x, any_dtype=True) \
                    and x.node in self.examples and self.examples[x.node].dim() == 0:  # converter-less ops: scalars
                vals.append(None)  # bound below, only if every input qualifies
            else:
                return None
        for i, x in enumerate(ctx.ins):
            if isinstance(x, Value):
                vals[i] = self.bind(node.input[i], x)
        try:
            outs = _reference_run(node, vals, ctx.opset, self.opsets)
        except Exception as e:
            raise Unsupported(f"{reason + '; ' if reason else ''}constant evaluation failed: {type(e).__name__}: "
                              f"{_first_line(e)}") from None
        return [np_to_torch(o, f"output of {ctx.name}") if o is not None else None for o in outs]

    def _bindable(self, name: str, v: Value, any_dtype: bool = False) -> bool:
        """Whether graph input ``v`` (named ``name``) can be bound to its example value at build time: a small
        integer/bool tensor of rank <= 1 (a shape tensor); ``any_dtype`` where an op needs the value at
        build time (the scales of a Resize ...)."""
        ex = self.examples.get(v.node)
        return (v.node in self.g.inputs and v.index == 0 and ex is not None and ex.dim() <= 1
                and ex.numel() <= SHAPE_TENSOR_MAX_NUMEL and (any_dtype or ex.dtype in SHAPE_TENSOR_DTYPES))

    def bind(self, name: str, v: Value) -> torch.Tensor:
        """The build-time value of shape-tensor input ``v`` (from its example); the engine checks it."""
        t = self.examples[v.node]
        self.bound[v.node] = t
        return t

    def evaluate(self, v: Value) -> torch.Tensor | None:
        """The build-time value of run-time value ``v`` when it is computed from shape-tensor inputs only
        (evaluated with the reference interpreter on the example values, which get bound), else None."""
        import networkx as nx

        from trtjit.interpreter import run_graph

        if v.node in self.g.inputs:
            return self.bind(v.node, v) if self._bindable(v.node, v, any_dtype=True) else None
        anc = nx.ancestors(self.g.nx, v.node) | {v.node}
        leaves = [n for n in anc if self.g.node(n).op == "input"]
        if not leaves or any(not self._bindable(n, Value(n), any_dtype=True) for n in leaves):
            return None
        if any(self.g.node(n).op == "plugin" for n in anc):
            return None
        sub = self.g.subgraph(anc - set(leaves))
        sub.outputs = [v]
        try:
            out = run_graph(sub, [self.examples[n] for n, _ in sub.meta["external_inputs"]])[0]
        except Exception:
            return None
        for n in leaves:
            self.bind(n, Value(n))
        return out

    # ------------------------------------------------------------------------- function expansion
    def _schema_function(self, node: onnx.NodeProto, opset: int, domain: str) -> bool:
        if domain:
            return False
        try:
            s = onnx.defs.get_schema(node.op_type, opset, "")
        except Exception:
            return False
        return bool(s.has_function or s.has_context_dependent_function)

    def _expand_function(self, ctx: NodeCtx) -> bool:
        """Expand a node whose schema (default domain or another one onnx knows, as ai.onnx.preview) is a
        function into its body."""
        node = ctx.node
        try:
            schema = onnx.defs.get_schema(node.op_type, ctx.opset, ctx.domain)
        except Exception:
            return False
        fn = None
        versions = [v for v in schema.function_opset_versions if v <= ctx.opset]
        if versions:
            fn = onnx.FunctionProto()
            fn.ParseFromString(schema.get_function_with_opset_version(max(versions)))
        else:
            versions = [v for v in schema.context_dependent_function_opset_versions if v <= ctx.opset]
            if not versions:
                return False
            types = []
            for x in ctx.ins:
                if x is None:
                    types.append(onnx.TypeProto())
                else:
                    spec = ctx.spec(x)
                    if spec.dtype not in TORCH_TO_ONNX:
                        return False
                    types.append(helper.make_tensor_type_proto(TORCH_TO_ONNX[spec.dtype], list(spec.shape)))
            full = onnx.NodeProto()
            full.CopyFrom(node)
            _add_default_attrs(full, schema)
            try:
                raw = schema.get_context_dependent_function_with_opset_version(
                    max(versions), full.SerializeToString(), [t.SerializeToString() for t in types])
            except Exception:
                return False
            if not raw:
                return False
            fn = onnx.FunctionProto()
            fn.ParseFromString(raw)
        full = onnx.NodeProto()
        full.CopyFrom(node)
        _add_default_attrs(full, schema)
        prefix = f"{ctx.name}::"
        body = expand_function(full, fn, prefix)
        fn_opset = next((o.version for o in fn.opset_import if o.domain in ("", "ai.onnx")),
                        self.opset if ctx.domain else ctx.opset)
        self.convert_nodes(body, fn_opset, scope=prefix)
        return True

    # ------------------------------------------------------------------------------ subgraphs (If)
    def inline_graph(self, g: onnx.GraphProto, scope: str, opset: int) -> list[Entry]:
        for t in g.initializer:
            self.env[t.name] = self._tensor(t, f"initializer {t.name!r}")
        self.convert_nodes(list(g.node), opset, scope=scope)
        return [self.env.get(o.name, MISSING) for o in g.output]


def _as_list(out: Any) -> list[Entry]:
    if isinstance(out, (list, tuple)) and not isinstance(out, Value):
        return list(out)
    return [out]


def _fmt_dims(dims: Sequence[onnx.TensorShapeProto.Dimension]) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + "]"


def _const_name(name: str) -> str:
    return name if name else "const"


def _sparse_to_dense(sp: onnx.SparseTensorProto, base_dir: Path | None) -> np.ndarray:
    values = numpy_helper.to_array(sp.values, str(base_dir) if base_dir else "")
    idx = numpy_helper.to_array(sp.indices, str(base_dir) if base_dir else "")
    dense = np.zeros(list(sp.dims), dtype=values.dtype)
    if idx.ndim == 1:
        dense.reshape(-1)[idx] = values
    else:
        dense[tuple(idx.T)] = values
    return dense


def _add_default_attrs(node: onnx.NodeProto, schema: Any) -> None:
    have = {a.name for a in node.attribute}
    for name, a in schema.attributes.items():
        if name not in have and a.default_value and a.default_value.type:
            node.attribute.append(a.default_value)


def expand_function(node: onnx.NodeProto, fn: onnx.FunctionProto, prefix: str) -> list[onnx.NodeProto]:
    """The nodes of function ``fn`` applied to ``node``: formal inputs/outputs renamed to the node's,
    attribute references resolved, internal names prefixed."""
    io = {}
    for i, n in enumerate(fn.input):
        io[n] = node.input[i] if i < len(node.input) else ""
    for i, n in enumerate(fn.output):
        if i < len(node.output) and node.output[i]:
            io[n] = node.output[i]
    attrs = {a.name: a for a in node.attribute}

    def rename(n: str) -> str:
        return io[n] if n in io else ("" if not n else prefix + n)

    return [_rename_node(inner, rename, attrs, prefix) for inner in fn.node]


def _rename_node(inner: onnx.NodeProto, rename: Callable[[str], str], attrs: dict[str, AttributeProto],
                 prefix: str) -> onnx.NodeProto:
    """A copy of function-body node ``inner`` with its value names renamed and attribute references
    resolved, in the subgraphs it holds (the branches of an If ...) too."""
    nn = onnx.NodeProto()
    nn.CopyFrom(inner)
    del nn.input[:]
    del nn.output[:]
    del nn.attribute[:]
    nn.input.extend(rename(n) for n in inner.input)
    nn.output.extend(rename(n) for n in inner.output)
    for a in inner.attribute:
        if a.ref_attr_name:
            if a.ref_attr_name in attrs:
                na = AttributeProto()
                na.CopyFrom(attrs[a.ref_attr_name])
                na.name = a.name
                nn.attribute.append(na)
            continue
        na = AttributeProto()
        na.CopyFrom(a)
        if a.type == AttributeProto.GRAPH:
            na.g.CopyFrom(_rename_graph(a.g, rename, attrs, prefix))
        elif a.type == AttributeProto.GRAPHS:
            del na.graphs[:]
            na.graphs.extend(_rename_graph(sg, rename, attrs, prefix) for sg in a.graphs)
        nn.attribute.append(na)
    if nn.name:
        nn.name = prefix + nn.name
    return nn


def _rename_graph(g: onnx.GraphProto, rename: Callable[[str], str], attrs: dict[str, AttributeProto],
                  prefix: str) -> onnx.GraphProto:
    out = onnx.GraphProto()
    out.CopyFrom(g)
    del out.node[:]
    out.node.extend(_rename_node(n, rename, attrs, prefix) for n in g.node)
    for vi in list(out.input) + list(out.output) + list(out.value_info):
        vi.name = rename(vi.name)
    for t in out.initializer:
        t.name = rename(t.name)
    return out


def _attr_value(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _reference_run(node: onnx.NodeProto, vals: list[torch.Tensor | None], opset: int,
                   opsets: dict[str, int]) -> list[Any]:
    """Run one node with onnx's numpy reference implementation."""
    from onnx.reference import ReferenceEvaluator

    feeds, inputs = {}, []
    for i, (n, v) in enumerate(zip(node.input, vals)):
        if not n or v is None:
            continue
        arr = torch_to_np(v)
        key = f"in{i}"
        feeds[key] = arr
        inputs.append(helper.make_tensor_value_info(key, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape)))
    nn = onnx.NodeProto()
    nn.CopyFrom(node)
    del nn.input[:]
    nn.input.extend(f"in{i}" if n and vals[i] is not None else "" for i, n in enumerate(node.input))
    del nn.output[:]
    nn.output.extend(f"out{i}" if n else "" for i, n in enumerate(node.output))
    outs = [helper.make_value_info(f"out{i}", onnx.TypeProto()) for i, n in enumerate(node.output) if n]
    graph = helper.make_graph([nn], "fold", inputs, outs)
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in opsets.items() if d]
    model = helper.make_model(graph, opset_imports=ops)
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    res = ReferenceEvaluator(model).run(None, feeds)
    it = iter(res)
    return [next(it) if n else None for n in node.output]


# ------------------------------------------------------------------------------- converter context
class NodeCtx:
    """What a converter sees: the node, its inputs (constants or IR values), its attributes, and helpers
    that add IR nodes (folding them at once when every input is a constant)."""

    def __init__(self, imp: Importer, node: onnx.NodeProto, name: str, ins: list[Entry | None], opset: int,
                 domain: str) -> None:
        self.imp = imp
        self.g = imp.g
        self.node = node
        self.name = name
        self.ins = ins
        self.opset = opset
        self.domain = domain
        self.key = node.op_type if not domain else f"{domain}::{node.op_type}"
        self.attrs = {a.name: a for a in node.attribute}
        self._first = True

    # ----------------------------------------------------------------------------- attributes, inputs
    def attr(self, name: str, default: Any = None) -> Any:
        a = self.attrs.get(name)
        if a is None:
            return default
        if a.type == AttributeProto.TENSOR:
            return tensor_from_proto(a.t, self.imp.base_dir, f"attribute {name!r} of node {self.name!r}")
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, list) and v and isinstance(v[0], bytes):
            return [x.decode() for x in v]
        return v

    def n_in(self) -> int:
        return len(self.ins)

    def has(self, i: int) -> bool:
        return i < len(self.ins) and self.ins[i] is not None

    def input(self, i: int) -> Entry:
        if not self.has(i):
            raise BuildError(f"node {self.name!r} ({self.key}): required input {i} is missing")
        return self.ins[i]

    def is_const(self, i: int) -> bool:
        return self.has(i) and isinstance(self.ins[i], torch.Tensor)

    def const(self, i: int, what: str = "") -> torch.Tensor:
        """Input ``i`` as a build-time tensor; shape-tensor graph inputs are bound to their example."""
        x = self.input(i)
        if isinstance(x, torch.Tensor):
            return x
        src = self.node.input[i]
        val = self.imp.evaluate(x)
        if val is not None:
            return val
        what = what or f"input {i}"
        if x.node in self.g.inputs and x.node == src:
            raise Unsupported(f"{what} ({src!r}) is a graph input whose value must be known at build time (a "
                              "shape tensor); pass an example tensor for it")
        raise Unsupported(f"{what} ({src!r}) must be known at build time, but it is computed at run time "
                          "(data-dependent shape)")

    def ints(self, i: int, what: str = "") -> list[int]:
        return [int(v) for v in self.const(i, what).reshape(-1).tolist()]

    def opt_ints(self, i: int, attr: str | None = None, what: str = "") -> list[int] | None:
        """Integer list from input ``i`` (newer opsets) or attribute ``attr`` (older ones), else None."""
        if self.has(i):
            return self.ints(i, what or attr or "")
        if attr is not None:
            v = self.attr(attr)
            return None if v is None else [int(x) for x in (v if isinstance(v, list) else [v])]
        return None

    # ----------------------------------------------------------------------------------- specs
    def spec(self, x: Entry) -> TensorSpec:
        if isinstance(x, torch.Tensor):
            return TensorSpec(tuple(x.shape), x.dtype)
        return self.g.spec(x)

    def shape(self, x: Entry) -> tuple[int, ...]:
        return self.spec(x).shape

    def dtype(self, x: Entry) -> torch.dtype:
        return self.spec(x).dtype

    def rank(self, x: Entry) -> int:
        return len(self.spec(x).shape)

    # --------------------------------------------------------------------------------- building
    def value(self, x: Entry) -> Value:
        return self.imp.value(x, f"{self.name}.const")

    def scalar(self, v: float | int | bool, like: Entry | torch.dtype) -> torch.Tensor:
        dt = like if isinstance(like, torch.dtype) else self.dtype(like)
        return torch.tensor(v, dtype=dt)

    def add(self, op: str, inputs: Sequence[Entry], **attrs: Any) -> Any:
        """Add IR op ``op``; folded into a constant right away when every input is one."""
        opdef = get_op(op)
        if opdef.kind in ("source", "fused"):
            raise BuildError(f"internal: cannot add a {op} node")
        if all(isinstance(x, torch.Tensor) for x in inputs) and inputs:
            a = opdef.normalize_attrs(attrs, where=self.name)
            read = sum(x.numel() for x in inputs)
            specs = opdef.infer([self.spec(x) for x in inputs], a)
            grow = sum(s.numel for s in specs)
            if grow <= max(FOLD_MAX_NUMEL, 4 * read):
                outs = opdef.run(list(inputs), a)
                outs = [o.contiguous() for o in outs]
                return outs[0] if len(outs) == 1 else tuple(outs)
        vals = [self.value(x) for x in inputs]
        for x in inputs:
            if isinstance(x, torch.Tensor) and x.dtype not in DTYPE_NAMES:
                raise Unsupported(f"dtype {x.dtype} is not supported")
        for v in vals:
            if self.g.spec(v).dtype not in DTYPE_NAMES:
                raise Unsupported(f"dtype {self.g.spec(v).dtype} is not supported")
        name = self.name if self._first and self.name not in self.g else f"{self.name}.{op}"
        self._first = False
        node = self.g.add(op, vals, attrs, name=name, source=self.name)
        if len(node.outputs) == 1:
            return Value(node.name)
        return tuple(Value(node.name, i) for i in range(len(node.outputs)))

    def cast(self, x: Entry, dtype: torch.dtype) -> Entry:
        if self.dtype(x) == dtype:
            return x
        if dtype not in DTYPE_NAMES:
            raise Unsupported(f"cast to {dtype} is not supported")
        return self.add("cast", [x], dtype=dtype_name(dtype))

    def reshape(self, x: Entry, shape: Sequence[int]) -> Entry:
        shape = [int(s) for s in shape]
        if tuple(shape) == self.shape(x):
            return x
        return self.add("reshape", [x], shape=shape)


def _axis(a: int, rank: int, what: str = "axis") -> int:
    if not -max(rank, 1) <= a < max(rank, 1):
        raise BuildError(f"{what} {a} is out of range for rank {rank}")
    return a % rank if rank else 0


# ======================================================================================= converters
Converter = Callable[[NodeCtx], Any]
CONVERTERS: dict[str, Converter] = {}


def _registrar(table: dict[str, Converter]) -> Callable[..., Callable[[Converter], Converter]]:
    """A decorator factory registering a converter under one or more keys of ``table``."""
    def register(*keys: str) -> Callable[[Converter], Converter]:
        def deco(fn: Converter) -> Converter:
            for k in keys:
                table[k] = fn
            return fn
        return deco
    return register


converter = _registrar(CONVERTERS)


# Attributes each converter reads; any other attribute with a non-default value makes the node unsupported
# (so a semantic a converter does not know about is never silently ignored).
_A = {
    "ArgMax": "axis keepdims select_last_index", "ArgMin": "axis keepdims select_last_index",
    "Attention": "is_causal kv_num_heads q_num_heads qk_matmul_output_mode scale softcap softmax_precision "
                 "left_window_size right_window_size",
    "AveragePool": "auto_pad ceil_mode count_include_pad dilations kernel_shape pads strides",
    "BatchNormalization": "epsilon momentum training_mode", "BitShift": "direction",
    "Cast": "to saturate round_mode", "BitCast": "to", "CastLike": "saturate round_mode", "Celu": "alpha", "Concat": "axis",
    "Constant": "sparse_value value value_float value_floats value_int value_ints", "ConstantOfShape": "value",
    "Conv": "auto_pad dilations group kernel_shape pads strides", "CumSum": "exclusive reverse", "CumProd": "exclusive reverse",
    "DepthToSpace": "blocksize mode", "DequantizeLinear": "axis block_size output_dtype", "Dropout": "seed ratio",
    "Elu": "alpha", "EyeLike": "dtype k", "Flatten": "axis", "Gather": "axis", "GatherElements": "axis",
    "Gelu": "approximate", "Gemm": "alpha beta transA transB", "GroupNormalization": "epsilon num_groups stash_type",
    "HardSigmoid": "alpha beta", "Hardmax": "axis", "If": "then_branch else_branch", "InstanceNormalization": "epsilon",
    "IsInf": "detect_negative detect_positive", "LRN": "alpha beta bias size",
    "LayerNormalization": "axis epsilon stash_type", "LeakyRelu": "alpha", "LogSoftmax": "axis",
    "LpNormalization": "axis p", "LpPool": "auto_pad ceil_mode dilations kernel_shape p pads strides",
    "MaxPool": "auto_pad ceil_mode dilations kernel_shape pads storage_order strides",
    "MeanVarianceNormalization": "axes", "Mod": "fmod", "NegativeLogLikelihoodLoss": "ignore_index reduction",
    "OneHot": "axis", "QuantizeLinear": "axis block_size output_dtype precision saturate",
    "RMSNormalization": "axis epsilon stash_type",
    "Resize": "antialias axes coordinate_transformation_mode cubic_coeff_a exclude_outside extrapolation_value "
              "keep_aspect_ratio_policy mode nearest_mode",
    "Selu": "alpha gamma", "Shape": "end start", "Shrink": "bias lambd", "Softmax": "axis",
    "SoftmaxCrossEntropyLoss": "ignore_index reduction", "SpaceToDepth": "blocksize mode",
    "Split": "axis num_outputs split", "Swish": "alpha", "ThresholdedRelu": "alpha", "Transpose": "perm",
    "Trilu": "upper", "Upsample": "mode scales", "Reshape": "allowzero shape", "Squeeze": "axes", "Unsqueeze": "axes",
    "Slice": "axes ends starts", "Clip": "max min", "Pad": "mode pads value", "Einsum": "equation",
    "Compress": "axis", "GatherND": "batch_dims", "ReverseSequence": "batch_axis time_axis",
    "ConvTranspose": "auto_pad dilations group kernel_shape output_padding output_shape pads strides",
    "Add": "axis broadcast", "Sub": "axis broadcast", "Mul": "axis broadcast", "Div": "axis broadcast",
    "PRelu": "", "QLinearConv": "auto_pad dilations group kernel_shape pads strides",
    "ConvInteger": "auto_pad dilations group kernel_shape pads strides",
    "LSTM": "activation_alpha activation_beta activations clip direction hidden_size input_forget layout",
    "GRU": "activation_alpha activation_beta activations clip direction hidden_size layout linear_before_reset",
    "RNN": "activation_alpha activation_beta activations clip direction hidden_size layout",
    "DFT": "axis inverse onesided", "Loop": "body", "ScatterElements": "axis reduction", "Scatter": "axis",
    "Col2Im": "dilations pads strides", "ConcatFromSequence": "axis new_axis",
    "SplitToSequence": "axis keepdims", "SequenceMap": "body", "STFT": "onesided", "SequenceEmpty": "dtype", "ScatterND": "reduction", "MaxUnpool": "kernel_shape pads strides", "TensorScatter": "axis mode", "TopK": "axis k largest sorted",
    "Scan": "body num_scan_inputs scan_input_axes scan_input_directions scan_output_axes scan_output_directions "
            "directions", "GridSample": "align_corners mode padding_mode",
}
for _k in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceProd"):
    _A[_k] = "axes keepdims noop_with_empty_axes"
HANDLED_ATTRS: dict[str, set[str]] = {k: set(v.split()) for k, v in _A.items()}
IGNORED_ATTRS = {"consumed_inputs", "is_test"}  # legacy attributes without effect on inference


def check_attrs(node: onnx.NodeProto, opset: int) -> None:
    """Unsupported for an attribute the op's converter does not read, unless it has its default value."""
    handled = HANDLED_ATTRS.get(node.op_type, set())
    for a in node.attribute:
        if a.name in handled or a.name in IGNORED_ATTRS:
            continue
        try:
            default = onnx.defs.get_schema(node.op_type, opset, "").attributes[a.name].default_value
        except Exception:
            default = None
        if default is not None and default.type and helper.get_attribute_value(default) == \
                helper.get_attribute_value(a):
            continue
        raise Unsupported(f"attribute {a.name}={helper.get_attribute_value(a)!r} is not supported")


def supported_onnx_ops() -> list[str]:
    """Default-domain op types with a converter, then "domain::OpType" of the other domains'."""
    return sorted(CONVERTERS) + sorted(DOMAIN_CONVERTERS)


FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _need_float(c: NodeCtx, x: Entry) -> None:
    if c.dtype(x) not in FLOAT_DTYPES:
        raise Unsupported(f"input dtype {c.dtype(x)} (only floating point is supported)")


# ----------------------------------------------------------------------------------- constants
@converter("Constant")
def _constant(c: NodeCtx) -> torch.Tensor:
    for key, dt in (("value", None), ("value_float", torch.float32), ("value_floats", torch.float32),
                    ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in c.attrs:
            v = c.attr(key)
            return v if dt is None else torch.tensor(v, dtype=dt)
    if "sparse_value" in c.attrs:
        return np_to_torch(_sparse_to_dense(c.attrs["sparse_value"].sparse_tensor, c.imp.base_dir))
    raise Unsupported(f"Constant with attribute(s) {sorted(c.attrs)} (strings are not supported)")


@converter("Identity")
def _identity(c: NodeCtx) -> Entry:
    t = narrow_of(c, 0)
    if t is not None:
        _set_narrow(c, t)
    if not c.has(0):
        return [None]  # an empty optional
    x = c.input(0)
    return [x] if isinstance(x, list) else x  # a sequence is one output


@converter("Shape")
def _shape(c: NodeCtx) -> torch.Tensor:
    shape = list(c.shape(c.input(0)))
    r = len(shape)
    start, end = c.attr("start", 0), c.attr("end", None)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = r if end is None else min(max(end + r if end < 0 else end, 0), r)
    return torch.tensor(shape[start:end], dtype=torch.int64)


@converter("Size")
def _size(c: NodeCtx) -> torch.Tensor:
    return torch.tensor(math.prod(c.shape(c.input(0))), dtype=torch.int64)


@converter("ConstantOfShape")
def _constant_of_shape(c: NodeCtx) -> torch.Tensor:
    shape = c.ints(0, "shape")
    v = c.attr("value")
    if v is None:
        v = torch.zeros(1, dtype=torch.float32)
    return torch.full(shape, v.reshape(-1)[0].item(), dtype=v.dtype)


@converter("EyeLike")
def _eye_like(c: NodeCtx) -> torch.Tensor:
    x = c.input(0)
    n, m = c.shape(x)
    dt = ONNX_DTYPES.get(c.attr("dtype"), None) if c.attr("dtype") is not None else c.dtype(x)
    if dt is None:
        raise Unsupported(f"dtype {onnx_type_name(c.attr('dtype'))}")
    k = c.attr("k", 0)
    return torch.ones(n, m, dtype=torch.float64).triu(k).tril(k).to(dt)


# --------------------------------------------------------------------------------- elementwise
_UNARY = {"Abs": "abs", "Neg": "neg", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal",
          "Sin": "sin", "Cos": "cos", "Erf": "erf", "Floor": "floor", "Ceil": "ceil", "Tanh": "tanh",
          "Sigmoid": "sigmoid", "Relu": "relu", "Not": "logical_not"}


def _unary(op: str) -> Converter:
    def conv(c: NodeCtx) -> Entry:
        x = c.input(0)
        if op in ("floor", "ceil") and not c.dtype(x).is_floating_point:
            return x
        if op == "abs" and c.dtype(x) in (torch.uint8, torch.bool):
            return x
        if op in ("neg", "abs", "relu") and not c.dtype(x).is_floating_point and op != "neg":
            return _int_unary(c, op, x)
        return c.add(op, [x])
    return conv


def _int_unary(c: NodeCtx, op: str, x: Entry) -> Entry:
    zero = c.scalar(0, x)
    if op == "relu":
        return c.add("maximum", [x, zero])
    return c.add("where", [c.add("lt", [x, zero]), c.add("neg", [x]), x])


for _onnx, _ir in _UNARY.items():
    converter(_onnx)(_unary(_ir))


_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Equal": "eq", "Greater": "gt", "Less": "lt",
           "GreaterOrEqual": "ge", "LessOrEqual": "le", "And": "logical_and", "Or": "logical_or", "Xor": "ne"}


def _legacy_broadcast(c: NodeCtx, a: Entry, b: Entry) -> Entry:
    """Opset < 7 style ``broadcast=1, axis=k``: align b with a starting at dimension k."""
    if c.attr("broadcast", 0) and c.attr("axis") is not None:
        ra, rb = c.rank(a), c.rank(b)
        ax = _axis(c.attr("axis"), ra)
        return c.reshape(b, list(c.shape(b)) + [1] * (ra - ax - rb))
    return b


def _binary(op: str) -> Converter:
    def conv(c: NodeCtx) -> Entry:
        a, b = c.input(0), c.input(1)
        b = _legacy_broadcast(c, a, b)
        if c.dtype(a) != c.dtype(b):
            raise BuildError(f"inputs have different dtypes {c.dtype(a)} and {c.dtype(b)}")
        return c.add(op, [a, b])
    return conv


for _onnx, _ir in _BINARY.items():
    converter(_onnx)(_binary(_ir))


@converter("Div")
def _div(c: NodeCtx) -> Entry:
    a, b = c.input(0), _legacy_broadcast(c, c.input(0), c.input(1))
    dt = c.dtype(a)
    if dt.is_floating_point:
        return c.add("div", [a, b])
    # integer division truncates toward zero
    q = c.add("div", [c.cast(a, torch.float64), c.cast(b, torch.float64)])
    q = _trunc(c, q)
    return c.cast(q, dt)


def _trunc(c: NodeCtx, q: Entry) -> Entry:
    zero = c.scalar(0.0, q)
    return c.add("where", [c.add("lt", [q, zero]), c.add("ceil", [q]), c.add("floor", [q])])


@converter("Mod")
def _mod(c: NodeCtx) -> Entry:
    a, b = c.input(0), c.input(1)
    dt = c.dtype(a)
    fa, fb = c.cast(a, torch.float64), c.cast(b, torch.float64)
    q = c.add("div", [fa, fb])
    if c.attr("fmod", 0):
        q = _trunc(c, q)
    else:
        q = c.add("floor", [q])
    r = c.add("sub", [fa, c.add("mul", [q, fb])])
    if dt.is_floating_point and not c.attr("fmod", 0):
        # numpy's float mod: a zero result takes the divisor's sign; a finite x by an infinite y is x
        # when their signs agree (or x is 0), else y
        zero = c.scalar(0.0, r)
        r = c.add("where", [c.add("eq", [r, zero]), c.add("where", [c.add("lt", [fb, zero]), c.scalar(-0.0, r), zero]), r])
        inf_y = c.add("eq", [c.add("abs", [fb]), c.scalar(float("inf"), fb)])
        fin_x = c.add("lt", [c.add("abs", [fa]), c.scalar(float("inf"), fa)])
        agree = c.add("logical_or", [c.add("eq", [fa, zero]), c.add("eq", [c.add("lt", [fa, zero]), c.add("lt", [fb, zero])])])
        r = c.add("where", [c.add("logical_and", [inf_y, fin_x]), c.add("where", [agree, fa, fb]), r])
    return c.cast(r, dt)


@converter("Pow")
def _pow(c: NodeCtx) -> Entry:
    x, y = c.input(0), c.input(1)
    if c.is_const(1) and c.const(1).numel() == 1 and c.dtype(x).is_floating_point:
        p = float(c.const(1).reshape(()).item())
        if p.is_integer() and abs(p) > 4:
            # repeated squaring keeps negative bases exact
            return _int_power(c, x, int(p))
        return c.add("pow_scalar", [x], exponent=p)
    if not c.dtype(x).is_floating_point:
        if c.dtype(x) == torch.bool or not (c.dtype(y).is_floating_point or c.dtype(y) != torch.bool):
            raise Unsupported(f"Pow of {c.dtype(x)} bases with a run-time exponent")
        # integer powers in fp64, rounded: exact while the result fits fp64's 53-bit mantissa
        xf, yf = c.cast(x, torch.float64), c.cast(y, torch.float64)
        r = _pow_float(c, xf, yf)
        r = c.add("where", [c.add("eq", [yf, c.scalar(0.0, yf)]), c.scalar(1.0, yf), r])
        return c.cast(_round_even(c, r), c.dtype(x))
    return _pow_float(c, x, y)


def _pow_float(c: NodeCtx, x: Entry, y: Entry) -> Entry:
    y = c.cast(y, c.dtype(x))
    # exp2(y*log2|x|) with the sign of x for odd integer exponents, NaN for negative x and fractional y
    ax = c.add("abs", [x])
    mag = c.add("pow", [ax, y])
    yf = c.add("floor", [y])
    is_int = c.add("eq", [yf, y])
    half = c.add("mul", [y, c.scalar(0.5, y)])
    odd = c.add("logical_and", [is_int, c.add("ne", [c.add("floor", [half]), half])])
    neg = c.add("lt", [x, c.scalar(0.0, x)])
    signed = c.add("where", [c.add("logical_and", [neg, odd]), c.add("neg", [mag]), mag])
    nan = c.scalar(float("nan"), x)
    bad = c.add("logical_and", [neg, c.add("logical_not", [is_int])])
    return c.add("where", [bad, nan, signed])


def _int_power(c: NodeCtx, x: Entry, p: int) -> Entry:
    base, acc, n = x, None, abs(p)
    while n:
        if n & 1:
            acc = base if acc is None else c.add("mul", [acc, base])
        n >>= 1
        if n:
            base = c.add("mul", [base, base])
    return c.add("reciprocal", [acc]) if p < 0 else acc


def _variadic(op: str) -> Converter:
    def conv(c: NodeCtx) -> Entry:
        xs = [c.input(i) for i in range(c.n_in()) if c.has(i)]
        acc = xs[0]
        for x in xs[1:]:
            acc = c.add(op, [acc, x])
        if c.node.op_type == "Mean":
            acc = c.add("div", [acc, c.scalar(float(len(xs)), acc)])
        if len(xs) == 1 and isinstance(acc, Value):
            acc = c.add("copy", [acc])
        return acc
    return conv


converter("Max")(_variadic("maximum"))
converter("Min")(_variadic("minimum"))
converter("Sum")(_variadic("add"))
converter("Mean")(_variadic("add"))


@converter("Where")
def _where(c: NodeCtx) -> Entry:
    return c.add("where", [c.input(0), c.input(1), c.input(2)])


@converter("Clip")
def _clip(c: NodeCtx) -> Entry:
    x = c.input(0)
    if c.opset < 11:
        lo, hi = c.attr("min"), c.attr("max")
        lo = None if lo is None else torch.tensor(lo, dtype=c.dtype(x))
        hi = None if hi is None else torch.tensor(hi, dtype=c.dtype(x))
    else:
        lo = c.input(1) if c.has(1) else None
        hi = c.input(2) if c.has(2) else None
    y = x
    if lo is not None:
        y = c.add("maximum", [y, lo])
    if hi is not None:
        y = c.add("minimum", [y, hi])
    return y if y is not x else (c.add("copy", [x]) if isinstance(x, Value) else x)


@converter("Cast")
def _cast(c: NodeCtx) -> Entry:
    to = c.attr("to")
    if to in NARROW or narrow_of(c, 0) is not None:
        return narrow_cast(c, c.input(0), narrow_of(c, 0), to)
    if to not in ONNX_DTYPES:
        raise Unsupported(f"cast to {onnx_type_name(to)} (dtype not supported)")
    x = c.input(0)
    if c.dtype(x) == ONNX_DTYPES[to]:
        return x
    return _cast_to(c, x, ONNX_DTYPES[to])


@converter("BitCast")
def _bitcast(c: NodeCtx) -> Entry:
    to, x = c.attr("to"), c.input(0)
    if to not in ONNX_DTYPES or ONNX_DTYPES[to] == torch.bool or c.dtype(x) == torch.bool:
        raise Unsupported(f"bit cast to {onnx_type_name(to)} (dtype not supported)")
    dt = ONNX_DTYPES[to]
    if dt.itemsize != c.dtype(x).itemsize:
        raise BuildError(f"BitCast from {c.dtype(x)} to {dt} changes the element size")
    return x if dt == c.dtype(x) else c.add("bitcast", [x], dtype=dtype_name(dt))


def _cast_to(c: NodeCtx, x: Entry, dt: torch.dtype) -> Entry:
    """ONNX Cast: float -> int truncates toward zero (as the IR cast does), anything -> bool is x != 0."""
    return c.cast(x, dt)


@converter("CastLike")
def _cast_like(c: NodeCtx) -> Entry:
    target = narrow_of(c, 1)
    if target is not None or narrow_of(c, 0) is not None:
        to = target.onnx_type if target is not None else TORCH_TO_ONNX[c.dtype(c.input(1))]
        return narrow_cast(c, c.input(0), narrow_of(c, 0), to)
    return _cast_to(c, c.input(0), c.dtype(c.input(1)))


@converter("Sign")
def _sign(c: NodeCtx) -> Entry:
    x = c.input(0)
    one, zero, m1 = c.scalar(1, x), c.scalar(0, x), c.scalar(-1, x)
    if c.dtype(x) in (torch.uint8, torch.bool):
        return c.add("where", [c.add("gt", [x, zero]), one, zero])
    return c.add("where", [c.add("gt", [x, zero]), one, c.add("where", [c.add("lt", [x, zero]), m1, zero])])


@converter("IsNaN")
def _isnan(c: NodeCtx) -> Entry:
    x = c.input(0)
    return c.add("ne", [x, x])


@converter("IsInf")
def _isinf(c: NodeCtx) -> Entry:
    x = c.input(0)
    pos, neg = c.attr("detect_positive", 1), c.attr("detect_negative", 1)
    p = c.add("eq", [x, c.scalar(float("inf"), x)])
    n = c.add("eq", [x, c.scalar(float("-inf"), x)])
    if pos and neg:
        return c.add("logical_or", [p, n])
    if pos:
        return p
    if neg:
        return n
    return c.add("logical_and", [p, n])  # neither: always False


@converter("LeakyRelu")
def _leaky(c: NodeCtx) -> Entry:
    return c.add("leaky_relu", [c.input(0)], negative_slope=float(c.attr("alpha", 0.01)))


@converter("Elu")
def _elu(c: NodeCtx) -> Entry:
    return c.add("elu", [c.input(0)], alpha=float(c.attr("alpha", 1.0)))


@converter("Selu")
def _selu(c: NodeCtx) -> Entry:
    x = c.input(0)
    alpha, gamma = float(c.attr("alpha", 1.67326319217681884765625)), float(c.attr("gamma", 1.05070102214813232421875))
    return c.add("mul", [c.add("elu", [x], alpha=alpha), c.scalar(gamma, x)])


@converter("Celu")
def _celu(c: NodeCtx) -> Entry:
    x = c.input(0)
    alpha = float(c.attr("alpha", 1.0))
    y = c.add("elu", [c.add("div", [x, c.scalar(alpha, x)])], alpha=1.0)
    return c.add("mul", [y, c.scalar(alpha, x)])


@converter("ThresholdedRelu")
def _thresholded(c: NodeCtx) -> Entry:
    x = c.input(0)
    return c.add("where", [c.add("gt", [x, c.scalar(float(c.attr("alpha", 1.0)), x)]), x, c.scalar(0.0, x)])


@converter("HardSigmoid")
def _hardsigmoid(c: NodeCtx) -> Entry:
    x = c.input(0)
    alpha, beta = float(c.attr("alpha", 0.2)), float(c.attr("beta", 0.5))
    y = c.add("add", [c.add("mul", [x, c.scalar(alpha, x)]), c.scalar(beta, x)])
    return c.add("clamp", [y], min=0.0, max=1.0)


@converter("HardSwish")
def _hardswish(c: NodeCtx) -> Entry:
    return c.add("hardswish", [c.input(0)])


@converter("Softsign")
def _softsign(c: NodeCtx) -> Entry:
    x = c.input(0)
    return c.add("div", [x, c.add("add", [c.add("abs", [x]), c.scalar(1.0, x)])])


def _softplus_of(c: NodeCtx, x: Entry) -> Entry:
    # relu(x) + log(1 + exp(-|x|)): no overflow for large |x|
    t = c.add("exp", [c.add("neg", [c.add("abs", [x])])])
    return c.add("add", [c.add("relu", [x]), c.add("log", [c.add("add", [t, c.scalar(1.0, x)])])])


@converter("Softplus")
def _softplus(c: NodeCtx) -> Entry:
    return _softplus_of(c, c.input(0))


@converter("Mish")
def _mish(c: NodeCtx) -> Entry:
    x = c.input(0)
    return c.add("mul", [x, c.add("tanh", [_softplus_of(c, x)])])


@converter("Gelu")
def _gelu(c: NodeCtx) -> Entry:
    return c.add("gelu", [c.input(0)], approximate=c.attr("approximate", "none"))


@converter("Swish")
def _swish(c: NodeCtx) -> Entry:
    x = c.input(0)
    alpha = float(c.attr("alpha", 1.0))
    return c.add("mul", [x, c.add("sigmoid", [c.add("mul", [x, c.scalar(alpha, x)])])])


@converter("PRelu")
def _prelu(c: NodeCtx) -> Entry:
    x, s = c.input(0), c.input(1)
    legacy = c.opset < 7 or (c.rank(s) == 1 and c.rank(x) > 2 and c.shape(s)[0] not in (1, c.shape(x)[-1])
                             and c.shape(s)[0] == c.shape(x)[1])  # PRelu-6 semantics kept by an upgraded model
    if legacy and c.rank(s) == 1 and c.rank(x) > 2:
        s = c.reshape(s, [c.shape(s)[0]] + [1] * (c.rank(x) - 2))
    return c.add("where", [c.add("lt", [x, c.scalar(0, x)]), c.add("mul", [x, s]), x])


@converter("Shrink")
def _shrink(c: NodeCtx) -> Entry:
    x = c.input(0)
    lam, bias = float(c.attr("lambd", 0.5)), float(c.attr("bias", 0.0))
    zero = c.scalar(0, x)
    lo = c.add("add", [x, c.scalar(bias, x)])
    hi = c.add("sub", [x, c.scalar(bias, x)])
    if not c.dtype(x).is_floating_point:
        lo, hi = c.cast(lo, c.dtype(x)), c.cast(hi, c.dtype(x))
    return c.add("where", [c.add("lt", [x, c.scalar(-lam, torch.float32)]), lo,
                           c.add("where", [c.add("gt", [x, c.scalar(lam, torch.float32)]), hi, zero])])


@converter("Tan")
def _tan(c: NodeCtx) -> Entry:
    x = c.input(0)
    return c.add("div", [c.add("sin", [x]), c.add("cos", [x])])


@converter("Sinh", "Cosh")
def _sinh_cosh(c: NodeCtx) -> Entry:
    x = c.input(0)
    e, ei = c.add("exp", [x]), c.add("exp", [c.add("neg", [x])])
    s = c.add("sub" if c.node.op_type == "Sinh" else "add", [e, ei])
    return c.add("mul", [s, c.scalar(0.5, x)])


@converter("Asinh")
def _asinh(c: NodeCtx) -> Entry:
    x = c.input(0)
    ax = c.add("abs", [x])
    r = c.add("log", [c.add("add", [ax, c.add("sqrt", [c.add("add", [c.add("mul", [x, x]), c.scalar(1.0, x)])])])])
    return c.add("where", [c.add("lt", [x, c.scalar(0.0, x)]), c.add("neg", [r]), r])


@converter("Acosh")
def _acosh(c: NodeCtx) -> Entry:
    x = c.input(0)
    return c.add("log", [c.add("add", [x, c.add("sqrt", [c.add("sub", [c.add("mul", [x, x]), c.scalar(1.0, x)])])])])


@converter("Atanh")
def _atanh(c: NodeCtx) -> Entry:
    x = c.input(0)
    one = c.scalar(1.0, x)
    r = c.add("div", [c.add("add", [one, x]), c.add("sub", [one, x])])
    return c.add("mul", [c.add("log", [r]), c.scalar(0.5, x)])


@converter("Atan", "Asin", "Acos")
def _atan(c: NodeCtx) -> Entry:
    """atan from the table; asin(x) = 2 atan(x / (1 + sqrt((1-x)(1+x)))), acos(x) = 2 atan(sqrt((1-x)/(1+x)))."""
    x = c.input(0)
    _need_float(c, x)
    if "atan" not in OPS:
        raise Unsupported("needs IR op 'atan'")
    if c.node.op_type == "Atan":
        return c.add("atan", [x])
    one, two = c.scalar(1.0, x), c.scalar(2.0, x)
    if c.node.op_type == "Asin":
        root = c.add("sqrt", [c.add("mul", [c.add("sub", [one, x]), c.add("add", [one, x])])])
        arg = c.add("div", [x, c.add("add", [one, root])])
    else:
        arg = c.add("sqrt", [c.add("div", [c.add("sub", [one, x]), c.add("add", [one, x])])])
    return c.add("mul", [two, c.add("atan", [arg])])


@converter("Round")
def _round(c: NodeCtx) -> Entry:
    """Round half to even from floor: r = floor(x + 0.5), minus one on exact ties that landed on odd."""
    x = c.input(0)
    r = c.add("floor", [c.add("add", [x, c.scalar(0.5, x)])])
    tie = c.add("eq", [c.add("sub", [r, x]), c.scalar(0.5, x)])
    half = c.add("mul", [r, c.scalar(0.5, x)])
    odd = c.add("ne", [c.add("floor", [half]), half])
    return c.add("where", [c.add("logical_and", [tie, odd]), c.add("sub", [r, c.scalar(1.0, x)]), r])


_BITWISE = {"BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor",
            "BitwiseNot": "bitwise_not"}


@converter(*_BITWISE)
def _bitwise(c: NodeCtx) -> Entry:
    op = _BITWISE[c.node.op_type]
    if op not in OPS:
        raise Unsupported(f"needs IR op {op!r}")
    return c.add(op, [c.input(i) for i in range(c.n_in())])


@converter("BitShift")
def _bitshift(c: NodeCtx) -> Entry:
    op = "bitwise_left_shift" if c.attr("direction") == "LEFT" else "bitwise_right_shift"
    if op not in OPS:
        raise Unsupported(f"needs IR op {op!r}")
    return c.add(op, [c.input(0), c.input(1)])


# ---------------------------------------------------------------------------------- reductions
def _reduce_axes(c: NodeCtx, x: Entry, input_since: int) -> list[int] | None:
    """Sorted non-negative axes, or None for 'no reduction' (noop_with_empty_axes)."""
    rank = c.rank(x)
    if c.opset >= input_since:
        axes = c.ints(1, "axes") if c.has(1) else []
    else:
        axes = [int(a) for a in (c.attr("axes") or [])]
    if not axes:
        if c.attr("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    return sorted({_axis(a, rank) for a in axes})


def _reduce(c: NodeCtx, x: Entry, op: str, axes: list[int], keep: bool) -> Entry:
    if not axes:
        return x
    return c.add(op, [x], dims=axes, keepdim=keep)


def _empty_reduction(c: NodeCtx, kind: str, x: Entry, axes: list[int], keep: bool) -> torch.Tensor:
    """A reduction over an empty dimension: its (constant) identity value at the output shape."""
    shape = c.shape(x)
    out = [1 if i in axes else s for i, s in enumerate(shape) if keep or i not in axes]
    dt = c.dtype(x)
    big = float("inf") if dt.is_floating_point else (torch.iinfo(dt).max if dt != torch.bool else 1)
    small = float("-inf") if dt.is_floating_point else (torch.iinfo(dt).min if dt != torch.bool else 0)
    value = {"ReduceMax": small, "ReduceMin": big, "ReduceProd": 1, "ReduceMean": float("nan"),
             "ReduceLogSum": float("-inf"), "ReduceLogSumExp": float("-inf")}.get(kind, 0)
    return torch.full(out, value, dtype=dt)


def _reduce_prod(c: NodeCtx, x: Entry, axes: list[int], keep: bool) -> Entry:
    """prod = sign * exp(sum(log|x|)), 0 when any factor is 0 (no product reduction in the table)."""
    dt = c.dtype(x)
    xf = x if dt.is_floating_point else c.cast(x, torch.float64)
    zero = c.scalar(0.0, xf)
    mag = c.add("exp", [_reduce(c, c.add("log", [c.add("abs", [xf])]), "sum", axes, keep)])
    negs = _reduce(c, c.cast(c.add("lt", [xf, zero]), c.dtype(xf)), "sum", axes, keep)
    half = c.add("mul", [negs, c.scalar(0.5, negs)])
    odd = c.add("ne", [c.add("floor", [half]), half])
    any_zero = c.add("gt", [_reduce(c, c.cast(c.add("eq", [xf, zero]), c.dtype(xf)), "amax", axes, keep), zero])
    y = c.add("where", [any_zero, zero, c.add("where", [odd, c.add("neg", [mag]), mag])])
    if not dt.is_floating_point:
        y = c.cast(_round_even(c, y), dt)
    return y


def _reduction(kind: str) -> Converter:
    since = 13 if kind == "ReduceSum" else 18

    def conv(c: NodeCtx) -> Entry:
        x = c.input(0)
        axes = _reduce_axes(c, x, since)
        keep = bool(c.attr("keepdims", 1))
        if axes is None:
            if kind in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"):
                return x
            axes = []
        if any(c.shape(x)[a] == 0 for a in axes):
            return _empty_reduction(c, kind, x, axes, keep)
        if kind == "ReduceSum":
            return _reduce(c, x, "sum", axes, keep)
        if kind == "ReduceMean":
            return _reduce(c, x, "mean", axes, keep)
        if kind in ("ReduceMax", "ReduceMin"):
            if c.dtype(x) == torch.bool:
                xi = c.cast(x, torch.int32)
                return c.cast(_reduce(c, xi, "amax" if kind == "ReduceMax" else "amin", axes, keep), torch.bool)
            return _reduce(c, x, "amax" if kind == "ReduceMax" else "amin", axes, keep)
        if kind == "ReduceL1":
            return _reduce(c, c.add("abs", [x]), "sum", axes, keep)
        if kind == "ReduceSumSquare":
            return _reduce(c, c.add("mul", [x, x]), "sum", axes, keep)
        if kind == "ReduceL2":
            s = _reduce(c, c.add("mul", [x, x]), "sum", axes, keep)
            return c.add("sqrt", [s]) if c.dtype(x).is_floating_point else \
                c.cast(c.add("sqrt", [c.cast(s, torch.float32)]), c.dtype(x))
        if kind == "ReduceLogSum":
            return c.add("log", [_reduce(c, x, "sum", axes, keep)])
        if kind == "ReduceLogSumExp":
            if not axes:
                return c.add("log", [c.add("exp", [x])])
            m = _reduce(c, x, "amax", axes, True)
            s = _reduce(c, c.add("exp", [c.add("sub", [x, m])]), "sum", axes, True)
            y = c.add("add", [c.add("log", [s]), m])
            return y if keep else c.add("squeeze", [y], dims=axes)
        return _reduce_prod(c, x, axes, keep)
    return conv


for _k in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceProd"):
    converter(_k)(_reduction(_k))


@converter("ArgMax", "ArgMin")
def _argmax(c: NodeCtx) -> Entry:
    """amax/amin, then the first (or last) index where x equals it: min (max) over a masked iota."""
    x = c.input(0)
    rank = c.rank(x)
    ax = _axis(c.attr("axis", 0), rank)
    keep = bool(c.attr("keepdims", 1))
    last = bool(c.attr("select_last_index", 0))
    n = c.shape(x)[ax]
    m = c.add("amax" if c.node.op_type == "ArgMax" else "amin", [x], dims=[ax], keepdim=True)
    hit = c.add("eq", [x, m])
    iota = torch.arange(n, dtype=torch.int64).reshape([n] + [1] * (rank - ax - 1))
    fill = torch.tensor(-1 if last else n, dtype=torch.int64)
    idx = c.add("where", [hit, iota, fill])
    return c.add("amax" if last else "amin", [idx], dims=[ax], keepdim=keep)


@converter("Hardmax")
def _hardmax(c: NodeCtx) -> Entry:
    x = c.input(0)
    rank = c.rank(x)
    if c.opset < 13:
        ax = _axis(c.attr("axis", 1), rank)
        shape = c.shape(x)
        x2 = c.reshape(x, [math.prod(shape[:ax]), math.prod(shape[ax:])])
        return c.reshape(_hardmax_axis(c, x2, 1), shape)
    return _hardmax_axis(c, x, _axis(c.attr("axis", -1), rank))


def _hardmax_axis(c: NodeCtx, x: Entry, ax: int) -> Entry:
    rank = c.rank(x)
    n = c.shape(x)[ax]
    m = c.add("amax", [x], dims=[ax], keepdim=True)
    iota = torch.arange(n, dtype=torch.int64).reshape([n] + [1] * (rank - ax - 1))
    first = c.add("amin", [c.add("where", [c.add("eq", [x, m]), iota, torch.tensor(n)])], dims=[ax], keepdim=True)
    return c.cast(c.add("eq", [iota, first]), c.dtype(x))


# ---------------------------------------------------------------------------------- softmax
def _softmax_like(op: str) -> Converter:
    def conv(c: NodeCtx) -> Entry:
        x = c.input(0)
        rank = c.rank(x)
        if c.opset < 13:
            ax = _axis(c.attr("axis", 1), rank)
            shape = c.shape(x)
            x2 = c.reshape(x, [math.prod(shape[:ax]), math.prod(shape[ax:])])
            return c.reshape(c.add(op, [x2], dim=1), shape)
        return c.add(op, [x], dim=_axis(c.attr("axis", -1), rank))
    return conv


converter("Softmax")(_softmax_like("softmax"))
converter("LogSoftmax")(_softmax_like("log_softmax"))


# ------------------------------------------------------------------------------------ gemm, conv
def _matmul(c: NodeCtx, a: Entry, b: Entry) -> Entry:
    return matmul_nd(c, a, b, "MatMul of a 0-d tensor")


@converter("MatMul")
def _matmul_conv(c: NodeCtx) -> Entry:
    a, b = c.input(0), c.input(1)
    if not c.dtype(a).is_floating_point:
        raise Unsupported(f"MatMul of {c.dtype(a)} (only floating point)")
    return _matmul(c, a, b)


@converter("Gemm")
def _gemm(c: NodeCtx) -> Entry:
    a, b = c.input(0), c.input(1)
    if not c.dtype(a).is_floating_point:
        raise Unsupported(f"Gemm of {c.dtype(a)} (only floating point)")
    if c.attr("transA", 0):
        a = c.add("permute", [a], dims=[1, 0])
    if c.attr("transB", 0):
        b = c.add("permute", [b], dims=[1, 0])
    y = c.add("matmul", [a, b])
    alpha, beta = float(c.attr("alpha", 1.0)), float(c.attr("beta", 1.0))
    if alpha != 1.0:
        y = c.add("mul", [y, c.scalar(alpha, y)])
    if c.has(2) and beta != 0.0:
        bias = c.input(2)
        if beta != 1.0:
            bias = c.add("mul", [bias, c.scalar(beta, bias)])
        y = c.add("add", [y, bias])
    return y


def _spatial_pads(c: NodeCtx, in_sp: Sequence[int], k: Sequence[int], s: Sequence[int],
                  d: Sequence[int], ceil: bool = False) -> list[int]:
    """Symmetric per-dim padding from pads/auto_pad; asymmetric padding is unsupported."""
    begin, end = _pads_begin_end(c, in_sp, k, s, d)
    n = len(in_sp)
    if begin != end:
        if not ceil and all(e >= b for b, e in zip(begin, end)):
            # extra end padding only matters if a window fits into it
            ok = True
            for i in range(n):
                span = (k[i] - 1) * d[i] + 1
                full = (in_sp[i] + begin[i] + end[i] - span) // s[i]
                sym = (in_sp[i] + 2 * begin[i] - span) // s[i]
                ok &= full == sym
            if ok:
                return begin
        raise Unsupported(f"asymmetric padding begin={begin} end={end}")
    return begin


def _pads_begin_end(c: NodeCtx, in_sp: Sequence[int], k: Sequence[int], s: Sequence[int],
                    d: Sequence[int]) -> tuple[list[int], list[int]]:
    n = len(in_sp)
    auto = c.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(n):
            out = -(-in_sp[i] // s[i])
            total = max((out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in_sp[i], 0)
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            begin.append(lo)
            end.append(total - lo)
    elif auto == "VALID":
        begin, end = [0] * n, [0] * n
    else:
        pads = c.attr("pads") or [0] * (2 * n)
        begin, end = list(pads[:n]), list(pads[n:])
    return begin, end


def _to_2d(c: NodeCtx, x: Entry) -> Entry:
    return c.add("unsqueeze", [x], dim=2)


@converter("Conv")
def _conv(c: NodeCtx) -> Entry:
    x, w = c.input(0), c.input(1)
    _need_float(c, x)
    return _conv_core(c, x, w, c.input(2) if c.has(2) else None)


def _pool(c: NodeCtx, kind: str) -> Entry:
    x = c.input(0)
    rank = c.rank(x)
    nsp = rank - 2
    k = list(c.attr("kernel_shape"))
    s = list(c.attr("strides") or [1] * nsp)
    d = list(c.attr("dilations") or [1] * nsp)
    ceil = bool(c.attr("ceil_mode", 0))
    incl = bool(c.attr("count_include_pad", 0))
    indices = len(c.node.output) > 1 and bool(c.node.output[1])
    if indices or rank not in (3, 4) or not c.dtype(x).is_floating_point or kind == "avg" and any(v != 1 for v in d):
        if kind == "avg":
            _need_float(c, x)
        begin, end = _pads_begin_end(c, c.shape(x)[2:], k, s, d)
        return _pool_windows(c, x, kind, k, s, d, begin, end, ceil, incl, indices, int(c.attr("storage_order", 0)))
    try:
        pads = _spatial_pads(c, c.shape(x)[2:], k, s, d, ceil)
        if any(p * 2 > kk for p, kk in zip(pads, k)):
            raise Unsupported(f"padding {pads} larger than half the kernel {k}")
    except Unsupported:
        # pad explicitly (-inf for max, zeros for an average that counts the padding) and pool unpadded
        if ceil or (kind == "avg" and not incl):
            begin, end = _pads_begin_end(c, c.shape(x)[2:], k, s, d)
            return _pool_windows(c, x, kind, k, s, d, begin, end, ceil, incl)
        begin, end = _pads_begin_end(c, c.shape(x)[2:], k, s, d)
        fill = float("-inf") if kind == "max" else 0.0
        for i in range(nsp):
            x = _pad_axis(c, x, 2 + i, begin[i], end[i], fill)
        pads = [0] * nsp
    if nsp == 1:
        x = _to_2d(c, x)
        k, s, d, pads = [1] + k, [1] + s, [1] + d, [0] + pads
    if kind == "max":
        y = c.add("max_pool2d", [x], kernel=k, stride=s, padding=pads, dilation=d, ceil_mode=ceil)
    else:
        if any(v != 1 for v in d):
            raise Unsupported("AveragePool with dilations")
        y = c.add("avg_pool2d", [x], kernel=k, stride=s, padding=pads, ceil_mode=ceil, count_include_pad=incl)
    if nsp == 1:
        y = c.add("squeeze", [y], dims=[2])
    return y


def _pool_out_sizes(sp: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int],
                    begin: Sequence[int], end: Sequence[int], ceil: bool) -> list[int]:
    outs = []
    for i in range(len(sp)):
        span = (k[i] - 1) * d[i] + 1
        tot = sp[i] + begin[i] + end[i] - span
        o = (-(-tot // s[i]) if ceil else tot // s[i]) + 1
        if ceil and (o - 1) * s[i] >= sp[i] + begin[i]:
            o -= 1  # the last window must start inside the input or its begin padding
        outs.append(o)
    return outs


def _pool_windows(c: NodeCtx, x: Entry, kind: str, k: list[int], s: list[int], d: list[int], begin: list[int],
                  end: list[int], ceil: bool, incl: bool, indices: bool = False,
                  storage_order: int = 0) -> Entry | tuple[Entry, Entry]:
    """N-d max/average pooling as the maximum/sum of one strided slice per kernel offset, any padding,
    dilation and ceil mode (the pooling template covers the common 1-D and 2-D cases); ``indices``: also
    the flat input index of each maximum (row-major, or column-major for storage_order=1)."""
    shape = list(c.shape(x))
    sp, nsp = shape[2:], len(k)
    if math.prod(k) > 512:
        raise Unsupported(f"a pooling window of {math.prod(k)} elements outside the pooling template")
    outs = _pool_out_sizes(sp, k, s, d, begin, end, ceil)
    dt = c.dtype(x)
    fill = _lowest(dt) if kind == "max" else 0
    xp = x
    for i in range(nsp):
        need = (outs[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1
        xp = _pad_axis(c, xp, 2 + i, begin[i], need - sp[i] - begin[i], fill)
    acc = best = None
    flat_strides = [math.prod(sp[i + 1:]) for i in range(nsp)]
    if storage_order:
        if nsp != 2:
            raise Unsupported(f"storage_order=1 for {nsp}-D pooling")
        flat_strides = [1, sp[0]]
    base = (torch.arange(shape[0] * shape[1], dtype=torch.int64) * math.prod(sp)).reshape(shape[0], shape[1],
                                                                                          *[1] * nsp)
    for offs in itertools.product(*[range(kk) for kk in k]):
        sl = xp
        for i, o in enumerate(offs):
            st = o * d[i]
            sl = c.add("slice", [sl], dim=2 + i, start=st, end=st + (outs[i] - 1) * s[i] + 1, step=s[i])
        idx = None
        if indices:
            idx = base
            for i, o in enumerate(offs):
                pos = torch.arange(outs[i], dtype=torch.int64) * s[i] + o * d[i] - begin[i]
                idx = idx + (pos * flat_strides[i]).reshape([1, 1] + [outs[i] if j == i else 1 for j in range(nsp)])
        if acc is None:
            acc, best = sl, idx
        elif kind == "max":
            if indices:
                best = c.add("where", [c.add("gt", [sl, acc]), idx, best])
            acc = c.add("maximum", [acc, sl])
        else:
            acc = c.add("add", [acc, sl])
    if kind == "avg":
        per_dim = []
        for i in range(nsp):
            valid = np.zeros((outs[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 + begin[i] + sp[i] + end[i])
            lo, hi = (0, begin[i] + sp[i] + end[i]) if incl else (begin[i], begin[i] + sp[i])
            valid[lo:hi] = 1
            per_dim.append(np.array([sum(valid[o * s[i] + j * d[i]] for j in range(k[i])) for o in range(outs[i])]))
        cnt = per_dim[0]
        for v in per_dim[1:]:
            cnt = np.multiply.outer(cnt, v)
        cnt = torch.from_numpy(np.maximum(cnt, 1)).to(dt).reshape([1, 1] + outs)
        acc = c.add("div", [acc, cnt])
    return (acc, best) if indices else acc


@converter("MaxPool")
def _maxpool(c: NodeCtx) -> Entry:
    return _pool(c, "max")


@converter("AveragePool")
def _avgpool(c: NodeCtx) -> Entry:
    return _pool(c, "avg")


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(c: NodeCtx) -> Entry:
    x = c.input(0)
    dims = list(range(2, c.rank(x)))
    return c.add("mean" if c.node.op_type == "GlobalAveragePool" else "amax", [x], dims=dims, keepdim=True)


@converter("LpPool")
def _lppool(c: NodeCtx) -> Entry:
    x = c.input(0)
    p = int(c.attr("p", 2))
    k = list(c.attr("kernel_shape"))
    xp = c.add("abs", [x]) if p == 1 else c.add("pow_scalar", [c.add("abs", [x])], exponent=float(p))
    node_attrs = dict(c.attrs)
    node_attrs.pop("p", None)
    nd = onnx.helper.make_node("AveragePool", [c.node.input[0]], [c.node.output[0]])
    nd.attribute.extend(a for n, a in node_attrs.items())
    sub = NodeCtx(c.imp, nd, c.name, [xp], c.opset, "")
    sub._first = c._first
    sub.attrs["count_include_pad"] = helper.make_attribute("count_include_pad", 1)
    avg = _pool(sub, "avg")
    s = c.add("mul", [avg, c.scalar(float(math.prod(k)), x)])
    return s if p == 1 else c.add("pow_scalar", [s], exponent=1.0 / p)


# ------------------------------------------------------------------------------- normalization
@converter("BatchNormalization")
def _batchnorm(c: NodeCtx) -> Entry:
    if c.attr("training_mode", 0) or len([o for o in c.node.output if o]) > 1:
        if c.opset < 14:
            raise Unsupported("training mode before opset 14 (saved statistics outputs)")
        return _batchnorm_training(c)
    x, scale, b, mean, var = (c.input(i) for i in range(5))
    _need_float(c, x)
    dt = c.dtype(x)
    return c.add("batch_norm", [x, c.cast(mean, dt), c.cast(var, dt), c.cast(scale, dt), c.cast(b, dt)],
                 eps=float(c.attr("epsilon", 1e-5)))


def _batchnorm_training(c: NodeCtx) -> list[Entry]:
    """Training-mode BatchNormalization: normalized with the batch statistics; the running statistics
    outputs are momentum * input + (1 - momentum) * batch statistic (population variance)."""
    x, scale, b, mean, var = (c.input(i) for i in range(5))
    _need_float(c, x)
    dt = c.dtype(x)
    eps, mom = float(c.attr("epsilon", 1e-5)), float(c.attr("momentum", 0.9))
    dims = [0] + list(range(2, c.rank(x)))
    bm = c.add("mean", [x], dims=dims, keepdim=False)
    bshape = [1, c.shape(x)[1]] + [1] * (c.rank(x) - 2)
    diff = c.add("sub", [x, c.reshape(bm, bshape)])
    bv = c.add("mean", [c.add("mul", [diff, diff])], dims=dims, keepdim=False)
    inv = c.add("rsqrt", [c.add("add", [bv, c.scalar(eps, bv)])])
    y = c.add("add", [c.add("mul", [c.add("mul", [diff, c.reshape(inv, bshape)]), c.reshape(c.cast(scale, dt), bshape)]),
                      c.reshape(c.cast(b, dt), bshape)])
    rm = c.add("add", [c.add("mul", [c.cast(mean, dt), c.scalar(mom, bm)]), c.add("mul", [bm, c.scalar(1 - mom, bm)])])
    rv = c.add("add", [c.add("mul", [c.cast(var, dt), c.scalar(mom, bv)]), c.add("mul", [bv, c.scalar(1 - mom, bv)])])
    return [y, rm, rv]


def _normalize(c: NodeCtx, x: Entry, dims: list[int], eps: float) -> tuple[Entry, Entry, Entry]:
    """(x - mean) * rstd over ``dims`` (population variance); returns (y, mean, rstd), stats kept dims."""
    mu = c.add("mean", [x], dims=dims, keepdim=True)
    xc = c.add("sub", [x, mu])
    var = c.add("mean", [c.add("mul", [xc, xc])], dims=dims, keepdim=True)
    r = c.add("rsqrt", [c.add("add", [var, c.scalar(eps, var)])])
    return c.add("mul", [xc, r]), mu, r


@converter("InstanceNormalization")
def _instance_norm(c: NodeCtx) -> Entry:
    x, scale, b = c.input(0), c.input(1), c.input(2)
    _need_float(c, x)
    rank = c.rank(x)
    y, _, _ = _normalize(c, x, list(range(2, rank)), float(c.attr("epsilon", 1e-5)))
    cs = [1, -1] + [1] * (rank - 2)
    return c.add("add", [c.add("mul", [y, c.reshape(scale, cs)]), c.reshape(b, cs)])


@converter("LayerNormalization")
def _layer_norm(c: NodeCtx) -> Any:
    x = c.input(0)
    _need_float(c, x)
    rank = c.rank(x)
    ax = _axis(c.attr("axis", -1), rank)
    eps = float(c.attr("epsilon", 1e-5))
    dims = list(range(ax, rank))
    stash = c.attr("stash_type", 1)
    dt = c.dtype(x)
    outs = [o for o in c.node.output]
    norm_shape = list(c.shape(x)[ax:])
    scale = c.input(1)
    bias = c.input(2) if c.has(2) else None
    if len([o for o in outs if o]) == 1 and list(c.shape(scale)) == norm_shape and (
            bias is None or list(c.shape(bias)) == norm_shape) and (stash != 1 or dt == torch.float32):
        ins = [x, scale] + ([bias] if bias is not None else [])
        return [c.add("layer_norm", ins, normalized_shape=norm_shape, eps=eps)]
    xs = c.cast(x, torch.float32) if stash == 1 else x
    y, mu, r = _normalize(c, xs, dims, eps)
    y = c.cast(y, dt)
    y = c.add("mul", [y, scale])
    if bias is not None:
        y = c.add("add", [y, bias])
    return [y, mu, r]


@converter("RMSNormalization")
def _rms_norm(c: NodeCtx) -> Entry:
    x, scale = c.input(0), c.input(1)
    _need_float(c, x)
    rank = c.rank(x)
    ax = _axis(c.attr("axis", -1), rank)
    eps = float(c.attr("epsilon", 1e-5))
    dt = c.dtype(x)
    norm_shape = list(c.shape(x)[ax:])
    if list(c.shape(scale)) == norm_shape and (c.attr("stash_type", 1) != 1 or dt == torch.float32):
        return c.add("rms_norm", [x, scale], normalized_shape=norm_shape, eps=eps)
    xs = c.cast(x, torch.float32) if c.attr("stash_type", 1) == 1 else x
    ms = c.add("mean", [c.add("mul", [xs, xs])], dims=list(range(ax, rank)), keepdim=True)
    y = c.add("mul", [xs, c.add("rsqrt", [c.add("add", [ms, c.scalar(eps, ms)])])])
    return c.add("mul", [c.cast(y, dt), scale])


@converter("GroupNormalization")
def _group_norm(c: NodeCtx) -> Entry:
    x, scale, b = c.input(0), c.input(1), c.input(2)
    _need_float(c, x)
    shape = c.shape(x)
    n, ch = shape[0], shape[1]
    groups = int(c.attr("num_groups"))
    eps = float(c.attr("epsilon", 1e-5))
    dt = c.dtype(x)
    xs = c.cast(x, torch.float32) if c.attr("stash_type", 1) == 1 else x
    xg = c.reshape(xs, [n, groups, math.prod(shape[1:]) // groups])
    y, _, _ = _normalize(c, xg, [2], eps)
    y = c.cast(c.reshape(y, shape), dt)
    cs = [1, ch] + [1] * (len(shape) - 2)
    if c.opset < 21 and c.shape(scale)[0] == groups and groups != ch:
        # opset 18: scale and bias are per group
        rep = ch // groups
        scale = c.reshape(c.add("expand", [c.reshape(scale, [groups, 1])], shape=[groups, rep]), [ch])
        b = c.reshape(c.add("expand", [c.reshape(b, [groups, 1])], shape=[groups, rep]), [ch])
    return c.add("add", [c.add("mul", [y, c.reshape(scale, cs)]), c.reshape(b, cs)])


@converter("LpNormalization")
def _lp_norm(c: NodeCtx) -> Entry:
    x = c.input(0)
    ax = _axis(c.attr("axis", -1), c.rank(x))
    p = int(c.attr("p", 2))
    if p == 1:
        nrm = c.add("sum", [c.add("abs", [x])], dims=[ax], keepdim=True)
    elif p == 2:
        nrm = c.add("sqrt", [c.add("sum", [c.add("mul", [x, x])], dims=[ax], keepdim=True)])
    else:
        raise Unsupported(f"p={p}")
    zero = c.scalar(0.0, x)
    return c.add("where", [c.add("eq", [nrm, zero]), zero, c.add("div", [x, nrm])])


@converter("MeanVarianceNormalization")
def _mvn(c: NodeCtx) -> Entry:
    x = c.input(0)
    axes = sorted(_axis(a, c.rank(x)) for a in (c.attr("axes") or [0, 2, 3]))
    mu = c.add("mean", [x], dims=axes, keepdim=True)
    ex2 = c.add("mean", [c.add("mul", [x, x])], dims=axes, keepdim=True)
    var = c.add("sub", [ex2, c.add("mul", [mu, mu])])
    sd = c.add("add", [c.add("sqrt", [var]), c.scalar(1e-9, x)])
    return c.add("div", [c.add("sub", [x, mu]), sd])


@converter("LRN")
def _lrn(c: NodeCtx) -> Entry:
    """Sum of squares over a channel window as an avg_pool2d over (C, H*W) with count_include_pad."""
    x = c.input(0)
    _need_float(c, x)
    shape = c.shape(x)
    size = int(c.attr("size"))
    alpha, beta, bias = float(c.attr("alpha", 1e-4)), float(c.attr("beta", 0.75)), float(c.attr("bias", 1.0))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    if lo != hi:
        raise Unsupported(f"even size {size} (asymmetric channel window)")
    n, ch = shape[0], shape[1]
    sq = c.reshape(c.add("mul", [x, x]), [n, 1, ch, max(math.prod(shape[2:]), 1)])
    avg = c.add("avg_pool2d", [sq], kernel=[size, 1], stride=[1, 1], padding=[lo, 0], count_include_pad=True)
    s = c.reshape(avg, shape)  # mean over the window = sum / size
    base = c.add("add", [c.add("mul", [s, c.scalar(alpha, x)]), c.scalar(bias, x)])
    return c.add("div", [x, c.add("pow_scalar", [base], exponent=beta)])


@converter("Dropout")
def _dropout(c: NodeCtx) -> list[Entry]:
    x = c.input(0)
    if c.has(2) and bool(c.const(2, "training_mode").reshape(-1)[0]):
        ratio = float(c.const(1, "ratio").reshape(-1)[0]) if c.has(1) else 0.5
        if ratio != 0.0:
            raise Unsupported("training_mode=True with a ratio > 0 (random masks)")
    outs = [x]
    if len(c.node.output) > 1 and c.node.output[1]:
        outs.append(torch.ones(c.shape(x), dtype=torch.bool))
    return outs


# ------------------------------------------------------------------------------------------ views
@converter("Reshape")
def _reshape(c: NodeCtx) -> Entry:
    x = c.input(0)
    if c.opset < 5:
        shape = list(c.attr("shape"))
    else:
        shape = c.ints(1, "shape")
    src = c.shape(x)
    allowzero = c.attr("allowzero", 0)
    out = []
    for i, s in enumerate(shape):
        out.append(src[i] if s == 0 and not allowzero else s)
    if -1 in out:
        known = math.prod(s for s in out if s != -1)
        out[out.index(-1)] = math.prod(src) // known if known else 0
    if math.prod(out) != math.prod(src):
        raise BuildError(f"cannot reshape {list(src)} to {shape}")
    return c.reshape(x, out)


@converter("Flatten")
def _flatten(c: NodeCtx) -> Entry:
    x = c.input(0)
    shape = c.shape(x)
    ax = c.attr("axis", 1)
    ax = ax + len(shape) if ax < 0 else ax
    return c.reshape(x, [math.prod(shape[:ax]), math.prod(shape[ax:])])


@converter("Transpose")
def _transpose(c: NodeCtx) -> Entry:
    x = c.input(0)
    r = c.rank(x)
    perm = c.attr("perm") or list(reversed(range(r)))
    return c.add("permute", [x], dims=[_axis(p, r) for p in perm])


@converter("Squeeze")
def _squeeze(c: NodeCtx) -> Entry:
    x = c.input(0)
    shape = c.shape(x)
    axes = c.opt_ints(1, "axes") if c.opset >= 13 else c.attr("axes")
    if axes is None:
        axes = [i for i, s in enumerate(shape) if s == 1]
    axes = sorted({_axis(a, len(shape)) for a in axes})
    bad = [a for a in axes if shape[a] != 1]
    if bad:
        raise BuildError(f"cannot squeeze dimension(s) {bad} of shape {list(shape)} (not of size 1)")
    return c.add("squeeze", [x], dims=axes) if axes else x


@converter("Unsqueeze")
def _unsqueeze(c: NodeCtx) -> Entry:
    x = c.input(0)
    axes = c.ints(1, "axes") if c.opset >= 13 else list(c.attr("axes"))
    out_rank = c.rank(x) + len(axes)
    axes = sorted(_axis(a, out_rank) for a in axes)
    shape = list(c.shape(x))
    for a in axes:
        shape.insert(a, 1)
    return c.reshape(x, shape) if shape != list(c.shape(x)) else x


def _broadcast_shape(a: Sequence[int], b: Sequence[int]) -> list[int]:
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + list(a), [1] * (n - len(b)) + list(b)
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise BuildError(f"shapes {a} and {b} do not broadcast")
        out.append(y if x == 1 else x)
    return out


@converter("Expand")
def _expand(c: NodeCtx) -> Entry:
    x = c.input(0)
    target = _broadcast_shape(c.shape(x), c.ints(1, "shape"))
    xr = c.reshape(x, [1] * (len(target) - c.rank(x)) + list(c.shape(x)))
    if list(c.shape(xr)) == target:
        return c.add("copy", [xr]) if isinstance(xr, Value) and xr is x else xr
    return c.add("expand", [xr], shape=target)


@converter("Slice")
def _slice(c: NodeCtx) -> Entry:
    x = c.input(0)
    shape = c.shape(x)
    rank = len(shape)
    if c.opset < 10:
        starts, ends = list(c.attr("starts")), list(c.attr("ends"))
        axes = list(c.attr("axes") or range(len(starts)))
        steps = [1] * len(starts)
    else:
        starts, ends = c.ints(1, "starts"), c.ints(2, "ends")
        axes = c.ints(3, "axes") if c.has(3) else list(range(len(starts)))
        steps = c.ints(4, "steps") if c.has(4) else [1] * len(starts)
    y = x
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax = _axis(ax, rank)
        n = shape[ax]
        if sp == 0:
            raise BuildError("Slice step 0")
        if sp < 0:
            start, end, step = slice(st, en if en > -(2**62) else None, sp).indices(n)
            idx = list(range(start, end, step))
            if not idx:
                raise Unsupported("empty slice")
            y = _take(c, y, ax, idx)
            continue
        start, end, _ = slice(max(min(st, 2**62), -(2**62)), max(min(en, 2**62), -(2**62)), sp).indices(n)
        end = max(end, start)
        if start == 0 and end >= n and sp == 1:
            continue
        if end == start:
            raise Unsupported("empty slice (a zero-size result)")
        y = c.add("slice", [y], dim=ax, start=start, end=end, step=sp)
    return y if y is not x else (c.add("copy", [x]) if isinstance(x, Value) else x)


def _take(c: NodeCtx, x: Entry, ax: int, idx: list[int]) -> Entry:
    """x indexed along ``ax`` by constant indices: a slice when they form a progression, else index_select."""
    if len(idx) == 1:
        return c.add("slice", [x], dim=ax, start=idx[0], end=idx[0] + 1, step=1)
    step = idx[1] - idx[0]
    if step > 0 and all(b - a == step for a, b in zip(idx, idx[1:])):
        return c.add("slice", [x], dim=ax, start=idx[0], end=idx[-1] + 1, step=step)
    return c.add("index_select", [x, torch.tensor(idx, dtype=torch.int64)], dim=ax)


@converter("Gather")
def _gather(c: NodeCtx) -> Entry:
    x, i = c.input(0), c.input(1)
    shape = c.shape(x)
    ax = _axis(c.attr("axis", 0), len(shape))
    n = shape[ax]
    if isinstance(i, torch.Tensor):
        idx = i.to(torch.int64)
        if ((idx < -n) | (idx >= n)).any():
            raise BuildError(f"Gather index out of range for dimension {ax} of size {n}")
        idx = torch.where(idx < 0, idx + n, idx)
        if idx.dim() == 0:
            return c.add("select", [x], dim=ax, index=int(idx))
        flat = [int(v) for v in idx.reshape(-1).tolist()]
        if not flat:
            raise Unsupported("empty indices")
        y = _take(c, x, ax, flat)
    else:
        if c.dtype(i) not in (torch.int64, torch.int32):
            raise Unsupported(f"indices of dtype {c.dtype(i)}")
        flat_i = c.reshape(i, [math.prod(c.shape(i))])
        y = c.add("index_select", [x, flat_i], dim=ax)
        idx = None
    ishape = list(c.shape(i))
    return c.reshape(y, list(shape[:ax]) + ishape + list(shape[ax + 1:]))


@converter("GatherElements")
def _gather_elements(c: NodeCtx) -> Entry:
    x, i = c.input(0), c.input(1)
    ax = _axis(c.attr("axis", 0), c.rank(x))
    if isinstance(i, torch.Tensor):
        n = c.shape(x)[ax]
        i = torch.where(i < 0, i + n, i).to(torch.int64)
    return c.add("gather", [x, i], dim=ax)


@converter("Concat")
def _concat(c: NodeCtx) -> Entry:
    xs = [c.input(i) for i in range(c.n_in()) if c.has(i)]
    rank = c.rank(xs[0])
    ax = _axis(c.attr("axis"), rank)
    xs = [x for x in xs if c.shape(x)[ax] != 0 or len(xs) == 1]
    if len(xs) == 1:
        return c.add("copy", xs) if isinstance(xs[0], Value) else xs[0]
    if all(isinstance(x, torch.Tensor) for x in xs):
        return torch.cat(xs, ax)
    return c.add("cat", xs, dim=ax)


@converter("Split")
def _split(c: NodeCtx) -> list[Entry]:
    x = c.input(0)
    shape = c.shape(x)
    ax = _axis(c.attr("axis", 0), len(shape))
    n = shape[ax]
    nout = len(c.node.output)
    sizes = c.opt_ints(1, "split") if c.opset >= 13 else c.attr("split")
    if sizes is None and c.opset < 13 and c.has(1):
        sizes = c.ints(1, "split")
    if not sizes:
        num = c.attr("num_outputs", nout)
        step = -(-n // num)
        sizes = [min(step, n - s) for s in range(0, n, step)] if c.attr("num_outputs") else [n // nout] * nout
    outs, start = [], 0
    for s in sizes:
        outs.append(c.add("slice", [x], dim=ax, start=start, end=start + s, step=1))
        start += s
    return outs


@converter("Tile")
def _tile(c: NodeCtx) -> Entry:
    x = c.input(0)
    reps = c.ints(1, "repeats")
    shape = list(c.shape(x))
    if all(r == 1 for r in reps):
        return c.add("copy", [x]) if isinstance(x, Value) else x
    inter = []
    exp = []
    for s, r in zip(shape, reps):
        inter += [1, s]
        exp += [r, s]
    y = c.add("expand", [c.reshape(x, inter)], shape=exp)
    return c.reshape(y, [s * r for s, r in zip(shape, reps)])


@converter("DepthToSpace")
def _depth_to_space(c: NodeCtx) -> Entry:
    x = c.input(0)
    n, ch, h, w = c.shape(x)
    b = int(c.attr("blocksize"))
    if c.attr("mode", "DCR") == "DCR":
        y = c.reshape(x, [n, b, b, ch // (b * b), h, w])
        y = c.add("permute", [y], dims=[0, 3, 4, 1, 5, 2])
    else:
        y = c.reshape(x, [n, ch // (b * b), b, b, h, w])
        y = c.add("permute", [y], dims=[0, 1, 4, 2, 5, 3])
    return c.reshape(y, [n, ch // (b * b), h * b, w * b])


@converter("SpaceToDepth")
def _space_to_depth(c: NodeCtx) -> Entry:
    x = c.input(0)
    n, ch, h, w = c.shape(x)
    b = int(c.attr("blocksize"))
    y = c.reshape(x, [n, ch, h // b, b, w // b, b])
    y = c.add("permute", [y], dims=[0, 1, 3, 5, 2, 4] if c.attr("mode", "DCR") == "CRD" else [0, 3, 5, 1, 2, 4])
    return c.reshape(y, [n, ch * b * b, h // b, w // b])


@converter("Trilu")
def _trilu(c: NodeCtx) -> Entry:
    x = c.input(0)
    k = c.ints(1, "k")[0] if c.has(1) else 0
    r, cols = c.shape(x)[-2:]
    ones = torch.ones(r, cols, dtype=torch.bool)
    mask = ones.triu(k) if c.attr("upper", 1) else ones.tril(k)
    return c.add("where", [mask, x, c.scalar(0, x)])


@converter("If")
def _if(c: NodeCtx) -> list[Entry]:
    cond = c.const(0, "condition")
    if cond.numel() != 1:
        raise BuildError(f"If condition has {cond.numel()} elements")
    branch = c.attr("then_branch") if bool(cond.reshape(-1)[0]) else c.attr("else_branch")
    return c.imp.inline_graph(branch, f"{c.name}::{'then' if bool(cond.reshape(-1)[0]) else 'else'}::", c.opset)


# ------------------------------------------------------------------------- loops (unrolled at build time)
UNROLL_MAX = 512  # Scan/Loop iterations unrolled at most (each iteration inlines the body once)


def _run_body(c: NodeCtx, body: onnx.GraphProto, args: Sequence[Entry], scope: str) -> list[Entry]:
    """Inline ``body`` once with its inputs bound to ``args``; the body's own names are unbound after, so
    the next iteration (and the outer graph) sees the values it should."""
    env = c.imp.env
    names = [vi.name for vi in body.input] + [o for n in body.node for o in n.output if o] + \
        [t.name for t in body.initializer]
    saved = {n: env[n] for n in names if n in env}
    if len(args) != len(body.input):
        raise BuildError(f"the body takes {len(body.input)} inputs, the node passes {len(args)}")
    for vi, a in zip(body.input, args):
        env[vi.name] = a
    outs = c.imp.inline_graph(body, scope, c.opset)
    for n in names:
        env.pop(n, None)
    env.update(saved)
    if any(o is MISSING for o in outs):
        raise Unsupported("the body has nodes trtjit cannot convert (listed separately)")
    return outs


def _stack(c: NodeCtx, parts: list[Entry], axis: int) -> Entry:
    if not parts:
        raise Unsupported("zero iterations (an empty output)")
    shape = list(c.shape(parts[0]))
    ax = _axis(axis, len(shape) + 1, "scan output axis")
    ups = [c.reshape(p, shape[:ax] + [1] + shape[ax:]) for p in parts]
    return ups[0] if len(ups) == 1 else c.add("cat", ups, dim=ax)


@converter("Scan")
def _scan(c: NodeCtx) -> list[Entry]:
    body = c.attr("body")
    m = int(c.attr("num_scan_inputs"))
    if c.opset < 9:
        return _scan8(c, body, m)
    ins = [c.input(i) for i in range(c.n_in())]
    return _scan_core(c, body, ins[:len(ins) - m], ins[len(ins) - m:], c.name)


def _scan_core(c: NodeCtx, body: onnx.GraphProto, states: list[Entry], xs: list[Entry], scope: str) -> list[Entry]:
    m = len(xs)
    in_axes = [_axis(a, c.rank(x), "scan_input_axes") for a, x in zip(c.attr("scan_input_axes") or [0] * m, xs)]
    in_dirs = c.attr("scan_input_directions") or [0] * m
    lens = {c.shape(x)[a] for x, a in zip(xs, in_axes)}
    if len(lens) != 1:
        raise BuildError(f"scan inputs have different sequence lengths {sorted(lens)}")
    steps = lens.pop()
    if steps > UNROLL_MAX:
        raise Unsupported(f"a sequence of {steps} steps (unrolled up to {UNROLL_MAX})")
    n_out = len(body.output) - len(states)
    out_axes = c.attr("scan_output_axes") or [0] * n_out
    out_dirs = c.attr("scan_output_directions") or [0] * n_out
    per_step: list[list[Entry]] = [[] for _ in range(n_out)]
    for t in range(steps):
        sl = [c.add("select", [x], dim=a, index=(steps - 1 - t) if d else t) for x, a, d in zip(xs, in_axes, in_dirs)]
        outs = _run_body(c, body, list(states) + sl, f"{scope}::step{t}::")
        states = outs[:len(states)]
        for k in range(n_out):
            per_step[k].append(outs[len(states) + k])
    scans = [_stack(c, parts[::-1] if d else parts, a) for parts, a, d in zip(per_step, out_axes, out_dirs)]
    return list(states) + scans


def _scan8(c: NodeCtx, body: onnx.GraphProto, m: int) -> list[Entry]:
    """Scan-8: a leading batch axis on every input and output, the scan axis after it, an optional
    ``sequence_lens`` (only full lengths)."""
    ins = [c.input(i) if c.has(i) else None for i in range(c.n_in())]
    if ins[0] is not None:
        lens = c.ints(0, "sequence_lens")
        xs0 = ins[len(ins) - m:]
        if any(n != c.shape(xs0[0])[1] for n in lens):
            raise Unsupported("sequence_lens shorter than the scan inputs")
    rest = ins[1:]
    n_state = len(rest) - m
    batch = c.shape(rest[0])[0]
    dirs = c.attr("directions") or [0] * m
    results: list[list[Entry]] = []
    for b in range(batch):
        sel = [c.add("select", [x], dim=0, index=b) for x in rest]
        states, xs = sel[:n_state], sel[n_state:]
        steps = c.shape(xs[0])[0]
        n_out = len(body.output) - n_state
        per_step: list[list[Entry]] = [[] for _ in range(n_out)]
        for t in range(steps):
            sl = [c.add("select", [x], dim=0, index=(steps - 1 - t) if d else t) for x, d in zip(xs, dirs)]
            outs = _run_body(c, body, list(states) + sl, f"{c.name}::b{b}::step{t}::")
            states = outs[:n_state]
            for k in range(n_out):
                per_step[k].append(outs[n_state + k])
        results.append(list(states) + [_stack(c, p, 0) for p in per_step])
    return [_stack(c, [r[k] for r in results], 0) for k in range(len(results[0]))]


@converter("Loop")
def _loop(c: NodeCtx) -> list[Entry]:
    """Loop with a trip count and condition known at build time, unrolled (the condition the body computes
    must be known at build time too)."""
    body = c.attr("body")
    trips = c.ints(0, "trip count M")[0] if c.has(0) else None
    cond = bool(c.const(1, "cond").reshape(-1)[0]) if c.has(1) else True
    if trips is None and c.has(1) is False:
        raise Unsupported("a Loop without trip count or condition (infinite)")
    carried = [c.input(i) for i in range(2, c.n_in())]
    n_scan = len(body.output) - 1 - len(carried)
    per_step: list[list[Entry]] = [[] for _ in range(n_scan)]
    i = 0
    while cond and (trips is None or i < trips):
        if i >= UNROLL_MAX:
            raise Unsupported(f"more than {UNROLL_MAX} iterations (unrolled at build time)")
        outs = _run_body(c, body, [torch.tensor(i, dtype=torch.int64), torch.tensor(cond)] + carried,
                         f"{c.name}::iter{i}::")
        co = outs[0]
        if not isinstance(co, torch.Tensor):
            co = c.imp.evaluate(co)
            if co is None:
                raise Unsupported("the loop condition is computed at run time")
        cond = bool(co.reshape(-1)[0])
        carried = outs[1:1 + len(carried)]
        for k in range(n_scan):
            per_step[k].append(outs[1 + len(carried) + k])
        i += 1
    return carried + [_stack(c, p, 0) for p in per_step]


# ------------------------------------------------------------------------------- cumulative sums
SCAN_CHAIN_MAX = 32  # scans this short unroll into a chain of pointwise ops (exact, any dtype)


def _scan_chain(c: NodeCtx, x: Entry, ax: int, op: str, excl: bool, rev: bool) -> Entry:
    """Cumulative ``op`` along ``ax`` as running partial results joined by one cat (no scan op in the table)."""
    n = c.shape(x)[ax]
    order = range(n - 1, -1, -1) if rev else range(n)
    parts, acc = [], None
    for k in order:
        xk = c.add("slice", [x], dim=ax, start=k, end=k + 1, step=1)
        if excl:
            blk = list(c.shape(xk))
            parts.append(acc if acc is not None else torch.full(blk, 1 if op == "mul" else 0, dtype=c.dtype(x)))
        acc = xk if acc is None else c.add(op, [acc, xk])
        if not excl:
            parts.append(acc)
    if rev:
        parts.reverse()
    # place part k at index k along ax: a where-chain (one fused pointwise kernel) rather than a cat
    rank = c.rank(x)
    iota = torch.arange(n).reshape([n] + [1] * (rank - ax - 1))
    y = c.add("where", [iota == 0, parts[0], torch.zeros((), dtype=c.dtype(x))])
    for k in range(1, n):
        y = c.add("where", [iota == k, parts[k], y])
    return y


@converter("CumSum", "CumProd")
def _cumsum(c: NodeCtx) -> Entry:
    """Short scans: a chain of adds (multiplies); long cumulative sums: a matmul with a triangular 0/1 matrix."""
    x = c.input(0)
    rank = c.rank(x)
    if rank == 0:
        raise BuildError("a cumulative op needs rank >= 1")
    ax = _axis(c.ints(1, "axis")[0], rank)
    n = c.shape(x)[ax]
    excl, rev = bool(c.attr("exclusive", 0)), bool(c.attr("reverse", 0))
    if n == 0:
        raise Unsupported("a zero-size axis")
    if n <= SCAN_CHAIN_MAX:
        return _scan_chain(c, x, ax, "add" if c.node.op_type == "CumSum" else "mul", excl, rev)
    if c.node.op_type == "CumProd":
        raise Unsupported(f"CumProd over {n} > {SCAN_CHAIN_MAX} elements (needs a scan op)")
    _need_float(c, x)
    i = torch.arange(n)
    # out[j] = sum_k x[k] * m[k, j]
    if rev:
        m = (i[:, None] > i[None, :]) if excl else (i[:, None] >= i[None, :])
    else:
        m = (i[:, None] < i[None, :]) if excl else (i[:, None] <= i[None, :])
    return _along_last(c, x, ax, lambda t: _matmul(c, t, m.to(c.dtype(x))))


# ----------------------------------------------------------------------------------- quantization
def _qparams(c: NodeCtx, x: Entry, i_scale: int, i_zp: int) -> tuple[Entry, Entry | None, int | None]:
    scale = c.input(i_scale)
    zp = c.input(i_zp) if c.has(i_zp) else None
    if c.attr("block_size", 0):
        raise Unsupported("blocked quantization")
    rank = c.rank(x)
    ax = None
    if c.rank(scale) == 1 and c.shape(scale)[0] > 1 or (c.rank(scale) == 1 and rank > 1 and c.attr("axis") is not None):
        ax = _axis(c.attr("axis", 1), rank)
        shp = [1] * rank
        shp[ax] = c.shape(scale)[0]
        scale = c.reshape(scale, shp)
        if zp is not None:
            zp = c.reshape(zp, shp)
    return scale, zp, ax


def _symmetric_int8_scale(c: NodeCtx, q_dtype: torch.dtype) -> float | None:
    """The scale of a symmetric per-tensor int8 Q/DQ (constant positive fp32 scalar scale, zero point absent
    or 0): such nodes import as IR quantize/dequantize, which passes/quantize_int8 folds into int8 kernels.
    None for every other variant (they keep the exact decomposition below)."""
    if q_dtype != torch.int8 or c.attr("block_size", 0) or not c.is_const(1):
        return None
    scale = c.const(1)
    if scale.numel() != 1 or scale.dtype != torch.float32 or not float(scale.reshape(())) > 0:
        return None
    if c.has(2) and not (c.is_const(2) and c.const(2).dtype == torch.int8 and not c.const(2).any()):
        return None
    return float(scale.reshape(()))


@converter("DequantizeLinear")
def _dequantize(c: NodeCtx) -> Entry:
    x = c.input(0)
    if c.dtype(x) not in (torch.int8, torch.uint8, torch.int32, torch.int16, torch.uint16):
        raise Unsupported(f"input dtype {c.dtype(x)}")
    s = _symmetric_int8_scale(c, c.dtype(x))
    if s is not None and not isinstance(x, torch.Tensor):  # (a constant weight folds to fp32 right away)
        return c.add("dequantize", [x], scale=s)
    scale, zp, _ = _qparams(c, x, 1, 2)
    out_dt = c.dtype(scale)
    xf = c.cast(x, torch.float32)
    if zp is not None:
        xf = c.add("sub", [xf, c.cast(zp, torch.float32)])
    return c.cast(c.add("mul", [xf, c.cast(scale, torch.float32)]), out_dt)


def _round_even(c: NodeCtx, x: Entry) -> Entry:
    r = c.add("floor", [c.add("add", [x, c.scalar(0.5, x)])])
    tie = c.add("eq", [c.add("sub", [r, x]), c.scalar(0.5, x)])
    half = c.add("mul", [r, c.scalar(0.5, x)])
    odd = c.add("ne", [c.add("floor", [half]), half])
    return c.add("where", [c.add("logical_and", [tie, odd]), c.add("sub", [r, c.scalar(1.0, x)]), r])


_QRANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127), torch.int16: (-32768, 32767)}
_QRANGE[torch.uint16] = (0, 65535)


@converter("QuantizeLinear")
def _quantize(c: NodeCtx) -> Entry:
    x = c.input(0)
    scale, zp, _ = _qparams(c, x, 1, 2)
    out_dt = c.dtype(zp) if zp is not None else ONNX_DTYPES.get(c.attr("output_dtype", TensorProto.UINT8))
    if out_dt not in _QRANGE:
        raise Unsupported(f"quantization to {out_dt}")
    s = _symmetric_int8_scale(c, out_dt)
    if s is not None:
        return c.add("quantize", [c.cast(x, torch.float32)], scale=s)
    lo, hi = _QRANGE[out_dt]
    xf = c.cast(x, torch.float32)
    q = _round_even(c, c.add("div", [xf, c.cast(scale, torch.float32)]))
    if zp is not None:
        q = c.add("add", [q, c.cast(zp, torch.float32)])
    q = c.add("clamp", [q], min=float(lo), max=float(hi))
    return c.cast(q, out_dt)


@converter("DynamicQuantizeLinear")
def _dyn_quant(c: NodeCtx) -> list[Entry]:
    x = c.input(0)
    dims = list(range(c.rank(x)))
    zero = c.scalar(0.0, x)
    mx = c.add("maximum", [c.add("amax", [x], dims=dims, keepdim=False), zero])
    mn = c.add("minimum", [c.add("amin", [x], dims=dims, keepdim=False), zero])
    scale = c.add("div", [c.add("sub", [mx, mn]), c.scalar(255.0, x)])
    zpf = c.add("clamp", [_round_even(c, c.add("sub", [zero, c.add("div", [mn, scale])]))], min=0.0, max=255.0)
    q = c.add("clamp", [c.add("add", [_round_even(c, c.add("div", [x, scale])), zpf])], min=0.0, max=255.0)
    return [c.cast(q, torch.uint8), scale, c.cast(zpf, torch.uint8)]


# ------------------------------------------------------------------------------------ losses
@converter("NegativeLogLikelihoodLoss")
def _nll(c: NodeCtx) -> Entry:
    return _nll_of(c, c.input(0), c.input(1), c.input(2) if c.has(2) else None)


def _nll_of(c: NodeCtx, x: Entry, target: Entry, weight: Entry | None) -> Entry:
    """-x[n, t[n, ...], ...] * w[t] by a one-hot mask over classes (all table ops)."""
    shape = c.shape(x)
    ncls = shape[1]
    rank = len(shape)
    ignore = c.attr("ignore_index")
    red = c.attr("reduction", "mean")
    tu = c.reshape(target, [shape[0], 1] + list(shape[2:]))
    iota = torch.arange(ncls, dtype=c.dtype(target)).reshape([ncls] + [1] * (rank - 2))
    onehot = c.add("eq", [tu, iota])
    picked = c.add("sum", [c.add("where", [onehot, x, c.scalar(0.0, x)])], dims=[1], keepdim=False)
    loss = c.add("neg", [picked])
    w = None
    if weight is not None:
        wv = c.reshape(weight, [ncls] + [1] * (rank - 2))
        w = c.add("sum", [c.add("where", [onehot, wv, c.scalar(0.0, x)])], dims=[1], keepdim=False)
    if ignore is not None:
        keep = c.add("ne", [target, c.scalar(int(ignore), target)])
        kf = c.cast(keep, c.dtype(x))
        w = kf if w is None else c.add("mul", [w, kf])
    if w is not None:
        loss = c.add("mul", [loss, w])
    if red == "none":
        return loss
    all_dims = list(range(c.rank(loss)))
    total = c.add("sum", [loss], dims=all_dims, keepdim=False)
    if red == "sum":
        return total
    if w is None:
        return c.add("div", [total, c.scalar(float(math.prod(c.shape(loss))), x)])
    return c.add("div", [total, c.add("sum", [w], dims=all_dims, keepdim=False)])


@converter("SoftmaxCrossEntropyLoss")
def _sce(c: NodeCtx) -> list[Entry]:
    x, t = c.input(0), c.input(1)
    lp = c.add("log_softmax", [x], dim=1)
    loss = _nll_of(c, lp, t, c.input(2) if c.has(2) else None)
    outs = [loss]
    if len(c.node.output) > 1 and c.node.output[1]:
        outs.append(lp)
    return outs


# ---------------------------------------------------------------------------------- one-hot etc.
@converter("OneHot")
def _onehot(c: NodeCtx) -> Entry:
    idx = c.input(0)
    depth = int(c.const(1, "depth").reshape(-1)[0].item())
    vals = c.const(2, "values")
    off, on = vals[0], vals[1]
    rank = c.rank(idx) + 1
    ax = _axis(c.attr("axis", -1), rank)
    idx = c.cast(idx, torch.int64) if c.dtype(idx) != torch.int64 else idx
    if not c.dtype(idx).is_floating_point:
        idx = c.add("where", [c.add("lt", [idx, c.scalar(0, idx)]), c.add("add", [idx, c.scalar(depth, idx)]), idx])
    iu = c.add("unsqueeze", [idx], dim=ax)
    iota = torch.arange(depth, dtype=torch.int64).reshape([depth] + [1] * (rank - ax - 1))
    return c.add("where", [c.add("eq", [iu, iota]), on, off])


# ------------------------------------------------------------------------------------ attention
def _split_heads(c: NodeCtx, x: Entry, heads: int) -> Entry:
    b, s, hid = c.shape(x)
    return c.add("permute", [c.reshape(x, [b, s, heads, hid // heads])], dims=[0, 2, 1, 3])


def _repeat_heads(c: NodeCtx, x: Entry, rep: int) -> Entry:
    """[h0, h1] -> [h0, h0, h1, h1] along dim 1 (numpy.repeat), as GQA needs."""
    b, h, s, d = c.shape(x)
    return c.reshape(c.add("expand", [c.add("unsqueeze", [x], dim=2)], shape=[b, h, rep, s, d]), [b, h * rep, s, d])


@converter("Attention")
def _attention(c: NodeCtx) -> list[Entry]:
    """ONNX Attention (opset 23+): KV cache concat, GQA, causal/sliding-window/padding/user masks as one
    additive bias, softcap, softmax with fully-masked rows zeroed, all as table ops."""
    q, k, v = c.input(0), c.input(1), c.input(2)
    _need_float(c, q)
    dt = c.dtype(q)
    mask = c.input(3) if c.has(3) else None
    past_k, past_v = (c.input(4) if c.has(4) else None), (c.input(5) if c.has(5) else None)
    nonpad = c.const(6, "nonpad_kv_seqlen").reshape(-1).to(torch.int64) if c.has(6) else None
    if (past_k is None) != (past_v is None):
        raise BuildError("past_key and past_value must be given together")
    three_d = c.rank(q) == 3
    if three_d:
        q = _split_heads(c, q, int(c.attr("q_num_heads")))
        k = _split_heads(c, k, int(c.attr("kv_num_heads")))
        v = _split_heads(c, v, int(c.attr("kv_num_heads")))
    b, hq, sq, d = c.shape(q)
    if past_k is not None:
        k = c.add("cat", [past_k, k], dim=2)
        v = c.add("cat", [past_v, v], dim=2)
    present_k, present_v = k, v
    hk, lk = c.shape(k)[1], c.shape(k)[2]
    scale = c.attr("scale")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    root = torch.tensor(math.sqrt(scale), dtype=torch.float64).to(dt)
    ninf = float("-inf")

    def as_bias(allowed: torch.Tensor) -> torch.Tensor:
        return torch.where(allowed, torch.tensor(0.0, dtype=dt), torch.tensor(ninf, dtype=dt))

    bias: Entry | None = None
    if mask is not None:
        if c.shape(mask)[-1] < lk:
            fill = torch.full(list(c.shape(mask)[:-1]) + [lk - c.shape(mask)[-1]],
                              False if c.dtype(mask) == torch.bool else ninf, dtype=c.dtype(mask))
            mask = c.add("cat", [mask, fill], dim=c.rank(mask) - 1)
        if c.dtype(mask) == torch.bool:
            mask = c.add("where", [mask, c.scalar(0.0, dt), c.scalar(ninf, dt)])
        bias = c.cast(mask, dt)
    if past_k is not None:
        offset: Any = c.shape(past_k)[2]
    elif nonpad is not None:
        offset = (nonpad - sq).reshape(-1, 1, 1)
    else:
        offset = 0
    i = torch.arange(sq).reshape(sq, 1)
    j = torch.arange(lk).reshape(1, lk)
    pos = i + offset

    def add_bias(extra: torch.Tensor) -> None:
        nonlocal bias
        if extra.dim() == 3:
            extra = extra.reshape(extra.shape[0], 1, sq, lk)
        bias = extra if bias is None else c.add("add", [bias, extra])

    if c.attr("is_causal", 0):
        add_bias(as_bias(j <= pos))
    left, right = int(c.attr("left_window_size", -1)), int(c.attr("right_window_size", -1))
    if left >= 0 or right >= 0:
        diff = pos - j
        allowed = torch.ones_like(diff, dtype=torch.bool)
        if left >= 0:
            allowed &= diff <= left
        if right >= 0:
            allowed &= -diff <= right
        add_bias(as_bias(allowed))
    if nonpad is not None:
        add_bias(as_bias(torch.arange(lk).reshape(1, 1, 1, lk) < nonpad.reshape(-1, 1, 1, 1)))
    if hq != hk:
        k, v = _repeat_heads(c, k, hq // hk), _repeat_heads(c, v, hq // hk)
    s = c.add("matmul", [c.add("mul", [q, root]), c.add("permute", [c.add("mul", [k, root])], dims=[0, 1, 3, 2])])
    cap = float(c.attr("softcap", 0.0) or 0.0)
    if cap > 0:
        s = c.add("mul", [c.add("tanh", [c.add("div", [s, c.scalar(cap, s)])]), c.scalar(cap, s)])
    mode = int(c.attr("qk_matmul_output_mode", 0))
    qk = s
    if bias is not None:
        s = c.add("add", [s, bias])
    if mode == 2:
        qk = s
    sp = c.attr("softmax_precision")
    if sp is not None:
        if sp not in ONNX_DTYPES:
            raise Unsupported(f"softmax_precision {onnx_type_name(sp)}")
        s = c.cast(s, ONNX_DTYPES[sp])
    p = c.add("softmax", [s], dim=3)
    if bias is not None:
        if isinstance(bias, torch.Tensor):
            dead = torch.isneginf(bias.amax(dim=-1, keepdim=True))
            if bool(dead.any()):
                p = c.add("where", [dead, c.scalar(0.0, p), p])
        else:
            dead = c.add("eq", [c.add("amax", [bias], dims=[c.rank(bias) - 1], keepdim=True), c.scalar(ninf, bias)])
            p = c.add("where", [dead, c.scalar(0.0, p), p])
    if mode == 3:
        qk = p
    p = c.cast(p, dt)
    y = c.add("matmul", [p, v])
    if three_d:
        y = c.reshape(c.add("permute", [y], dims=[0, 2, 1, 3]), [b, sq, hq * c.shape(y)[3]])
    return [y, present_k, present_v, c.cast(qk, dt)]


# -------------------------------------------------------------------------------- resize / upsample
def _resize_matrix(coeff_mode: str, n: int, m: int, scale: float, roi: list[float] | None, attrs: dict) -> tuple:
    """The (m, n) matrix and (m,) offset with out = M @ in + b of ONNX's 1-D resize along one axis, from
    onnx's reference implementation applied to the unit vectors (every mode there is separable)."""
    from onnx.reference.ops import op_resize as R

    a = attrs.get("cubic_coeff_a", -0.75)
    nm = attrs.get("nearest_mode", "round_prefer_floor")
    aa = attrs.get("antialias", 0)
    if coeff_mode == "nearest":
        def fct(x: Any, s: Any) -> Any:
            return R._nearest_coeffs(x, mode=nm)
    elif coeff_mode == "cubic":
        base = R._cubic_coeffs_antialias if aa else R._cubic_coeffs

        def fct(x: Any, s: Any) -> Any:
            return base(x, s, A=a)
    elif coeff_mode == "linear":
        fct = R._linear_coeffs_antialias if aa else R._linear_coeffs
    else:
        raise Unsupported(f"mode={coeff_mode!r}")
    kw = {"coordinate_transformation_mode": attrs.get("coordinate_transformation_mode", "half_pixel"),
          "extrapolation_value": attrs.get("extrapolation_value", 0.0)}
    basis = np.concatenate([np.eye(n), np.zeros((1, n))], axis=0)
    out = R._interpolate_1d_along_axis(basis, 1, scale, m, fct, roi=roi,
                                       exclude_outside=bool(attrs.get("exclude_outside", 0)), **kw)
    offset = out[n]
    return (out[:n] - offset[None, :]).T, offset


@converter("Resize", "Upsample")
def _resize(c: NodeCtx) -> Entry:
    x = c.input(0)
    shape = list(c.shape(x))
    rank = len(shape)
    mode = c.attr("mode", "nearest")
    attrs = {k: c.attr(k) for k in c.attrs}
    if c.node.op_type == "Upsample" or c.opset < 11:
        mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)
        attrs["coordinate_transformation_mode"] = "asymmetric"
        attrs["nearest_mode"] = "floor"
        scales = [float(s) for s in (c.attr("scales") or c.const(1, "scales").tolist())]
        sizes, roi, axes = None, None, list(range(rank))
    else:
        axes = [_axis(a, rank) for a in (c.attr("axes") or range(rank))]
        roi = [float(v) for v in c.const(1, "roi").reshape(-1).tolist()] if c.has(1) else []
        roi = roi or None
        scales = [float(s) for s in c.const(2, "scales").reshape(-1).tolist()] if c.has(2) else []
        sizes = c.ints(3, "sizes") if c.has(3) else []
        scales, sizes = scales or None, sizes or None
    if sizes is not None:
        sc = [sizes[j] / shape[a] for j, a in enumerate(axes)]
        policy = c.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            common = min(sc) if policy == "not_larger" else max(sc)
            sc = [common] * len(axes)
            sizes = [int(common * shape[a] + 0.5) for a in axes]
        scales = sc
    else:
        sizes = [int(scales[j] * shape[a]) for j, a in enumerate(axes)]
    if not c.dtype(x).is_floating_point and mode != "nearest":
        raise Unsupported(f"mode={mode!r} on {c.dtype(x)} data")
    y = x
    nax = len(axes)
    for j, a in enumerate(axes):
        n, m, s = shape[a], sizes[j], scales[j]
        r = [roi[j], roi[j + nax]] if roi is not None and len(roi) == 2 * nax else None
        if math.isclose(s, 1.0) and m == n and (r is None or (math.isclose(r[0], 0.0) and math.isclose(r[1], 1.0))):
            continue
        if m == 0:
            raise Unsupported("a zero-size output")
        try:
            mat, off = _resize_matrix(mode, n, m, s, r, attrs)
        except Unsupported:
            raise
        except Exception as e:
            raise Unsupported(f"cannot build the interpolation weights: {type(e).__name__}: {_first_line(e)}") \
                from None
        onehot = np.all((mat == 0) | (mat == 1), axis=1) & (mat.sum(axis=1) == 1) & (off == 0)
        if onehot.all():
            idx = [int(v) for v in mat.argmax(axis=1)]
            if m % n == 0 and idx == [o // (m // n) for o in range(m)]:
                f = m // n
                cur = list(c.shape(y))
                z = c.add("expand", [c.reshape(y, cur[:a + 1] + [1] + cur[a + 1:])], shape=cur[:a + 1] + [f] + cur[a + 1:])
                y = c.reshape(z, cur[:a] + [m] + cur[a + 1:])
            else:
                y = _take(c, y, a, idx)
            continue
        if not c.dtype(x).is_floating_point:
            raise Unsupported("interpolating integer data")
        wt = torch.from_numpy(mat.T.copy()).to(c.dtype(x))
        y = _along_last(c, y, a, lambda t, wt=wt: c.add("matmul", [t, wt]))
        if np.any(off != 0):
            bshape = [1] * rank
            bshape[a] = m
            y = c.add("add", [y, torch.from_numpy(off.copy()).to(c.dtype(x)).reshape(bshape)])
    return y if y is not x else (c.add("copy", [x]) if isinstance(x, Value) else x)


def _along_last(c: NodeCtx, x: Entry, ax: int, fn: Callable[[Entry], Entry]) -> Entry:
    """fn applied with axis ``ax`` moved last (and moved back)."""
    rank = c.rank(x)
    if ax == rank - 1:
        return fn(x)
    perm = [d for d in range(rank) if d != ax] + [ax]
    inv = [perm.index(d) for d in range(rank)]
    return c.add("permute", [fn(c.add("permute", [x], dims=perm))], dims=inv)


# -------------------------------------------------------------------------------------------- pad
def _reflect(i: int, n: int) -> int:
    if n == 1:
        return 0
    p = 2 * (n - 1)
    i %= p
    return i if i < n else p - i


@converter("Pad")
def _pad(c: NodeCtx) -> Entry:
    x = c.input(0)
    rank = c.rank(x)
    mode = c.attr("mode", "constant")
    if c.opset < 11:
        pads = list(c.attr("pads"))
        value: Entry = torch.tensor(float(c.attr("value", 0.0)), dtype=c.dtype(x))
        axes = list(range(rank))
    else:
        pads = c.ints(1, "pads")
        value = c.input(2) if c.has(2) else torch.tensor(0, dtype=c.dtype(x))
        axes = [_axis(a, rank) for a in c.ints(3, "axes")] if c.has(3) else list(range(rank))
    nax = len(axes)
    ir_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if "pad" in OPS and ir_mode is not None and isinstance(value, torch.Tensor) and c.dtype(x).is_floating_point:
        before, after = [0] * rank, [0] * rank
        for j, ax in enumerate(axes):
            before[ax], after[ax] = pads[j], pads[j + nax]
        v = float(value.reshape(-1)[0]) if value.numel() else 0.0
        try:  # the table's pad op: one kernel
            return c.add("pad", [x], before=before, after=after, mode=ir_mode, value=v)
        except (GraphError, TypeError, RuntimeError):
            pass  # a variant the op does not take: cat / index_select below
    y = x
    for j, ax in enumerate(axes):
        b, e = pads[j], pads[j + nax]
        size = c.shape(y)[ax]
        if b < 0 or e < 0:
            lo, hi = max(-b, 0), size - max(-e, 0)
            if hi <= lo:
                raise Unsupported("padding that crops everything")
            y = c.add("slice", [y], dim=ax, start=lo, end=hi, step=1)
            b, e, size = max(b, 0), max(e, 0), hi - lo
        if b == 0 and e == 0:
            continue
        if mode == "constant":
            parts = []
            for w in (b, 0, e):
                if w == 0:
                    continue
                blk = list(c.shape(y))
                blk[ax] = w
                if isinstance(value, torch.Tensor):
                    v = value.reshape(-1)[0] if value.numel() else torch.tensor(0)
                    parts.append(torch.full(blk, v.item(), dtype=c.dtype(x)))
                else:  # a pointwise op materializes the broadcast block (cat reads plain buffers best)
                    parts.append(c.add("add", [torch.zeros(blk, dtype=c.dtype(x)), c.reshape(value, [1] * rank)]))
            parts.insert(1 if b else 0, y)
            y = c.add("cat", parts, dim=ax)
            continue
        if size == 0:
            raise Unsupported(f"mode={mode!r} padding of an empty dimension")
        rng = range(-b, size + e)
        if mode == "edge":
            idx = [min(max(i, 0), size - 1) for i in rng]
        elif mode == "reflect":
            idx = [_reflect(i, size) for i in rng]
        elif mode == "wrap":
            idx = [i % size for i in rng]
        else:
            raise Unsupported(f"mode={mode!r}")
        y = _take(c, y, ax, idx)
    return y if y is not x else (c.add("copy", [x]) if isinstance(x, Value) else x)


# ------------------------------------------------------------------------------------------ einsum
@converter("Einsum")
def _einsum(c: NodeCtx) -> Entry:
    """Any einsum as diagonal extraction, broadcasting multiply and a sum over the contracted labels."""
    eq = c.attr("equation").replace(" ", "")
    xs = [c.input(i) for i in range(c.n_in())]
    lhs, rhs = eq.split("->") if "->" in eq else (eq, None)
    terms = lhs.split(",")
    if len(terms) != len(xs):
        raise BuildError(f"equation {eq!r} names {len(terms)} operands, the node has {len(xs)}")
    n_ell = 0
    for t, x in zip(terms, xs):
        if "..." in t:
            n_ell = max(n_ell, c.rank(x) - (len(t) - 3))
    ell = [f"...{i}" for i in range(n_ell)]

    def labels(t: str, rank: int) -> list[str]:
        if "..." in t:
            pre, post = t.split("...")
            k = rank - len(pre) - len(post)
            return list(pre) + ell[n_ell - k:] + list(post)
        return list(t)

    ops = [labels(t, c.rank(x)) for t, x in zip(terms, xs)]
    if rhs is None:
        counts: dict[str, int] = {}
        for ls in ops:
            for lab in ls:
                counts[lab] = counts.get(lab, 0) + 1
        out = ell + sorted(lab for lab, n in counts.items() if n == 1 and not lab.startswith("..."))
    else:
        out = labels(rhs, len(rhs.replace("...", "")) + n_ell)
    sizes: dict[str, int] = {}
    vals = []
    for x, ls in zip(xs, ops):
        # repeated labels: take the diagonal
        while len(set(ls)) != len(ls):
            lab = next(lab for lab in ls if ls.count(lab) > 1)
            p1 = ls.index(lab)
            p2 = ls.index(lab, p1 + 1)
            rank = len(ls)
            perm = [d for d in range(rank) if d not in (p1, p2)] + [p1, p2]
            n = c.shape(x)[p1]
            x = c.add("permute", [x], dims=perm)
            x = c.reshape(x, list(c.shape(x)[:-2]) + [n * n])
            x = c.add("slice", [x], dim=rank - 2, start=0, end=n * n, step=n + 1)
            ls = [ls[d] for d in perm[:-2]] + [lab]
        for lab, s in zip(ls, c.shape(x)):
            if s != 1 or lab not in sizes:
                sizes[lab] = s
        vals.append((x, ls))
    order = list(out) + [lab for lab in dict.fromkeys(lab for _, ls in vals for lab in ls) if lab not in out]
    aligned = []
    for x, ls in vals:
        mine = sorted(ls, key=order.index)
        if mine != ls:
            x = c.add("permute", [x], dims=[ls.index(lab) for lab in mine])
        shape = [c.shape(x)[mine.index(lab)] if lab in mine else 1 for lab in order]
        aligned.append(c.reshape(x, shape))
    y = aligned[0]
    for z in aligned[1:]:
        y = c.add("mul", [y, z])
    red = [i for i, lab in enumerate(order) if lab not in out]
    if red:
        y = c.add("sum", [y], dims=red, keepdim=False)
    if y is xs[0] and isinstance(y, Value):
        y = c.add("copy", [y])
    return y


# ------------------------------------------------------------------------------- gathers by index
@converter("Compress")
def _compress(c: NodeCtx) -> Entry:
    x = c.input(0)
    cond = c.const(1, "condition").reshape(-1).to(torch.bool)
    ax = c.attr("axis")
    if ax is None:
        x = c.reshape(x, [math.prod(c.shape(x))])
        ax = 0
    ax = _axis(ax, c.rank(x))
    idx = [int(i) for i in torch.nonzero(cond[:c.shape(x)[ax]]).reshape(-1).tolist()]
    if not idx:
        raise Unsupported("an empty result")
    return _take(c, x, ax, idx)


@converter("GatherND")
def _gather_nd(c: NodeCtx) -> Entry:
    """Flat row indices (sum of index * stride) into the data reshaped to (rows, rest...), then index_select."""
    x, idx = c.input(0), c.input(1)
    bd = int(c.attr("batch_dims", 0))
    xs, ishape = list(c.shape(x)), list(c.shape(idx))
    k = ishape[-1]
    batch, indexed, rest = xs[:bd], xs[bd:bd + k], xs[bd + k:]
    nb, npos = math.prod(batch), math.prod(indexed)
    strides = [math.prod(indexed[i + 1:]) for i in range(k)]
    dims_t = torch.tensor(indexed, dtype=torch.int64)
    st_t = torch.tensor(strides, dtype=torch.int64)
    ii = c.cast(idx, torch.int64)
    ii = c.add("where", [c.add("lt", [ii, c.scalar(0, ii)]), c.add("add", [ii, dims_t]), ii])
    flat = c.add("sum", [c.add("mul", [ii, st_t])], dims=[len(ishape) - 1], keepdim=False)
    if bd:
        boff = (torch.arange(nb, dtype=torch.int64) * npos).reshape(batch + [1] * (len(ishape) - 1 - bd))
        flat = c.add("add", [flat, boff])
    data = c.reshape(x, [nb * npos] + rest)
    rows = c.add("index_select", [data, c.reshape(flat, [math.prod(ishape[:-1])])], dim=0)
    return c.reshape(rows, ishape[:-1] + rest)


@converter("ReverseSequence")
def _reverse_sequence(c: NodeCtx) -> Entry:
    x = c.input(0)
    lens = c.ints(1, "sequence_lens")
    ba, ta = int(c.attr("batch_axis", 1)), int(c.attr("time_axis", 0))
    shape = list(c.shape(x))
    t_len = shape[ta]
    index = torch.arange(t_len).reshape([t_len if d == ta else 1 for d in range(len(shape))]).expand(shape).clone()
    for bi, n in enumerate(lens):
        sel = [slice(None)] * len(shape)
        sel[ba] = bi
        sub = index[tuple(sel)]
        tdim = ta if ta < ba else ta - 1
        rev = torch.arange(t_len)
        rev[:n] = torch.arange(n - 1, -1, -1)
        sub.copy_(rev.reshape([t_len if d == tdim else 1 for d in range(len(shape) - 1)]).expand(sub.shape))
    return c.add("gather", [x, index], dim=ta)


# ---------------------------------------------------------------------------- integer / q-linear
def _zp_shift(c: NodeCtx, x: Entry, zp: Entry | None, axis_shape: list[int] | None = None) -> Entry:
    xf = c.cast(x, torch.float32)
    if zp is None:
        return xf
    z = c.cast(zp, torch.float32)
    if axis_shape is not None and c.rank(z) == 1 and c.shape(z)[0] > 1:
        z = c.reshape(z, axis_shape)
    return c.add("sub", [xf, z])


def _requantize(c: NodeCtx, real: Entry, ys: Entry, yzp: Entry | None, out_dt: torch.dtype) -> Entry:
    if out_dt not in _QRANGE:
        raise Unsupported(f"output dtype {out_dt}")
    lo, hi = _QRANGE[out_dt]
    q = _round_even(c, c.add("div", [real, c.cast(ys, torch.float32)]))
    if yzp is not None:
        q = c.add("add", [q, c.cast(yzp, torch.float32)])
    return c.cast(c.add("clamp", [q], min=float(lo), max=float(hi)), out_dt)


@converter("MatMulInteger")
def _matmul_integer(c: NodeCtx) -> Entry:
    a, b = c.input(0), c.input(1)
    azp = c.input(2) if c.has(2) else None
    bzp = c.input(3) if c.has(3) else None
    af = _zp_shift(c, a, azp, [c.shape(a)[-2], 1] if c.rank(a) >= 2 else None)
    bf = _zp_shift(c, b, bzp)
    return c.cast(_matmul(c, af, bf), torch.int32)


@converter("QLinearMatMul")
def _qlinear_matmul(c: NodeCtx) -> Entry:
    a, as_, azp, b, bs, bzp, ys, yzp = (c.input(i) if c.has(i) else None for i in range(8))
    acc = _matmul(c, _zp_shift(c, a, azp), _zp_shift(c, b, bzp))
    real = c.add("mul", [acc, c.add("mul", [c.cast(as_, torch.float32), c.cast(bs, torch.float32)])])
    return _requantize(c, real, ys, yzp, c.dtype(yzp) if yzp is not None else torch.uint8)


def _conv3d(c: NodeCtx, x: Entry, w: Entry, bias: Entry | None, unpadded: bool = False) -> Entry:
    """3-D convolution as one 2-D convolution per kernel depth offset, with the output depths folded into
    the batch, summed (``unpadded``: stride 1, no padding, the node's dilations: a transposed convolution's
    inner convolution)."""
    k = list(c.shape(w)[2:])
    d = list(c.attr("dilations") or [1] * 3)
    if unpadded:
        s, begin, end, pads2 = [1, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0]
    else:
        s = list(c.attr("strides") or [1] * 3)
        begin, end = _pads_begin_end(c, c.shape(x)[2:], k, s, d)
        pads2 = _spatial_pads(c, c.shape(x)[3:], k[1:], s[1:], d[1:]) if begin[1:] == end[1:] else None
        if pads2 is None:
            raise Unsupported(f"asymmetric padding begin={begin} end={end}")
    x = _pad_axis(c, x, 2, begin[0], end[0])
    n, ch, depth = c.shape(x)[:3]
    od = (depth - ((k[0] - 1) * d[0] + 1)) // s[0] + 1
    acc = None
    for kd in range(k[0]):
        st = kd * d[0]
        xs = c.add("slice", [x], dim=2, start=st, end=st + (od - 1) * s[0] + 1, step=s[0])  # [N, C, od, H, W]
        sp = list(c.shape(xs)[3:])
        xs = c.reshape(c.add("permute", [xs], dims=[0, 2, 1, 3, 4]), [n * od, ch] + sp)
        wk = c.add("select", [w], dim=2, index=kd)
        y = c.add("conv2d", [xs, wk], stride=s[1:], padding=pads2, dilation=d[1:], groups=int(c.attr("group", 1)))
        acc = y if acc is None else c.add("add", [acc, y])
    o, ho, wo = c.shape(acc)[1:]
    y = c.add("permute", [c.reshape(acc, [n, od, o, ho, wo])], dims=[0, 2, 1, 3, 4])
    if bias is not None:
        y = c.add("add", [y, c.reshape(bias, [1, -1, 1, 1, 1])])
    return y


def _check_kernel(c: NodeCtx, w: Entry) -> None:
    k = c.attr("kernel_shape")
    if k is not None and list(k) != list(c.shape(w)[2:]):
        raise BuildError(f"kernel_shape {list(k)} does not match the weight's spatial shape {list(c.shape(w)[2:])}")


def _conv_core(c: NodeCtx, x: Entry, w: Entry, bias: Entry | None) -> Entry:
    _check_kernel(c, w)
    rank = c.rank(x)
    if rank == 5:
        return _conv3d(c, x, w, bias)
    if rank not in (3, 4):
        raise Unsupported(f"{rank - 2}-D convolution (only 1-D, 2-D and 3-D)")
    nsp = rank - 2
    k = list(c.attr("kernel_shape") or c.shape(w)[2:])
    s = list(c.attr("strides") or [1] * nsp)
    d = list(c.attr("dilations") or [1] * nsp)
    pads = _spatial_pads(c, c.shape(x)[2:], k, s, d)
    if nsp == 1:
        x, w = _to_2d(c, x), _to_2d(c, w)
        s, d, pads = [1] + s, [1] + d, [0] + pads
    y = c.add("conv2d", [x, w], stride=s, padding=pads, dilation=d, groups=int(c.attr("group", 1)))
    if bias is not None:
        y = c.add("add", [y, c.reshape(bias, [1, -1, 1, 1] if c.shape(bias) else [1, 1, 1, 1])])
    if nsp == 1:
        y = c.add("squeeze", [y], dims=[2])
    return y


@converter("ConvInteger")
def _conv_integer(c: NodeCtx) -> Entry:
    x, w = c.input(0), c.input(1)
    xf = _zp_shift(c, x, c.input(2) if c.has(2) else None)
    wf = _zp_shift(c, w, c.input(3) if c.has(3) else None, [-1] + [1] * (c.rank(w) - 1))
    return c.cast(_conv_core(c, xf, wf, None), torch.int32)


@converter("QLinearConv")
def _qlinear_conv(c: NodeCtx) -> Entry:
    x, xs, xzp, w, ws, wzp, ys, yzp = (c.input(i) if c.has(i) else None for i in range(8))
    bias = c.cast(c.input(8), torch.float32) if c.has(8) else None
    xf = _zp_shift(c, x, xzp)
    wf = _zp_shift(c, w, wzp, [-1] + [1] * (c.rank(w) - 1))
    acc = _conv_core(c, xf, wf, bias)
    wsf = c.cast(ws, torch.float32)
    if c.rank(wsf) == 1 and c.shape(wsf)[0] > 1:
        wsf = c.reshape(wsf, [1, -1] + [1] * (c.rank(acc) - 2))
    real = c.add("mul", [acc, c.add("mul", [c.cast(xs, torch.float32), wsf])])
    return _requantize(c, real, ys, yzp, c.dtype(yzp) if yzp is not None else torch.uint8)


# --------------------------------------------------------------------------------- conv transpose
def _zero_insert(c: NodeCtx, x: Entry, ax: int, s: int) -> Entry:
    """x with s-1 zeros between neighbours along ``ax`` (length (n-1)*s+1)."""
    if s == 1:
        return x
    shape = list(c.shape(x))
    n = shape[ax]
    xu = c.reshape(x, shape[:ax + 1] + [1] + shape[ax + 1:])
    zeros = torch.zeros(shape[:ax + 1] + [s - 1] + shape[ax + 1:], dtype=c.dtype(x))
    y = c.reshape(c.add("cat", [xu, zeros], dim=ax + 1), shape[:ax] + [n * s] + shape[ax + 1:])
    return c.add("slice", [y], dim=ax, start=0, end=(n - 1) * s + 1, step=1)


def _pad_axis(c: NodeCtx, x: Entry, ax: int, lo: int, hi: int, fill: float = 0.0) -> Entry:
    """Padding with ``fill`` (negative: cropping) of ``lo``/``hi`` elements at the two ends of ``ax``."""
    n = c.shape(x)[ax]
    if lo < 0 or hi < 0:
        start, end = max(-lo, 0), n - max(-hi, 0)
        x = c.add("slice", [x], dim=ax, start=start, end=end, step=1)
        lo, hi = max(lo, 0), max(hi, 0)
    parts = []
    for w in (lo, hi):
        blk = list(c.shape(x))
        blk[ax] = w
        parts.append(torch.full(blk, fill, dtype=c.dtype(x)) if w else None)
    seq = [p for p in (parts[0], x, parts[1]) if p is not None]
    return c.add("cat", seq, dim=ax) if len(seq) > 1 else x


@converter("Col2Im")
def _col2im(c: NodeCtx) -> Entry:
    """Columns [N, C*prod(block), L] summed back into the image [N, C, *image_shape]: each block offset's
    columns spread out by the strides (zeros between), shifted to the offset, and added."""
    x = c.input(0)
    image, block = c.ints(1, "image_shape"), c.ints(2, "block_shape")
    nsp = len(image)
    d = list(c.attr("dilations") or [1] * nsp)
    s = list(c.attr("strides") or [1] * nsp)
    pads = list(c.attr("pads") or [0] * (2 * nsp))
    n, ck, length = c.shape(x)
    kn = math.prod(block)
    if ck % kn:
        raise BuildError(f"input dimension 1 ({ck}) is not a multiple of the block size {kn}")
    ch = ck // kn
    padded = [image[i] + pads[i] + pads[nsp + i] for i in range(nsp)]
    outs = [(padded[i] - ((block[i] - 1) * d[i] + 1)) // s[i] + 1 for i in range(nsp)]
    if math.prod(outs) != length:
        raise BuildError(f"{length} columns, but image {image} with block {block} has {math.prod(outs)} blocks")
    x4 = c.reshape(x, [n, ch, kn, length])
    acc = None
    for kidx, offs in enumerate(itertools.product(*[range(b) for b in block])):
        part = c.reshape(c.add("select", [x4], dim=2, index=kidx), [n, ch] + outs)
        for i, o in enumerate(offs):
            part = _zero_insert(c, part, 2 + i, s[i])
            lo = o * d[i]
            part = _pad_axis(c, part, 2 + i, lo, padded[i] - lo - ((outs[i] - 1) * s[i] + 1))
        acc = part if acc is None else c.add("add", [acc, part])
    for i in range(nsp):
        acc = _pad_axis(c, acc, 2 + i, -pads[i], -pads[nsp + i])
    return acc


@converter("ConvTranspose")
def _conv_transpose(c: NodeCtx) -> Entry:
    """Transposed convolution = zero-insertion (stride), padding by k-1-pad, convolution with the flipped,
    transposed kernel."""
    x, w = c.input(0), c.input(1)
    _need_float(c, x)
    rank = c.rank(x)
    if rank not in (3, 4, 5):
        raise Unsupported(f"{rank - 2}-D transposed convolution (only 1-D, 2-D and 3-D)")
    nsp = rank - 2
    g = int(c.attr("group", 1))
    in_sp = list(c.shape(x)[2:])
    k = list(c.attr("kernel_shape") or c.shape(w)[2:])
    s = list(c.attr("strides") or [1] * nsp)
    d = list(c.attr("dilations") or [1] * nsp)
    op = list(c.attr("output_padding") or [0] * nsp)
    keff = [(kk - 1) * dd + 1 for kk, dd in zip(k, d)]
    auto = c.attr("auto_pad", "NOTSET")
    out_shape = c.attr("output_shape")
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = list(out_shape)[-nsp:] if out_shape is not None else [i * ss for i, ss in zip(in_sp, s)]
        total = [ss * (i - 1) + o + ke - t for ss, i, o, ke, t in zip(s, in_sp, op, keff, target)]
        if auto == "SAME_UPPER":
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
    elif auto == "VALID":
        begin, end = [0] * nsp, [0] * nsp
    else:
        pads = list(c.attr("pads") or [0] * (2 * nsp))
        begin, end = pads[:nsp], pads[nsp:]
    cin, coutg = c.shape(w)[0], c.shape(w)[1]
    # weight (Cin, Cout/g, *k) -> (Cout, Cin/g, *k), spatially flipped
    wg = c.reshape(w, [g, cin // g, coutg] + k)
    wt = c.reshape(c.add("permute", [wg], dims=[0, 2, 1] + list(range(3, 3 + nsp))), [g * coutg, cin // g] + k)
    for i in range(nsp):
        wt = _take(c, wt, 2 + i, list(range(k[i] - 1, -1, -1))) if k[i] > 1 else wt
    y = x
    for i in range(nsp):
        y = _zero_insert(c, y, 2 + i, s[i])
        y = _pad_axis(c, y, 2 + i, keff[i] - 1 - begin[i], keff[i] - 1 - end[i] + op[i])
    if nsp == 3:
        return _conv3d(c, y, wt, c.input(2) if c.has(2) else None, unpadded=True)
    if nsp == 1:
        y, wt = _to_2d(c, y), _to_2d(c, wt)
        d = [1] + d
    out = c.add("conv2d", [y, wt], stride=[1, 1], padding=[0, 0], dilation=d, groups=g)
    if c.has(2):
        out = c.add("add", [out, c.reshape(c.input(2), [1, -1, 1, 1])])
    if nsp == 1:
        out = c.add("squeeze", [out], dims=[2])
    return out


# ------------------------------------------------------------------------------ RNN / GRU / LSTM
_ACTS = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Relu": "relu"}


def _act(c: NodeCtx, name: str, x: Entry) -> Entry:
    if name not in _ACTS:
        raise Unsupported(f"activation {name!r}")
    return c.add(_ACTS[name], [x])


@converter("RNN", "GRU", "LSTM")
def _recurrent(c: NodeCtx) -> list[Entry]:
    """Unrolled over the (static) sequence: one matmul for every step's input projection, then per step a
    matmul with the recurrence weights and the gates as pointwise ops."""
    kind = c.node.op_type
    ngates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    x, w, r = c.input(0), c.input(1), c.input(2)
    _need_float(c, x)
    hidden = int(c.attr("hidden_size"))
    direction = c.attr("direction", "forward")
    dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    layout = int(c.attr("layout", 0))
    clip = c.attr("clip")
    if kind == "LSTM" and c.attr("input_forget", 0):
        raise Unsupported("input_forget")
    if c.attr("activation_alpha") or c.attr("activation_beta"):
        raise Unsupported("activation_alpha/activation_beta")
    default = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}[kind]
    acts = list(c.attr("activations") or default * len(dirs))
    per = len(default)
    if layout:
        x = c.add("permute", [x], dims=[1, 0, 2])
    seq, batch, _ = c.shape(x)
    if c.has(4):
        lens = c.ints(4, "sequence_lens")
        if any(n != seq for n in lens):
            raise Unsupported("sequence_lens shorter than the sequence")
    dt = c.dtype(x)

    def state(i: int) -> Entry | None:
        if not c.has(i):
            return None
        s = c.input(i)
        return c.add("permute", [s], dims=[1, 0, 2]) if layout else s

    h0, c0 = state(5), (state(6) if kind == "LSTM" else None)
    peep = c.input(7) if kind == "LSTM" and c.has(7) else None
    ys, hs, cs = [], [], []
    for di, dname in enumerate(dirs):
        a = acts[di * per:(di + 1) * per]
        wd = c.add("select", [w], dim=0, index=di)
        rd = c.add("select", [r], dim=0, index=di)
        xw = c.add("matmul", [x, c.add("permute", [wd], dims=[1, 0])])  # (seq, batch, G*H)
        if c.has(3):
            bd = c.add("select", [c.input(3)], dim=0, index=di)
            wb = c.add("slice", [bd], dim=0, start=0, end=ngates * hidden, step=1)
            rb = c.add("slice", [bd], dim=0, start=ngates * hidden, end=2 * ngates * hidden, step=1)
        else:
            wb = rb = torch.zeros(ngates * hidden, dtype=dt)
        if kind == "GRU" and c.attr("linear_before_reset", 0):
            # the recurrence bias of the update and reset gates adds as usual; the hidden gate's goes
            # inside the reset product (below)
            rb_zr = c.add("cat", [c.add("slice", [rb], dim=0, start=0, end=2 * hidden, step=1),
                                  torch.zeros(hidden, dtype=dt)], dim=0)
            xw = c.add("add", [xw, c.add("add", [wb, rb_zr])])
        else:
            xw = c.add("add", [xw, c.add("add", [wb, rb])])
        rt = c.add("permute", [rd], dims=[1, 0])  # (H, G*H)
        h = c.add("select", [h0], dim=0, index=di) if h0 is not None else torch.zeros(batch, hidden, dtype=dt)
        cell = c.add("select", [c0], dim=0, index=di) if c0 is not None else torch.zeros(batch, hidden, dtype=dt)
        pd = c.add("select", [peep], dim=0, index=di) if peep is not None else None

        def gate(t: Entry, i: int) -> Entry:
            return c.add("slice", [t], dim=1, start=i * hidden, end=(i + 1) * hidden, step=1)

        def clipped(t: Entry) -> Entry:
            return c.add("clamp", [t], min=-float(clip), max=float(clip)) if clip is not None else t

        steps = range(seq) if dname == "forward" else range(seq - 1, -1, -1)
        outs = {}
        for t in steps:
            xt = c.add("select", [xw], dim=0, index=t)
            if kind == "RNN":
                h = _act(c, a[0], clipped(c.add("add", [xt, c.add("matmul", [h, rt])])))
            elif kind == "GRU":
                hr = c.add("matmul", [h, rt])
                z = _act(c, a[0], clipped(c.add("add", [gate(xt, 0), gate(hr, 0)])))
                rr = _act(c, a[0], clipped(c.add("add", [gate(xt, 1), gate(hr, 1)])))
                rh = c.add("slice", [rt], dim=1, start=2 * hidden, end=3 * hidden, step=1)
                if c.attr("linear_before_reset", 0):
                    rbh = c.add("slice", [rb], dim=0, start=2 * hidden, end=3 * hidden, step=1)
                    hh = c.add("mul", [rr, c.add("add", [gate(hr, 2), rbh])])
                else:
                    hh = c.add("matmul", [c.add("mul", [rr, h]), rh])
                n = _act(c, a[1], clipped(c.add("add", [gate(xt, 2), hh])))
                one = c.scalar(1.0, dt)
                h = c.add("add", [c.add("mul", [c.add("sub", [one, z]), n]), c.add("mul", [z, h])])
            else:
                g = c.add("add", [xt, c.add("matmul", [h, rt])])
                gi, go, gf, gc = (gate(g, i) for i in range(4))
                if pd is not None:
                    gi = c.add("add", [gi, c.add("mul", [gate(c.reshape(pd, [1, 3 * hidden]), 0), cell])])
                    gf = c.add("add", [gf, c.add("mul", [gate(c.reshape(pd, [1, 3 * hidden]), 2), cell])])
                i_ = _act(c, a[0], clipped(gi))
                f_ = _act(c, a[0], clipped(gf))
                cc = _act(c, a[1], clipped(gc))
                cell = c.add("add", [c.add("mul", [f_, cell]), c.add("mul", [i_, cc])])
                if pd is not None:
                    go = c.add("add", [go, c.add("mul", [gate(c.reshape(pd, [1, 3 * hidden]), 1), cell])])
                o_ = _act(c, a[0], clipped(go))
                h = c.add("mul", [o_, _act(c, a[2], cell)])
            outs[t] = h
        ys.append(c.add("cat", [c.add("unsqueeze", [outs[t]], dim=0) for t in range(seq)], dim=0)
                  if seq > 1 else c.add("unsqueeze", [outs[0]], dim=0))
        hs.append(h)
        cs.append(cell)

    def stack(vals: list[Entry], dim: int) -> Entry:
        us = [c.add("unsqueeze", [v], dim=dim) for v in vals]
        return us[0] if len(us) == 1 else c.add("cat", us, dim=dim)

    y = stack(ys, 1)  # (seq, dirs, batch, H)
    yh = stack(hs, 0)  # (dirs, batch, H)
    yc = stack(cs, 0)
    if layout:
        y = c.add("permute", [y], dims=[2, 0, 1, 3])
        yh = c.add("permute", [yh], dims=[1, 0, 2])
        yc = c.add("permute", [yc], dims=[1, 0, 2])
    return [y, yh, yc] if kind == "LSTM" else [y, yh]


# ------------------------------------------------------------------------------------------- DFT
@converter("DFT")
def _dft(c: NodeCtx) -> Entry:
    """A DFT along one axis as two matmuls with constant cosine and sine matrices."""
    x = c.input(0)
    _need_float(c, x)
    rank = c.rank(x)
    if c.opset >= 20:
        ax = c.ints(2, "axis")[0] if c.has(2) else -2
    else:
        ax = int(c.attr("axis", 1))
    ax = _axis(ax, rank - 1)
    inverse, onesided = bool(c.attr("inverse", 0)), bool(c.attr("onesided", 0))
    comp = c.shape(x)[-1]
    if comp not in (1, 2):
        raise BuildError(f"the last dimension must be 1 (real) or 2 (complex), got {comp}")
    n_in = c.shape(x)[ax]
    if inverse and onesided:
        return _irfft(c, x, ax, c.ints(1, "dft_length")[0] if c.has(1) and c.const(1, "dft_length").numel()
                      else 2 * (n_in - 1))
    n = c.ints(1, "dft_length")[0] if c.has(1) and c.const(1, "dft_length").numel() else n_in
    re = c.add("select", [x], dim=rank - 1, index=0)
    im = c.add("select", [x], dim=rank - 1, index=1) if comp == 2 else None
    if n != n_in:
        re = _pad_axis(c, re, ax, 0, n - n_in)
        im = _pad_axis(c, im, ax, 0, n - n_in) if im is not None else None
    k = n // 2 + 1 if onesided else n
    j = torch.arange(n, dtype=torch.float64).reshape(n, 1)
    kk = torch.arange(k, dtype=torch.float64).reshape(1, k)
    theta = 2 * math.pi * ((j * kk) % n) / n
    cos, sin = torch.cos(theta), torch.sin(theta)
    sgn = 1.0 if inverse else -1.0
    scale = 1.0 / n if inverse else 1.0
    dt = c.dtype(x)

    def mm(t: Entry, m: torch.Tensor) -> Entry:
        return _along_last(c, t, ax, lambda u, m=m: c.add("matmul", [u, (m * scale).to(dt)]))

    # X_k = sum_j (re + i im)(cos + i sgn sin)
    out_re = mm(re, cos)
    out_im = mm(re, sgn * sin)
    if im is not None:
        out_re = c.add("sub", [out_re, mm(im, sgn * sin)])
        out_im = c.add("add", [out_im, mm(im, cos)])
    return c.add("cat", [c.add("unsqueeze", [out_re], dim=rank - 1), c.add("unsqueeze", [out_im], dim=rank - 1)],
                 dim=rank - 1)



def _irfft(c: NodeCtx, x: Entry, ax: int, n: int) -> Entry:
    """Inverse of a one-sided DFT (numpy's irfft): the n//2 + 1 bins taken as a Hermitian spectrum, a real
    signal of length n ([..., n, 1]) by two matmuls with constant matrices."""
    rank = c.rank(x)
    k = n // 2 + 1
    re = c.add("select", [x], dim=rank - 1, index=0)
    im = c.add("select", [x], dim=rank - 1, index=1) if c.shape(x)[-1] == 2 else None
    have = c.shape(re)[ax]
    if have != k:
        re = _pad_axis(c, re, ax, 0, k - have)
        im = _pad_axis(c, im, ax, 0, k - have) if im is not None else None
    m = torch.arange(k, dtype=torch.float64).reshape(k, 1)
    theta = 2 * math.pi * ((m * torch.arange(n, dtype=torch.float64).reshape(1, n)) % n) / n
    mult = torch.full((k, 1), 2.0, dtype=torch.float64)
    mult[0] = 1.0
    if n % 2 == 0:
        mult[-1] = 1.0
    dt = c.dtype(x)
    cos, sin = (mult * torch.cos(theta) / n).to(dt), (mult * torch.sin(theta) / n).to(dt)
    y = _along_last(c, re, ax, lambda u: c.add("matmul", [u, cos]))
    if im is not None:
        y = c.add("sub", [y, _along_last(c, im, ax, lambda u: c.add("matmul", [u, sin]))])
    return c.add("unsqueeze", [y], dim=rank - 1)


@converter("STFT")
def _stft(c: NodeCtx) -> Entry:
    """Frames of the signal (one slice each), windowed, through a DFT as matmuls with constant cosine and
    sine matrices: [batch, frames, bins, 2]."""
    x = c.input(0)
    _need_float(c, x)
    b, length, comp = c.shape(x)
    step = c.ints(1, "frame_step")[0]
    window = c.input(2) if c.has(2) else None
    if window is not None:
        flen = c.shape(window)[0]
    elif c.has(3):
        flen = c.ints(3, "frame_length")[0]
    else:
        raise BuildError("STFT needs a window or a frame_length")
    onesided = bool(c.attr("onesided", 1))
    frames = 1 + (length - flen) // step
    dt = c.dtype(x)
    parts = [c.reshape(c.add("slice", [x], dim=1, start=f * step, end=f * step + flen, step=1), [b, 1, flen, comp])
             for f in range(frames)]
    fr = parts[0] if frames == 1 else c.add("cat", parts, dim=1)  # [b, frames, flen, comp]
    if window is not None:
        fr = c.add("mul", [fr, c.reshape(c.cast(window, dt), [1, 1, flen, 1])])
    k = flen // 2 + 1 if onesided else flen
    j = torch.arange(flen, dtype=torch.float64).reshape(flen, 1)
    theta = 2 * math.pi * ((j * torch.arange(k, dtype=torch.float64).reshape(1, k)) % flen) / flen
    cos, msin = torch.cos(theta).to(dt), (-torch.sin(theta)).to(dt)
    re = c.add("select", [fr], dim=3, index=0)
    out_re, out_im = c.add("matmul", [re, cos]), c.add("matmul", [re, msin])
    if comp == 2:
        im = c.add("select", [fr], dim=3, index=1)
        out_re = c.add("sub", [out_re, c.add("matmul", [im, msin])])
        out_im = c.add("add", [out_im, c.add("matmul", [im, cos])])
    return c.add("cat", [c.add("unsqueeze", [out_re], dim=3), c.add("unsqueeze", [out_im], dim=3)], dim=3)


@converter("Range")
def _range(c: NodeCtx) -> torch.Tensor:
    """Range of build-time scalars (TensorRT treats its inputs as shape tensors): a constant."""
    start, limit, delta = (c.const(i, n) for i, n in enumerate(("start", "limit", "delta")))
    dt = start.dtype
    n = max(math.ceil((limit.item() - start.item()) / delta.item()), 0)
    return (start + torch.arange(n, dtype=torch.float64 if dt.is_floating_point else torch.int64) * delta).to(dt)

# ------------------------------------------------------------------------------------------ GridSample
@converter("GridSample")
def _grid_sample(c: NodeCtx) -> Entry:
    """Bilinear/nearest sampling at run-time grid coordinates: per corner, a flat index and a weight from
    pointwise ops on the grid, a gather over the flattened spatial dims, and a weighted sum."""
    x, grid = c.input(0), c.input(1)
    _need_float(c, x)
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(c.attr("mode", "linear"), c.attr("mode", "linear"))
    pad = c.attr("padding_mode", "zeros")
    align = bool(c.attr("align_corners", 0))
    if mode not in ("linear", "nearest", "cubic"):
        raise Unsupported(f"mode={mode!r}")
    if mode == "cubic" and pad == "reflection":
        raise Unsupported("mode='bicubic' with padding_mode='reflection'")
    shape = list(c.shape(x))
    n, ch, dims = shape[0], shape[1], shape[2:]
    nsp = len(dims)
    out_sp = list(c.shape(grid)[1:-1])
    npts = math.prod(out_sp)
    g = c.cast(grid, c.dtype(x))
    zero, one = c.scalar(0.0, g), c.scalar(1.0, g)
    coords = []
    for i, d in enumerate(dims):
        v = c.add("select", [g], dim=nsp + 1, index=nsp - 1 - i)  # grid's last dim is (x, y, ...): reversed
        if align:
            v = c.add("mul", [c.add("add", [v, one]), c.scalar((d - 1) / 2.0, g)])
            lo, hi = 0.0, d - 1.0
        else:
            v = c.add("mul", [c.add("sub", [c.add("mul", [c.add("add", [v, one]), c.scalar(float(d), g)]), one]),
                              c.scalar(0.5, g)])
            lo, hi = -0.5, d - 0.5
        if mode == "nearest":
            v = _round_even(c, v)
        outside = c.add("logical_or", [c.add("lt", [v, c.scalar(lo, g)]), c.add("gt", [v, c.scalar(hi, g)])])
        if pad == "border":
            v = c.add("where", [outside, c.add("clamp", [v], min=0.0, max=float(d - 1)), v])
        elif pad == "reflection":
            rng = hi - lo
            t = c.add("div", [c.add("sub", [v, c.scalar(lo, g)]), c.scalar(rng, g)])
            fl = c.add("floor", [t])
            fr = c.add("sub", [t, fl])
            half = c.add("mul", [fl, c.scalar(0.5, g)])
            even = c.add("eq", [c.add("floor", [half]), half])
            refl = c.add("where", [even, c.add("add", [c.scalar(lo, g), c.add("mul", [fr, c.scalar(rng, g)])]),
                                   c.add("sub", [c.scalar(hi, g), c.add("mul", [fr, c.scalar(rng, g)])])])
            v = c.add("where", [outside, refl, v])
        elif pad != "zeros":
            raise Unsupported(f"padding_mode={pad!r}")
        coords.append(v)
    strides = [math.prod(dims[i + 1:]) for i in range(nsp)]
    data = c.reshape(x, [n, ch, math.prod(dims)])
    if mode == "nearest":
        taps = [[(c.add("where", [c.add("lt", [v, zero]), c.add("ceil", [v]), c.add("floor", [v])]), None)]
                for v in coords]  # truncation toward zero, as the reference's astype(int)
    elif mode == "cubic":  # 4 taps per axis, cubic convolution weights with A = -0.75 (as the reference)
        a = -0.75
        taps = []
        for v in coords:
            f0 = c.add("floor", [v])
            t = c.add("sub", [v, f0])

            def poly(u: Entry, coeffs: Sequence[float]) -> Entry:
                acc = c.scalar(coeffs[0], g)
                for k in coeffs[1:]:
                    acc = c.add("add", [c.add("mul", [acc, u]), c.scalar(k, g)])
                return acc

            t1, u = c.add("add", [t, one]), c.add("sub", [one, t])
            w_m1 = poly(t1, [a, -5 * a, 8 * a, -4 * a])  # ((A(t+1) - 5A)(t+1) + 8A)(t+1) - 4A
            w_0 = poly(t, [a + 2, -(a + 3), 0.0, 1.0])  # ((A+2)t - (A+3)) t^2 + 1
            w_1 = poly(u, [a + 2, -(a + 3), 0.0, 1.0])
            w_2 = c.add("sub", [c.add("sub", [c.add("sub", [one, w_m1]), w_0]), w_1])
            taps.append([(c.add("add", [f0, c.scalar(float(k), g)]), w) for k, w in
                         zip((-1, 0, 1, 2), (w_m1, w_0, w_1, w_2))])
    else:
        taps = []
        for v in coords:
            f0 = c.add("floor", [v])
            w1 = c.add("sub", [v, f0])
            taps.append([(f0, c.add("sub", [one, w1])), (c.add("add", [f0, one]), w1)])
    out = None
    for combo in itertools.product(*taps):
        flat, weight, valid = None, None, None
        for (pos, w), d, st in zip(combo, dims, strides):
            ok = c.add("logical_and", [c.add("ge", [pos, zero]), c.add("le", [pos, c.scalar(float(d - 1), g)])])
            valid = ok if valid is None else c.add("logical_and", [valid, ok])
            idx = c.cast(c.add("clamp", [pos], min=0.0, max=float(d - 1)), torch.int64)
            term = c.add("mul", [idx, torch.tensor(st, dtype=torch.int64)]) if st != 1 else idx
            flat = term if flat is None else c.add("add", [flat, term])
            if w is not None:
                weight = w if weight is None else c.add("mul", [weight, w])
        if pad == "zeros":
            vf = c.cast(valid, c.dtype(x))
            weight = vf if weight is None else c.add("mul", [weight, vf])
        idx = c.add("expand", [c.reshape(flat, [n, 1, npts])], shape=[n, ch, npts])
        vals = c.add("gather", [data, idx], dim=2)
        if weight is not None:
            vals = c.add("mul", [vals, c.reshape(weight, [n, 1, npts])])
        out = vals if out is None else c.add("add", [out, vals])
    return c.reshape(out, [n, ch] + out_sp)


# ------------------------------------------------------------------------------------ scatter, top-k
BROADCAST_SELECT_MAX = 1 << 22  # elements of the one-hot comparison a scatter or top-k builds, at most


def _lowest(dt: torch.dtype) -> float | int:
    return float("-inf") if dt.is_floating_point else (torch.iinfo(dt).min if dt != torch.bool else 0)


def _highest(dt: torch.dtype) -> float | int:
    return float("inf") if dt.is_floating_point else (torch.iinfo(dt).max if dt != torch.bool else 1)


def _scatter_reduce(c: NodeCtx, data: Entry, onehot: Entry, upd: Entry, reduction: str) -> Entry:
    """data [P, R] with the updates upd [Q, 1, R] of every q where onehot [Q, P, R or 1] holds, combined by
    ``reduction`` (none: the update replaces the value; add, mul, max, min: combined with it)."""
    if math.prod(c.shape(onehot)[:2]) * c.shape(upd)[-1] > BROADCAST_SELECT_MAX:
        raise Unsupported(f"a scatter this large (more than {BROADCAST_SELECT_MAX} index/position pairs)")
    dt = c.dtype(data)
    hit = c.add("ne", [c.add("amax", [c.cast(onehot, torch.int32)], dims=[0], keepdim=False), _i32(0)])
    if reduction in ("none", "add"):
        val = c.add("sum", [c.add("where", [onehot, upd, c.scalar(0, dt)])], dims=[0], keepdim=False)
        val = c.cast(val, dt)
        return c.add("where", [hit, val, data]) if reduction == "none" else c.add("add", [data, val])
    if reduction == "mul":
        return c.add("mul", [data, _reduce_prod(c, c.add("where", [onehot, upd, c.scalar(1, dt)]), [0], False)])
    if reduction in ("max", "min"):
        fill = _lowest(dt) if reduction == "max" else _highest(dt)
        red = c.add("amax" if reduction == "max" else "amin", [c.add("where", [onehot, upd, c.scalar(fill, dt)])],
                    dims=[0], keepdim=False)
        comb = c.add("maximum" if reduction == "max" else "minimum", [data, red])
        return c.add("where", [hit, comb, data])
    raise Unsupported(f"reduction={reduction!r}")


def _normalized_index(c: NodeCtx, idx: Entry, n: int) -> Entry:
    idx = c.cast(idx, torch.int64)
    zero = torch.tensor(0, dtype=torch.int64)
    return c.add("where", [c.add("lt", [idx, zero]), c.add("add", [idx, torch.tensor(n, dtype=torch.int64)]), idx])


@converter("ScatterElements", "Scatter")
def _scatter_elements(c: NodeCtx) -> Entry:
    data, idx, upd = c.input(0), c.input(1), c.input(2)
    shape, ishape = list(c.shape(data)), list(c.shape(idx))
    rank = len(shape)
    ax = _axis(c.attr("axis", 0), rank)
    n = shape[ax]
    idx = _normalized_index(c, idx, n)
    for j in range(rank):  # indices shorter than data off the axis: pad with a position that never matches
        if j != ax and ishape[j] < shape[j]:
            idx = _pad_axis(c, idx, j, 0, shape[j] - ishape[j], fill=n)
            upd = _pad_axis(c, upd, j, 0, shape[j] - ishape[j], fill=0)
    q = c.shape(idx)[ax]
    perm = [ax] + [d for d in range(rank) if d != ax]
    inv = [perm.index(d) for d in range(rank)]
    rest = math.prod(shape) // n
    d2 = c.reshape(c.add("permute", [data], dims=perm), [n, rest])
    i3 = c.reshape(c.add("permute", [idx], dims=perm), [q, 1, rest])
    u3 = c.reshape(c.add("permute", [upd], dims=perm), [q, 1, rest])
    onehot = c.add("eq", [i3, torch.arange(n, dtype=torch.int64).reshape(1, n, 1)])
    out = _scatter_reduce(c, d2, onehot, u3, c.attr("reduction", "none"))
    return c.add("permute", [c.reshape(out, [n] + [shape[d] for d in perm[1:]])], dims=inv)


@converter("ScatterND")
def _scatter_nd(c: NodeCtx) -> Entry:
    data, idx, upd = c.input(0), c.input(1), c.input(2)
    shape, ishape = list(c.shape(data)), list(c.shape(idx))
    k = ishape[-1]
    p = math.prod(shape[:k])
    rest = math.prod(shape[k:])
    nq = math.prod(ishape[:-1])
    strides = [math.prod(shape[j + 1:k]) for j in range(k)]
    idx2 = c.reshape(c.cast(idx, torch.int64), [nq, k])
    lin = None
    for j in range(k):
        col = _normalized_index(c, c.add("select", [idx2], dim=1, index=j), shape[j])
        term = c.add("mul", [col, torch.tensor(strides[j], dtype=torch.int64)]) if strides[j] != 1 else col
        lin = term if lin is None else c.add("add", [lin, term])
    onehot = c.add("eq", [c.reshape(lin, [nq, 1, 1]), torch.arange(p, dtype=torch.int64).reshape(1, p, 1)])
    out = _scatter_reduce(c, c.reshape(data, [p, rest]), onehot, c.reshape(upd, [nq, 1, rest]),
                          c.attr("reduction", "none"))
    return c.reshape(out, shape)


@converter("MaxUnpool")
def _maxunpool(c: NodeCtx) -> Entry:
    """Zeros with each value of X at its flat index from I (a scatter)."""
    x, i = c.input(0), c.input(1)
    shape = list(c.shape(x))
    nsp = len(shape) - 2
    k = list(c.attr("kernel_shape"))
    s = list(c.attr("strides") or [1] * nsp)
    pads = list(c.attr("pads") or [0] * (2 * nsp))
    out = shape[:2] + [(shape[2 + j] - 1) * s[j] + k[j] - pads[j] - pads[nsp + j] for j in range(nsp)]
    p, nq = math.prod(out), math.prod(shape)
    onehot = c.add("eq", [c.reshape(c.cast(i, torch.int64), [nq, 1, 1]),
                          torch.arange(p, dtype=torch.int64).reshape(1, p, 1)])
    zeros = torch.zeros([p, 1], dtype=c.dtype(x))
    y = c.reshape(_scatter_reduce(c, zeros, onehot, c.reshape(x, [nq, 1, 1]), "none"), out)
    if c.has(2):  # a larger output_shape: the unpooled values at the start of each axis, zeros after
        want = c.ints(2, "output_shape")
        for j in range(2, len(out)):
            y = _pad_axis(c, y, j, 0, want[j] - out[j])
    return y


DET_MAX_N = 5  # Det by the Leibniz formula: n! products of n entries


@converter("Det")
def _det(c: NodeCtx) -> Entry:
    x = c.input(0)
    _need_float(c, x)
    shape = list(c.shape(x))
    n = shape[-1]
    if len(shape) < 2 or shape[-2] != n:
        raise BuildError(f"Det needs square matrices in the last two dims, got shape {shape}")
    if n > DET_MAX_N:
        raise Unsupported(f"Det of {n}x{n} matrices (the Leibniz expansion goes up to {DET_MAX_N}x{DET_MAX_N})")
    r = len(shape)
    entry = {(i, j): c.add("select", [c.add("select", [x], dim=r - 2, index=i)], dim=r - 2, index=j)
             for i in range(n) for j in range(n)}
    total = None
    for perm in itertools.permutations(range(n)):
        inversions = sum(1 for a in range(n) for b in range(a + 1, n) if perm[a] > perm[b])
        term = entry[(0, perm[0])]
        for i in range(1, n):
            term = c.add("mul", [term, entry[(i, perm[i])]])
        if total is None:
            total = term if inversions % 2 == 0 else c.add("neg", [term])
        else:
            total = c.add("sub" if inversions % 2 else "add", [total, term])
    return total


@converter("TensorScatter")
def _tensor_scatter(c: NodeCtx) -> Entry:
    """past_cache with ``update`` written along ``axis`` at write_indices[b] (+ i, wrapping in circular
    mode) for each batch row b."""
    past, upd = c.input(0), c.input(1)
    shape, ushape = list(c.shape(past)), list(c.shape(upd))
    rank = len(shape)
    ax = _axis(c.attr("axis", -2), rank)
    if ax == 0:
        raise BuildError("TensorScatter axis must not be the batch axis 0")
    mode = c.attr("mode", "linear")
    if mode not in ("linear", "circular"):
        raise Unsupported(f"mode={mode!r}")
    b, s, u = shape[0], shape[ax], ushape[ax]
    wi = c.cast(c.input(2), torch.int64) if c.has(2) else torch.zeros(b, dtype=torch.int64)
    pos = c.add("add", [c.reshape(wi, [b, 1]), torch.arange(u, dtype=torch.int64).reshape(1, u)])  # [b, u]
    if mode == "circular":
        pos = c.add("sub", [pos, c.add("mul", [c.add("floor", [c.add("div", [
            c.cast(pos, torch.float64), torch.tensor(float(s), dtype=torch.float64)])]), torch.tensor(float(s), dtype=torch.float64)])])
        pos = c.cast(pos, torch.int64)
    # move axis next to the batch axis: [b, s, rest] and [b, u, rest]
    perm = [0, ax] + [d for d in range(1, rank) if d != ax]
    inv = [perm.index(d) for d in range(rank)]
    rest = math.prod(shape) // (b * s)
    p3 = c.reshape(c.add("permute", [past], dims=perm), [b, s, rest])
    u4 = c.reshape(c.add("permute", [upd], dims=perm), [b, u, 1, rest])
    onehot = c.add("eq", [c.reshape(pos, [b, u, 1, 1]), torch.arange(s, dtype=torch.int64).reshape(1, 1, s, 1)])
    hit = c.add("ne", [c.add("amax", [c.cast(onehot, torch.int32)], dims=[1], keepdim=False), _i32(0)])
    val = c.add("sum", [c.add("where", [onehot, u4, c.scalar(0, c.dtype(past))])], dims=[1], keepdim=False)
    out = c.add("where", [hit, c.cast(val, c.dtype(past)), p3])
    return c.add("permute", [c.reshape(out, [shape[d] for d in perm])], dims=inv)


@converter("TopK")
def _topk(c: NodeCtx) -> list[Entry]:
    """Values and indices of the k largest (smallest) along ``axis``, ties to the lower index: each
    element's rank is counted by comparing it with every other one along the axis."""
    x = c.input(0)
    k = c.ints(1, "K")[0] if c.has(1) else int(c.attr("k"))
    shape = list(c.shape(x))
    ax = _axis(c.attr("axis", -1), len(shape))
    n = shape[ax]
    if not 0 <= k <= n:
        raise BuildError(f"k={k} for an axis of size {n}")
    if k == 0:
        raise Unsupported("k=0 (empty outputs)")
    if math.prod(shape) * n > BROADCAST_SELECT_MAX:
        raise Unsupported(f"TopK over an axis of {n} for {math.prod(shape)} elements (the rank count compares "
                          f"every pair, at most {BROADCAST_SELECT_MAX})")
    largest = bool(c.attr("largest", 1))
    dt = c.dtype(x)

    def top(xl: Entry) -> tuple[Entry, Entry]:
        lead = list(c.shape(xl))[:-1]
        xi = c.reshape(xl, lead + [n, 1])
        xj = c.reshape(xl, lead + [1, n])
        beats = c.add("gt" if largest else "lt", [xj, xi])
        j_first = torch.arange(n).reshape(1, n) < torch.arange(n).reshape(n, 1)  # j < i
        ties = c.add("logical_and", [c.add("eq", [xj, xi]), j_first])
        rank = c.add("sum", [c.cast(c.add("logical_or", [beats, ties]), torch.int64)], dims=[len(lead) + 1],
                     keepdim=True)  # [..., n, 1]
        sel = c.add("eq", [rank, torch.arange(k, dtype=torch.int64).reshape(1, k)])  # [..., n, k]
        vals = c.add("sum", [c.add("where", [sel, xi, c.scalar(0, dt)])], dims=[len(lead)], keepdim=False)
        pos = torch.arange(n, dtype=torch.int64).reshape(n, 1)
        idx = c.add("sum", [c.add("where", [sel, pos, torch.tensor(0, dtype=torch.int64)])], dims=[len(lead)],
                    keepdim=False)
        return c.cast(vals, dt), idx

    rank = len(shape)
    if ax == rank - 1:
        return list(top(x))
    perm = [d for d in range(rank) if d != ax] + [ax]
    inv = [perm.index(d) for d in range(rank)]
    return [c.add("permute", [y], dims=inv) for y in top(c.add("permute", [x], dims=perm))]


# ------------------------------------------------------------------ ai.onnx.preview.training optimizers
DOMAIN_CONVERTERS: dict[str, Converter] = {}  # "domain::OpType" -> converter, for ops outside the default domain
_TRAINING = "ai.onnx.preview.training"


_domain_converter = _registrar(DOMAIN_CONVERTERS)


def _optimizer_groups(c: NodeCtx, groups: int) -> tuple[Entry, float, list[list[Entry]]]:
    """R (run-time scalar), T (its build-time value: a shape tensor) and the per-tensor input groups."""
    n = (c.n_in() - 2) // groups
    if n < 1 or c.n_in() != 2 + groups * n:
        raise BuildError(f"expects R, T and {groups} groups of tensors, got {c.n_in()} inputs")
    t = float(c.const(1, "T (the iteration count)").reshape(-1)[0])
    return c.input(0), t, [[c.input(2 + g * n + i) for g in range(groups)] for i in range(n)]


def _fscalar(c: NodeCtx, v: float, like: Entry) -> torch.Tensor:
    return c.scalar(float(v), like)


@_domain_converter(f"{_TRAINING}::Adagrad")
def _adagrad(c: NodeCtx) -> list[Entry]:
    r, t, groups = _optimizer_groups(c, 3)
    decay, eps, norm = (float(c.attr(k, d)) for k, d in (("decay_factor", 0.0), ("epsilon", 0.0),
                                                         ("norm_coefficient", 0.0)))
    xs, hs = [], []
    for x, g, h in groups:
        rr = c.add("div", [c.cast(r, c.dtype(x)), _fscalar(c, 1.0 + t * decay, x)])
        gr = c.add("add", [c.add("mul", [x, _fscalar(c, norm, x)]), g])
        hn = c.add("add", [h, c.add("mul", [gr, gr])])
        hs_ = c.add("add", [c.add("sqrt", [hn]), _fscalar(c, eps, x)])
        xs.append(c.add("sub", [x, c.add("div", [c.add("mul", [rr, gr]), hs_])]))
        hs.append(hn)
    return xs + hs


@_domain_converter(f"{_TRAINING}::Momentum")
def _momentum(c: NodeCtx) -> list[Entry]:
    r, t, groups = _optimizer_groups(c, 3)
    alpha, beta, norm = (float(c.attr(k, 0.0)) for k in ("alpha", "beta", "norm_coefficient"))
    mode = c.attr("mode", "standard")
    if mode not in ("standard", "nesterov"):
        raise Unsupported(f"mode={mode!r}")
    xs, vs = [], []
    for x, g, v in groups:
        rr = c.cast(r, c.dtype(x))
        gr = c.add("add", [c.add("mul", [x, _fscalar(c, norm, x)]), g])
        vn = c.add("add", [c.add("mul", [v, _fscalar(c, alpha, x)]),
                           c.add("mul", [gr, _fscalar(c, beta if t > 0 else 1.0, x)])])
        step = vn if mode == "standard" else c.add("add", [gr, c.add("mul", [vn, _fscalar(c, alpha, x)])])
        xs.append(c.add("sub", [x, c.add("mul", [rr, step])]))
        vs.append(vn)
    return xs + vs


@_domain_converter(f"{_TRAINING}::Adam")
def _adam(c: NodeCtx) -> list[Entry]:
    r, t, groups = _optimizer_groups(c, 4)
    alpha, beta = float(c.attr("alpha", 0.9)), float(c.attr("beta", 0.999))
    eps, norm = float(c.attr("epsilon", 1e-6)), float(c.attr("norm_coefficient", 0.0))
    post = float(c.attr("norm_coefficient_post", 0.0))
    adj = math.sqrt(1 - beta ** t) / (1 - alpha ** t) if t > 0 else 1.0
    xs, vs, hs = [], [], []
    for x, g, v, h in groups:
        rr = c.add("mul", [c.cast(r, c.dtype(x)), _fscalar(c, adj, x)])
        gr = c.add("add", [c.add("mul", [x, _fscalar(c, norm, x)]), g])
        vn = c.add("add", [c.add("mul", [v, _fscalar(c, alpha, x)]), c.add("mul", [gr, _fscalar(c, 1 - alpha, x)])])
        hn = c.add("add", [c.add("mul", [h, _fscalar(c, beta, x)]),
                           c.add("mul", [c.add("mul", [gr, gr]), _fscalar(c, 1 - beta, x)])])
        hsq = c.add("add", [c.add("sqrt", [hn]), _fscalar(c, eps, x)])
        xn = c.add("sub", [x, c.add("mul", [rr, c.add("div", [vn, hsq])])])
        xs.append(c.add("mul", [xn, _fscalar(c, 1 - post, x)]) if post else xn)
        vs.append(vn)
        hs.append(hn)
    return xs + vs + hs


# ------------------------------------------------------------------------------------------- ai.onnx.ml
@_domain_converter("ai.onnx.ml::Binarizer")
def _binarizer(c: NodeCtx) -> Entry:
    x = c.input(0)
    t = float(c.attr("threshold", 0.0))
    return c.cast(c.add("gt", [x, c.scalar(t, x)]), c.dtype(x))


@_domain_converter("ai.onnx.ml::ArrayFeatureExtractor")
def _array_feature_extractor(c: NodeCtx) -> Entry:
    """X[..., indices] with the indices flattened; a 1-D X gives [1, k]."""
    x, i = c.input(0), c.input(1)
    shape = list(c.shape(x))
    k = math.prod(c.shape(i))
    flat = c.reshape(c.cast(i, torch.int64), [k])
    y = c.add("index_select", [x, flat], dim=len(shape) - 1)
    return c.reshape(y, [1, k] if len(shape) == 1 else shape[:-1] + [k])


# -------------------------------------------------------------------------------------------- sequences
class Seq(list):
    """An ONNX sequence inside the graph: a build-time list of tensor entries (positions must be known at
    build time; graph inputs and outputs stay tensors)."""


SEQUENCE_OPS = ("SequenceEmpty", "SequenceConstruct", "SequenceInsert", "SequenceAt", "SequenceErase",
                "SequenceLength", "ConcatFromSequence", "SplitToSequence", "SequenceMap", "Identity", "Loop", "If",
                "Optional", "OptionalGetElement", "OptionalHasElement")


def _seq(c: NodeCtx, i: int) -> Seq:
    s = c.input(i)
    if not isinstance(s, Seq):
        raise BuildError(f"input {i} is a tensor, the op takes a sequence")
    return s


def _seq_pos(c: NodeCtx, i: int, n: int, default: int, insert: bool = False) -> int:
    p = c.ints(i, "position")[0] if c.has(i) else default
    lo, hi = -n, n if insert else n - 1
    if not lo <= p <= hi:
        raise BuildError(f"position {p} is out of range for a sequence of {n}")
    return p + n if p < 0 else p


OPTIONAL_OPS = ("Optional", "OptionalGetElement", "OptionalHasElement", "Identity", "If", "Loop")


@converter("Optional")
def _optional(c: NodeCtx) -> list[Entry]:
    """An optional is its value, or None when empty."""
    return [c.input(0) if c.has(0) else None]


@converter("OptionalHasElement")
def _optional_has_element(c: NodeCtx) -> Entry:
    return torch.tensor(c.has(0))


@converter("OptionalGetElement")
def _optional_get_element(c: NodeCtx) -> list[Entry]:
    if not c.has(0):
        raise BuildError("the optional input is empty")
    return [c.input(0)]


@converter("SequenceMap")
def _sequence_map(c: NodeCtx) -> list[Entry]:
    """The body applied to each position of the sequence inputs (tensor inputs passed to every call),
    unrolled; each body output makes one output sequence."""
    body = c.attr("body")
    ins = [c.input(i) for i in range(c.n_in())]
    n = len(_seq(c, 0))
    if any(isinstance(x, Seq) and len(x) != n for x in ins):
        raise BuildError("the sequence inputs have different lengths")
    outs = [Seq() for _ in body.output]
    for i in range(n):
        res = _run_body(c, body, [x[i] if isinstance(x, Seq) else x for x in ins], f"{c.name}::at{i}::")
        for o, r in zip(outs, res):
            o.append(r)
    return outs


@converter("SequenceEmpty")
def _sequence_empty(c: NodeCtx) -> list[Entry]:
    return [Seq()]


@converter("SequenceConstruct")
def _sequence_construct(c: NodeCtx) -> list[Entry]:
    return [Seq(c.input(i) for i in range(c.n_in()))]


@converter("SequenceInsert")
def _sequence_insert(c: NodeCtx) -> list[Entry]:
    s = _seq(c, 0)
    out = Seq(s)
    out.insert(_seq_pos(c, 2, len(s), len(s), insert=True), c.input(1))
    return [out]


@converter("SequenceErase")
def _sequence_erase(c: NodeCtx) -> list[Entry]:
    s = _seq(c, 0)
    out = Seq(s)
    del out[_seq_pos(c, 1, len(s), len(s) - 1)]
    return [out]


@converter("SequenceAt")
def _sequence_at(c: NodeCtx) -> Entry:
    s = _seq(c, 0)
    return s[_seq_pos(c, 1, len(s), 0)]


@converter("SequenceLength")
def _sequence_length(c: NodeCtx) -> Entry:
    return torch.tensor(len(_seq(c, 0)), dtype=torch.int64)


@converter("ConcatFromSequence")
def _concat_from_sequence(c: NodeCtx) -> Entry:
    s = _seq(c, 0)
    if not s:
        raise BuildError("ConcatFromSequence of an empty sequence")
    rank = c.rank(s[0])
    if c.attr("new_axis", 0):
        ax = _axis(c.attr("axis"), rank + 1)
        parts = [c.add("unsqueeze", [x], dim=ax) for x in s]
    else:
        ax = _axis(c.attr("axis"), rank)
        parts = list(s)
    return parts[0] if len(parts) == 1 and isinstance(parts[0], torch.Tensor) else c.add("cat", parts, dim=ax)


@converter("SplitToSequence")
def _split_to_sequence(c: NodeCtx) -> list[Entry]:
    x = c.input(0)
    shape = c.shape(x)
    ax = _axis(c.attr("axis", 0), len(shape))
    n = shape[ax]
    keep = bool(c.attr("keepdims", 1))
    if c.has(1):
        split = c.const(1, "split")
        if split.dim() == 0:
            step = int(split)
            sizes = [min(step, n - s) for s in range(0, n, step)]
        else:
            sizes = [int(v) for v in split.tolist()]
        keep = True
    else:
        sizes = [1] * n
    out, start = Seq(), 0
    for sz in sizes:
        part = c.add("slice", [x], dim=ax, start=start, end=start + sz, step=1)
        out.append(part if keep else c.add("squeeze", [part], dims=[ax]))
        start += sz
    return [out]


# ------------------------------------------------------------------------------ narrow element types
# FLOAT8 (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ), FLOAT4E2M1, INT4, UINT4, INT2, UINT2: torch has no kernels for
# them, so a value of such a type lives in the IR in a storage dtype (the float codes' bits as uint8, the
# integer values as int8/uint8) and the importer remembers its ONNX type by value name. Only Cast, CastLike,
# QuantizeLinear, DequantizeLinear and Identity take or make them; decoding is a gather from the table of
# the type's values, encoding rounds to nearest-even on the fp32 bits (all table ops).
class NarrowType:
    """One narrow ONNX element type: how it is stored and, for float codes, its format."""

    def __init__(self, onnx_type: int, np_name: str, storage: torch.dtype, bits: int, exp: int = 0,
                 man: int = 0, bias: int = 0, has_inf: bool = False, nan: int | None = None,
                 neg_zero: bool = True) -> None:
        self.onnx_type, self.np_name, self.storage, self.bits = onnx_type, np_name, storage, bits
        self.exp, self.man, self.bias, self.has_inf, self.nan, self.neg_zero = exp, man, bias, has_inf, nan, neg_zero
        self.is_float = exp > 0
        self.name = onnx_type_name(onnx_type)

    @property
    def np_dtype(self) -> np.dtype:
        import ml_dtypes  # onnx depends on it

        return np.dtype(getattr(ml_dtypes, self.np_name))

    def values(self) -> torch.Tensor:
        """fp32 value of every code (float formats)."""
        codes = np.arange(1 << self.bits, dtype=np.uint8)
        return torch.from_numpy(codes.view(self.np_dtype).astype(np.float32))

    @property
    def max(self) -> float:
        v = self.values()
        return float(v[torch.isfinite(v)].max())

    def int_range(self) -> tuple[int, int]:
        return (-(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1) if self.storage == torch.int8 else \
            (0, (1 << self.bits) - 1)

    def to_storage(self, arr: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(arr)
        if self.is_float:
            return torch.from_numpy(a.view(np.uint8).copy())
        return torch.from_numpy(a.astype(np.int8 if self.storage == torch.int8 else np.uint8))

    def from_storage(self, t: torch.Tensor) -> np.ndarray:
        a = t.detach().cpu().numpy()
        return a.view(self.np_dtype) if self.is_float else a.astype(self.np_dtype)


_T = TensorProto
NARROW: dict[int, NarrowType] = {t.onnx_type: t for t in (
    NarrowType(_T.FLOAT8E4M3FN, "float8_e4m3fn", torch.uint8, 8, 4, 3, 7, nan=0x7F),
    NarrowType(_T.FLOAT8E4M3FNUZ, "float8_e4m3fnuz", torch.uint8, 8, 4, 3, 8, nan=0x80, neg_zero=False),
    NarrowType(_T.FLOAT8E5M2, "float8_e5m2", torch.uint8, 8, 5, 2, 15, has_inf=True, nan=0x7E),
    NarrowType(_T.FLOAT8E5M2FNUZ, "float8_e5m2fnuz", torch.uint8, 8, 5, 2, 16, nan=0x80, neg_zero=False),
    NarrowType(_T.FLOAT4E2M1, "float4_e2m1fn", torch.uint8, 4, 2, 1, 1, nan=None),
    NarrowType(_T.FLOAT8E8M0, "float8_e8m0fnu", torch.uint8, 8, 8, 0, 127, nan=0xFF, neg_zero=False),
    NarrowType(_T.INT4, "int4", torch.int8, 4), NarrowType(_T.UINT4, "uint4", torch.uint8, 4),
    NarrowType(_T.INT2, "int2", torch.int8, 2), NarrowType(_T.UINT2, "uint2", torch.uint8, 2),
)}
NARROW_BY_NP = {t.np_name: t for t in NARROW.values()}
NARROW_OPS = ("Cast", "CastLike", "QuantizeLinear", "DequantizeLinear", "Identity")


def narrow_of(c: NodeCtx, i: int) -> NarrowType | None:
    """The narrow type of input ``i`` of the node, if it has one."""
    if i >= len(c.node.input) or not c.node.input[i]:
        return None
    t = c.imp.narrow.get(c.node.input[i])
    return NARROW[t] if t is not None else None


def _set_narrow(c: NodeCtx, t: NarrowType) -> None:
    c.imp.narrow[c.node.output[0]] = t.onnx_type


def narrow_decode(c: NodeCtx, x: Entry, t: NarrowType) -> Entry:
    """fp32 values (float codes: a gather from the value table) or the stored integers (int types)."""
    if not t.is_float:
        return x
    shape = list(c.shape(x))
    idx = c.reshape(c.cast(x, torch.int64), [math.prod(shape)])
    return c.reshape(c.add("index_select", [t.values(), idx], dim=0), shape)


def _i32(v: int) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.int32)


def _f32(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


def _pow2(c: NodeCtx, e: Entry) -> Entry:
    """2**e as fp32 for int32 exponents in [-126, 127], built from the exponent bits (exact)."""
    return c.add("bitcast", [c.add("bitwise_left_shift", [c.add("add", [e, _i32(127)]), _i32(23)])],
                 dtype="float32")


def narrow_encode_float(c: NodeCtx, x: Entry, t: NarrowType, saturate: bool) -> Entry:
    """ONNX Cast of floats to float code ``t``: round to nearest even; out of range -> max (saturate),
    else inf or NaN as the format has them; NaN -> NaN (FLOAT4E2M1: no NaN or inf, always saturates)."""
    x = c.cast(x, torch.float32)
    bits = c.add("bitcast", [x], dtype="int32")
    neg = c.add("lt", [bits, _i32(0)])
    a = c.add("abs", [x])
    emin = 1 - t.bias
    ex = c.add("sub", [c.add("bitwise_and", [c.add("bitwise_right_shift", [bits, _i32(23)]), _i32(255)]), _i32(127)])
    quantum = _pow2(c, c.add("sub", [c.add("maximum", [ex, _i32(emin)]), _i32(t.man)]))
    y = c.add("mul", [_round_even(c, c.add("div", [a, quantum])), quantum])
    mx = t.max
    finite = c.add("le", [y, _f32(mx)])  # false for NaN and for what rounds past the largest value
    y = c.add("where", [finite, y, _f32(0.0)])
    ybits = c.add("bitcast", [y], dtype="int32")
    ey = c.add("sub", [c.add("bitwise_and", [c.add("bitwise_right_shift", [ybits, _i32(23)]), _i32(255)]),
                       _i32(127)])
    normal = c.add("bitwise_or", [
        c.add("bitwise_left_shift", [c.add("add", [ey, _i32(t.bias)]), _i32(t.man)]),
        c.add("bitwise_and", [c.add("bitwise_right_shift", [ybits, _i32(23 - t.man)]), _i32((1 << t.man) - 1)])])
    sub = c.cast(c.add("mul", [y, _f32(2.0 ** (t.man - emin))]), torch.int32)
    code = c.add("where", [c.add("ge", [y, _f32(2.0 ** emin)]), normal, sub])
    sign = 1 << (t.bits - 1)
    top = int(np.flatnonzero(t.values().numpy() == mx)[0])
    over = top if saturate or t.nan is None else (0x7C if t.has_inf else t.nan)
    code = c.add("where", [finite, code, _i32(over)])
    signed = c.add("logical_and", [neg, c.add("ne", [code, _i32(0)])]) if not t.neg_zero else neg
    if t.nan is not None and not t.neg_zero:
        signed = c.add("logical_and", [signed, c.add("ne", [code, _i32(t.nan)])])
    code = c.add("where", [signed, c.add("bitwise_or", [code, _i32(sign)]), code])
    isnan = c.add("ne", [x, x])
    code = c.add("where", [isnan, _i32(t.nan if t.nan is not None else sign), code])
    return c.cast(code, torch.uint8)


def narrow_encode_e8m0(c: NodeCtx, x: Entry, saturate: bool, mode: str) -> Entry:
    """ONNX Cast to FLOAT8E8M0 (a power of two, the fp32 exponent byte), rounding ``mode`` up, down or
    nearest on the fp32 mantissa as onnx's reference does; NaN and inf -> 0xFF."""
    bits = c.add("bitcast", [c.cast(x, torch.float32)], dtype="int32")
    e = c.add("bitwise_and", [c.add("bitwise_right_shift", [bits, _i32(23)]), _i32(255)])
    special = c.add("eq", [e, _i32(255)])

    def nonzero(mask: int) -> Entry:
        return c.add("ne", [c.add("bitwise_and", [bits, _i32(mask)]), _i32(0)])

    if mode == "up":
        inc = nonzero(0x7FFFFF)
    elif mode == "nearest":
        lsb = c.add("gt", [e, _i32(0)])
        inc = c.add("logical_and", [nonzero(0x400000), c.add("logical_or", [
            c.add("logical_or", [nonzero(0x200000), nonzero(0x1FFFFF)]), lsb])])
    elif mode == "down":
        inc = None
    else:
        raise Unsupported(f"round_mode={mode!r}")
    if inc is not None:
        if saturate:
            inc = c.add("logical_and", [inc, c.add("ne", [e, _i32(254)])])
        e = c.add("add", [e, c.cast(inc, torch.int32)])
    return c.cast(c.add("where", [special, _i32(255), e]), torch.uint8)


def narrow_encode_int(c: NodeCtx, x: Entry, t: NarrowType) -> Entry:
    """ONNX Cast to a 2/4-bit integer type: truncate toward zero, then wrap around as the bits do."""
    q = c.cast(x, torch.int32) if c.dtype(x) != torch.bool else c.cast(c.cast(x, torch.uint8), torch.int32)
    q = c.add("bitwise_and", [q, _i32((1 << t.bits) - 1)])
    if t.storage == torch.int8:
        half = 1 << (t.bits - 1)
        q = c.add("sub", [c.add("bitwise_xor", [q, _i32(half)]), _i32(half)])
    return c.cast(q, t.storage)


def narrow_cast(c: NodeCtx, x: Entry, src: NarrowType | None, to: int) -> Entry:
    """Cast between any supported type and a narrow one (``src`` is the narrow type of ``x``, if any)."""
    dst = NARROW.get(to)
    if src is not None:
        if dst is not None and dst.onnx_type == src.onnx_type:
            return x
        x = narrow_decode(c, x, src)
    if dst is None:
        if to not in ONNX_DTYPES:
            raise Unsupported(f"cast to {onnx_type_name(to)} (dtype not supported)")
        return c.cast(x, ONNX_DTYPES[to])
    _set_narrow(c, dst)
    if dst.onnx_type == TensorProto.FLOAT8E8M0:
        return narrow_encode_e8m0(c, x, bool(c.attr("saturate", 1)), c.attr("round_mode", "up"))
    if dst.is_float:
        return narrow_encode_float(c, x, dst, bool(c.attr("saturate", 1)))
    return narrow_encode_int(c, x, dst)


def _narrow_q_type(c: NodeCtx) -> NarrowType | None:
    zt = narrow_of(c, 2)
    if zt is not None:
        return zt
    if c.has(2):
        return None
    return NARROW.get(c.attr("output_dtype", 0))


def _quantize_narrow(c: NodeCtx, t: NarrowType) -> Entry:
    """QuantizeLinear to a narrow type: x / scale (+ zero point), rounded and saturated to the type."""
    x = c.input(0)
    scale, zp, _ = _qparams(c, x, 1, 2)
    v = c.add("div", [c.cast(x, torch.float32), c.cast(scale, torch.float32)])
    _set_narrow(c, t)
    if t.onnx_type == TensorProto.FLOAT8E8M0:
        raise Unsupported("quantization to FLOAT8E8M0")
    if t.is_float:
        if zp is not None:
            v = c.add("add", [v, narrow_decode(c, zp, t)])
        return narrow_encode_float(c, v, t, bool(c.attr("saturate", 1)))
    lo, hi = t.int_range()
    q = _round_even(c, v)
    if zp is not None:
        q = c.add("add", [q, c.cast(zp, torch.float32)])
    return c.cast(c.add("clamp", [q], min=float(lo), max=float(hi)), t.storage)


def _dequantize_narrow(c: NodeCtx, t: NarrowType) -> Entry:
    x = c.input(0)
    scale, zp, _ = _qparams(c, x, 1, 2)
    xf = c.cast(narrow_decode(c, x, t), torch.float32)
    if zp is not None:
        xf = c.add("sub", [xf, c.cast(narrow_decode(c, zp, t), torch.float32)])
    out_dt = c.dtype(scale)
    return c.cast(c.add("mul", [xf, c.cast(scale, torch.float32)]), out_dt)


_quantize_plain, _dequantize_plain = CONVERTERS["QuantizeLinear"], CONVERTERS["DequantizeLinear"]


@converter("QuantizeLinear")
def _quantize_any(c: NodeCtx) -> Entry:
    t = _narrow_q_type(c)
    return _quantize_plain(c) if t is None else _quantize_narrow(c, t)


@converter("DequantizeLinear")
def _dequantize_any(c: NodeCtx) -> Entry:
    t = narrow_of(c, 0)
    return _dequantize_plain(c) if t is None else _dequantize_narrow(c, t)


# ---------------------------------------------------------------------------------------- plugins
def _convert_plugin(c: NodeCtx, entry: Any) -> list[Entry]:
    """A node in a custom domain (or an op type the converters lack) served by a registered plugin."""
    from trtjit.plugins import add_plugin_node

    attrs = {a.name: c.attr(a.name) for a in c.node.attribute if a.name != "plugin_version"}
    attrs = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in attrs.items()}
    ins = [c.value(c.input(i)) for i in range(c.n_in()) if c.has(i)]
    return list(add_plugin_node(c.g, entry, ins, attrs, name=c.name if c.name not in c.g else None, source=c.name))


# ------------------------------------------------------------------------------------------- entry
def import_onnx(model: Any, inputs: Any = None, base_dir: str | os.PathLike | None = None,
                check: bool = True, registry: Any = None) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) for inputs shaped like ``inputs``.

    ``inputs``: example tensors (torch or numpy) or shapes in graph-input order, or a dict
    ``{input name: tensor or shape}``; None uses the shapes the model declares (all static).
    """
    m, base = load_model(model, base_dir)
    if check:
        try:
            onnx.checker.check_model(_without_external_data(m))
        except onnx.checker.ValidationError as e:
            raise InputError(f"invalid ONNX model: {checker_message(e)}") from None
        except Exception as e:
            if "2GB" not in str(e) and "2 GB" not in str(e):
                raise InputError(f"invalid ONNX model: {type(e).__name__}: {_first_line(e)}") from None
    m = _upgrade_old_opset(m)
    if m.functions:
        try:
            from onnx import inliner
            m = inliner.inline_local_functions(m)
        except Exception as e:
            raise InputError(f"cannot inline the model's local functions: {_first_line(e)}") from None
    return Importer(m, base, inputs, registry).run()


def _upgrade_old_opset(m: onnx.ModelProto) -> onnx.ModelProto:
    """A model of a default-domain opset older than MIN_OPSET converted to MIN_OPSET with onnx's version
    converter (when it cannot, the importer's opset error stands)."""
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), MAX_OPSET)
    if opset >= MIN_OPSET:
        return m
    try:
        from onnx import version_converter

        return version_converter.convert_version(m, MIN_OPSET)
    except Exception:
        return m


def checker_message(e: BaseException) -> str:
    """onnx.checker's message on one line: it names the node (name and OpType) on the lines after the
    first, and that part is kept."""
    msg = " ".join(str(e).split())
    return msg if len(msg) <= 400 else msg[:400] + " ..."


def _without_external_data(m: onnx.ModelProto) -> onnx.ModelProto:
    """``m`` for the checker: initializers stored in external files become typed graph inputs (trtjit reads and
    validates external data itself, relative to the model's directory, with its own messages)."""
    ext = [t for t in m.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    if not ext:
        return m
    c = onnx.ModelProto()
    c.CopyFrom(m)
    names = {t.name for t in ext}
    keep = [t for t in c.graph.initializer if t.name not in names]
    del c.graph.initializer[:]
    c.graph.initializer.extend(keep)
    have = {vi.name for vi in c.graph.input}
    for t in ext:
        if t.name not in have:
            c.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return c


def is_onnx_model(model: Any) -> bool:
    """True for what ``trtjit.compile`` should hand to this frontend."""
    if isinstance(model, onnx.ModelProto):
        return True
    if isinstance(model, (str, os.PathLike)):
        return True
    return isinstance(model, (bytes, bytearray))


__all__ = ["CONVERTERS", "import_onnx", "is_onnx_model", "load_model", "supported_onnx_ops"]
