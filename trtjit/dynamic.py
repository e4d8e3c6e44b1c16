"""Dynamic batch: one symbolic size ``B`` that ranges over [min, max] and is tuned for opt.

A ``SymDim`` is a size proportional to the batch, ``coef * B``. It is an ``int`` whose value is its size at
opt, so that IR shapes, view attributes and layouts keep their types, but it is strict about it:

* arithmetic stays exact (``coef * B`` times, plus or exactly-divided-by an integer, or plus another
  ``SymDim``) and anything else raises ``GuardError``;
* ``==`` is structural, as shapes are compared in a compiler: ``coef * B`` equals ``coef * B`` and never a
  fixed size (torch.export gives sizes that must be equal one symbol), so ``size == 1`` broadcast checks
  and shape matches say no, and the general code they pick is right for every batch, 1 included (a
  size-1 dim is indexed with 0 there too);
* an ordering (``<``, ``>=``, ...) must have the same truth for every batch in range, else it raises
  ``GuardError``; as in torch.export, dynamic sizes count as at least 2 there (see above);
* ``int()``, ``float()`` and ``__index__`` raise, and ``TensorSpec.meta()`` refuses symbolic shapes;
  heuristics that want the opt size (tile sizes, block sizes) say so with ``hint()``, memory sizing uses
  ``upper()`` and launches ``at(b)``. (C code that reads an int subclass's value directly, such as
  ``range()`` or torch's size arguments, cannot be intercepted: trtjit's code evaluates sizes explicitly.)
* ``str()`` is a Triton expression of the kernel's runtime argument ``nb`` (``(nb * 128)``), so kernel
  templates' f-strings emit correct code unchanged.

``GridDim`` is a launch-grid extent ``ceil(coef * B / div)``, evaluated at launch by ``grid_at``. Shape
inference and view layouts of graphs holding SymDims run torch at two batch values and recombine the
results (``two_point``): every size is either constant or proportional to B, else a GuardError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trtjit.errors import BuildError, InputError

ARG = "nb"  # the name of the runtime batch argument of dynamic kernels
_PROBES = (7, 13)  # batch values shape inference runs torch at (primes: no accidental divisibility)


class GuardError(BuildError):
    """A size proportional to the batch was used where a fixed value is needed, or a comparison's truth
    depends on the batch within the engine's range."""


@dataclass(frozen=True)
class BatchRange:
    """The range of the batch size ``B``: an engine serves min <= B <= max and is tuned for opt."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.min, self.opt, self.max)):
            raise InputError(f"batch range min/opt/max must be integers, got {self.min!r}, {self.opt!r}, {self.max!r}")
        if not 1 <= self.min <= self.opt <= self.max:
            raise InputError(f"batch range needs 1 <= min <= opt <= max, got min={self.min}, opt={self.opt}, "
                             f"max={self.max}")

    def __str__(self) -> str:
        return f"[{self.min}, {self.max}] (opt {self.opt})"

    def to_json(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    @staticmethod
    def from_json(d: Any) -> BatchRange:
        if not isinstance(d, dict) or set(d) != {"min", "opt", "max"}:
            raise InputError(f"malformed batch range {d!r}")
        return BatchRange(d["min"], d["opt"], d["max"])


def _guard(msg: str) -> GuardError:
    return GuardError(msg)


class SymDim(int):
    """``coef * B`` for the batch ``B`` of ``rng``; as an int, its value at opt (see the module docstring)."""

    coef: int
    rng: BatchRange

    def __new__(cls, coef: int, rng: BatchRange) -> SymDim:
        obj = int.__new__(cls, coef * rng.opt)
        obj.coef = coef
        obj.rng = rng
        return obj

    # -------------------------------------------------------------- values
    def at(self, b: int) -> int:
        return self.coef * b

    def hint(self) -> int:
        """The size at opt, for heuristics (tile and block sizes) that are tuned for opt."""
        return self.coef * self.rng.opt

    def upper(self) -> int:
        return max(self.coef * self.rng.min, self.coef * self.rng.max)

    def __str__(self) -> str:
        return ARG if self.coef == 1 else f"({ARG} * {self.coef})"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        if spec:
            raise _guard(f"the batch-proportional size {self} cannot be formatted with {spec!r}")
        return str(self)

    def __int__(self) -> int:
        raise _guard(f"a size proportional to the batch ({self}) is used where a fixed integer is needed; a "
                     "dynamic-batch engine cannot specialize it")

    __index__ = __int__

    def __float__(self) -> float:
        raise _guard(f"a size proportional to the batch ({self}) is used as a fixed float (e.g. the count of a "
                     "mean over the batch dim); not supported in a dynamic-batch engine")

    def bit_length(self) -> int:
        return self.__int__()

    def __hash__(self) -> int:
        return hash(("SymDim", self.coef))

    def __bool__(self) -> bool:
        return True

    # ---------------------------------------------------------- arithmetic
    def _other(self, o: Any, what: str) -> int | None:
        if isinstance(o, SymDim):
            if o.rng != self.rng:
                raise _guard(f"sizes of two different batch ranges meet in {what}")
            return None
        if isinstance(o, bool) or not isinstance(o, int):
            return NotImplemented  # type: ignore[return-value]
        return o

    def __add__(self, o: Any) -> Any:
        v = self._other(o, "+")
        if v is NotImplemented:
            return NotImplemented
        if v is None:
            return sym(self.coef + o.coef, self.rng)
        if v == 0:
            return self
        raise _guard(f"{self} + {v} is not proportional to the batch")

    __radd__ = __add__

    def __sub__(self, o: Any) -> Any:
        v = self._other(o, "-")
        if v is NotImplemented:
            return NotImplemented
        if v is None:
            return sym(self.coef - o.coef, self.rng)
        if v == 0:
            return self
        raise _guard(f"{self} - {v} is not proportional to the batch")

    def __rsub__(self, o: Any) -> Any:
        return (-self).__add__(o)

    def __neg__(self) -> SymDim:
        return SymDim(-self.coef, self.rng)

    def __pos__(self) -> SymDim:
        return self

    def __abs__(self) -> SymDim:
        return SymDim(abs(self.coef), self.rng)

    def __mul__(self, o: Any) -> Any:
        v = self._other(o, "*")
        if v is NotImplemented:
            return NotImplemented
        if v is None:
            raise _guard(f"{self} * {o} grows with the square of the batch")
        return sym(self.coef * v, self.rng)

    __rmul__ = __mul__

    def __floordiv__(self, o: Any) -> Any:
        v = self._other(o, "//")
        if v is NotImplemented:
            return NotImplemented
        if v is None:
            if self.coef % o.coef == 0:
                return self.coef // o.coef
            raise _guard(f"{self} // {o} is not a fixed integer")
        if v != 0 and self.coef % v == 0:
            return sym(self.coef // v, self.rng)
        raise _guard(f"{self} // {v} is not proportional to the batch")

    def __rfloordiv__(self, o: Any) -> Any:
        raise _guard(f"{o} // {self} depends on the batch")

    def __mod__(self, o: Any) -> Any:
        v = self._other(o, "%")
        if v is NotImplemented:
            return NotImplemented
        if v is None:
            if self.coef % o.coef == 0:
                return 0
            raise _guard(f"{self} % {o} depends on the batch")
        if v != 0 and self.coef % v == 0:
            return 0
        raise _guard(f"{self} % {v} depends on the batch")

    def __rmod__(self, o: Any) -> Any:
        raise _guard(f"{o} % {self} depends on the batch")

    def __truediv__(self, o: Any) -> Any:
        raise _guard(f"{self} / {o}: true division of a batch-proportional size")

    __rtruediv__ = __truediv__

    def _unsupported(self, *_: Any) -> Any:
        raise _guard(f"unsupported arithmetic on the batch-proportional size {self}")

    __pow__ = __rpow__ = __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = _unsupported
    __and__ = __rand__ = __or__ = __ror__ = __xor__ = __rxor__ = __invert__ = _unsupported
    __divmod__ = __rdivmod__ = _unsupported

    # --------------------------------------------------------- comparisons
    def _cmp(self, o: Any, op: Callable[[int, int], bool], name: str) -> Any:
        if isinstance(o, SymDim):
            if o.rng != self.rng:
                raise _guard(f"sizes of two different batch ranges are compared ({self} {name} {o})")
            lo, hi = max(self.rng.min, 2), self.rng.max
            a = op(self.coef * lo, o.coef * lo)
            if a == op(self.coef * hi, o.coef * hi):
                return a
            raise _guard(f"whether {self} {name} {o} depends on the batch in {self.rng}")
        if isinstance(o, bool) or not isinstance(o, (int, float)):
            return NotImplemented
        return self._cmp_const(o, op, name)

    def _cmp_const(self, o: float, op: Callable[[Any, Any], bool], name: str) -> bool:
        lo, hi = max(self.rng.min, 2), self.rng.max  # dynamic sizes are >= 2 when compared (module docstring)
        if hi < lo:
            lo = hi
        a = op(self.coef * lo, o)
        if a == op(self.coef * hi, o):
            return a
        raise _guard(f"whether {self} {name} {o} depends on the batch in {self.rng}; the engine cannot pick one "
                     "answer for every batch (narrow the range or make that size fixed)")

    def __eq__(self, o: Any) -> Any:  # type: ignore[override]
        if isinstance(o, SymDim):
            return o.rng == self.rng and o.coef == self.coef
        if isinstance(o, bool) or not isinstance(o, (int, float)):
            return NotImplemented
        return False  # structural: a batch-proportional size is never a fixed one (module docstring)

    def __ne__(self, o: Any) -> Any:  # type: ignore[override]
        r = self.__eq__(o)
        return r if r is NotImplemented else not r

    def __lt__(self, o: Any) -> Any:
        return self._cmp(o, lambda a, b: a < b, "<")

    def __le__(self, o: Any) -> Any:
        return self._cmp(o, lambda a, b: a <= b, "<=")

    def __gt__(self, o: Any) -> Any:
        return self._cmp(o, lambda a, b: a > b, ">")

    def __ge__(self, o: Any) -> Any:
        return self._cmp(o, lambda a, b: a >= b, ">=")

    def __reduce__(self) -> Any:
        return (SymDim, (self.coef, self.rng))


def sym(coef: int, rng: BatchRange) -> int:
    """``coef * B``: a SymDim, or the plain 0 when coef is 0."""
    return SymDim(coef, rng) if coef else 0


class GridDim(int):
    """A launch-grid extent ``ceil(coef * B / div)`` (its int value: at opt); ``grid_at`` evaluates it."""

    coef: int
    div: int
    rng: BatchRange

    def __new__(cls, coef: int, div: int, rng: BatchRange) -> GridDim:
        obj = int.__new__(cls, -(-coef * rng.opt // div))
        obj.coef, obj.div, obj.rng = coef, div, rng
        return obj

    def at(self, b: int) -> int:
        return -(-self.coef * b // self.div)

    def __str__(self) -> str:
        return f"cdiv({ARG} * {self.coef}, {self.div})" if self.div != 1 else str(SymDim(self.coef, self.rng))

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return str(self)

    def _unsupported(self, *_: Any) -> Any:
        raise _guard(f"arithmetic on the batch-dependent launch grid extent {self}; use hint() in heuristics")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __floordiv__ = __rfloordiv__ = _unsupported
    __lt__ = __le__ = __gt__ = __ge__ = __int__ = __index__ = __float__ = _unsupported

    def __eq__(self, o: Any) -> bool:  # type: ignore[override]
        return isinstance(o, GridDim) and (o.coef, o.div, o.rng) == (self.coef, self.div, self.rng)

    def __ne__(self, o: Any) -> bool:  # type: ignore[override]
        return not self.__eq__(o)

    def __hash__(self) -> int:
        return hash(("GridDim", self.coef, self.div))


def cdiv(a: int, b: int) -> int:
    """ceil(a / b); a GridDim when ``a`` is batch-proportional."""
    if isinstance(a, SymDim):
        if a.coef % b == 0:
            return SymDim(a.coef // b, a.rng)
        return GridDim(a.coef, b, a.rng)
    return -(-a // b)


def hint(x: Any) -> Any:
    """The value at opt of a SymDim or GridDim (for heuristics tuned for opt); anything else unchanged."""
    if isinstance(x, SymDim):
        return x.hint()
    if isinstance(x, GridDim):
        return x.at(x.rng.opt)
    return x


def is_dynamic(x: Any) -> bool:
    """Whether ``x`` (nested lists, tuples, dicts, TensorSpecs) holds a SymDim or GridDim."""
    if isinstance(x, (SymDim, GridDim)):
        return True
    if isinstance(x, (list, tuple)):
        return any(is_dynamic(v) for v in x)
    if isinstance(x, dict):
        return any(is_dynamic(v) for v in x.values())
    shape = getattr(x, "shape", None)
    return isinstance(shape, tuple) and is_dynamic(shape)


def at(x: Any, b: int) -> Any:
    """``x`` with every SymDim/GridDim evaluated at batch ``b`` (lists, tuples, dicts, TensorSpecs)."""
    from trtjit.ir import TensorSpec

    if isinstance(x, (SymDim, GridDim)):
        return x.at(b)
    if isinstance(x, TensorSpec):
        return TensorSpec(tuple(at(s, b) for s in x.shape), x.dtype) if is_dynamic(x.shape) else x
    if isinstance(x, list):
        return [at(v, b) for v in x]
    if isinstance(x, tuple):
        return type(x)(*[at(v, b) for v in x]) if hasattr(x, "_fields") else tuple(at(v, b) for v in x)
    if isinstance(x, dict):
        return {k: at(v, b) for k, v in x.items()}
    return x


def upper(x: Any) -> Any:
    """``x`` evaluated at the largest batch of its range (memory sizing)."""
    if isinstance(x, SymDim):
        return x.upper()
    return x


def range_of(x: Any) -> BatchRange | None:
    """The batch range of the first SymDim in ``x`` (nested), or None when ``x`` is static."""
    if isinstance(x, (SymDim, GridDim)):
        return x.rng
    vals = x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple)) else \
        [x.shape] if isinstance(getattr(x, "shape", None), tuple) else []
    for v in vals:
        r = range_of(v)
        if r is not None:
            return r
    return None


def two_point(fn: Callable[..., Any], rng: BatchRange, *args: Any) -> Any:
    """Run ``fn`` on ``args`` evaluated at two batch values and recombine its (nested int) result: each
    integer either constant, or proportional to the batch (a SymDim); anything else raises GuardError."""
    b1, b2 = _PROBES
    r1, r2 = fn(*at(list(args), b1)), fn(*at(list(args), b2))
    return _combine(r1, r2, rng)


def _combine(r1: Any, r2: Any, rng: BatchRange) -> Any:
    b1, b2 = _PROBES
    if isinstance(r1, bool) or not isinstance(r1, (int, list, tuple, dict)):
        if r1 != r2:
            raise _guard(f"a result depends on the batch in an unsupported way ({r1!r} at batch {b1}, {r2!r} at "
                         f"batch {b2})")
        return r1
    if isinstance(r1, int):
        if r1 == r2:
            return r1
        if r1 % b1 == 0 and r1 * b2 == r2 * b1:
            return sym(r1 // b1, rng)
        raise _guard(f"a size is neither fixed nor proportional to the batch ({r1} at batch {b1}, {r2} at batch "
                     f"{b2})")
    if isinstance(r1, dict) or isinstance(r2, dict):
        if not (isinstance(r1, dict) and isinstance(r2, dict)) or set(r1) != set(r2):
            raise _guard(f"a result depends on the batch ({r1!r} at batch {b1}, {r2!r} at batch {b2})")
        return {k: _combine(r1[k], r2[k], rng) for k in r1}
    if len(r1) != len(r2):
        raise _guard(f"a result's rank depends on the batch ({len(r1)} vs {len(r2)})")
    out = [_combine(a, b, rng) for a, b in zip(r1, r2)]
    return type(r1)(out) if not hasattr(r1, "_fields") else type(r1)(*out)


def grid_at(grid: tuple[int, ...], b: int | None) -> tuple[int, ...]:
    """A kernel's launch grid at batch ``b`` (static grids unchanged)."""
    if b is None:
        return grid
    return tuple(g.at(b) if isinstance(g, (SymDim, GridDim)) else g for g in grid)


# ------------------------------------------------------------------------------------------ JSON
def encode(x: Any) -> Any:
    """JSON-able form: a SymDim becomes ``{"sym": coef}``, a GridDim ``{"sym": coef, "div": div}``."""
    if isinstance(x, GridDim):
        return {"sym": x.coef, "div": x.div}
    if isinstance(x, SymDim):
        return {"sym": x.coef}
    if isinstance(x, list):
        return [encode(v) for v in x]
    if isinstance(x, tuple):
        return [encode(v) for v in x]
    if isinstance(x, dict):
        return {k: encode(v) for k, v in x.items()}
    return x


def decode(x: Any, rng: BatchRange | None) -> Any:
    """Inverse of ``encode`` (needs the graph's batch range when ``x`` holds symbolic sizes)."""
    if isinstance(x, dict):
        if set(x) in ({"sym"}, {"sym", "div"}) and isinstance(x["sym"], int) and not isinstance(x["sym"], bool):
            if rng is None:
                raise InputError("serialized graph holds batch-proportional sizes but no batch range")
            if "div" in x:
                if not isinstance(x["div"], int) or isinstance(x["div"], bool) or x["div"] < 1:
                    raise InputError(f"malformed launch grid extent {x!r}")
                return GridDim(x["sym"], x["div"], rng)
            return sym(x["sym"], rng)
        return {k: decode(v, rng) for k, v in x.items()}
    if isinstance(x, list):
        return [decode(v, rng) for v in x]
    return x


# ------------------------------------------------------------------------------------ input ranges
def format_shape(shape: tuple[int, ...]) -> str:
    """``[1..16 (opt 8), 3, 32, 32]`` style, for messages."""
    parts = []
    for s in shape:
        if isinstance(s, SymDim):
            r = s.rng
            parts.append(f"{s.coef * r.min}..{s.coef * r.max} (opt {s.coef * r.opt})")
        else:
            parts.append(str(s))
    return "[" + ", ".join(parts) + "]"


def batch_of(name: str, index: int, want: tuple[int, ...], got: tuple[int, ...]) -> int | None:
    """The batch an input of shape ``got`` implies for an engine input of shape ``want``; InputError with
    the range when it does not fit. None for a static shape that matches."""
    if len(want) != len(got):
        raise InputError(f"input {index} ({name!r}): expected rank {len(want)} shape {format_shape(want)}, got "
                         f"{list(got)}")
    b = None
    for d, (w, g) in enumerate(zip(want, got)):
        if isinstance(w, SymDim):
            r = w.rng
            if g % w.coef or not r.min <= g // w.coef <= r.max:
                raise InputError(f"input {index} ({name!r}): dim {d} is {g}, outside the engine's range "
                                 f"{w.coef * r.min}..{w.coef * r.max} (opt {w.coef * r.opt}); expected shape "
                                 f"{format_shape(want)}, got {list(got)}")
            if b is not None and g // w.coef != b:
                raise InputError(f"input {index} ({name!r}): dims give different batch sizes ({b} and "
                                 f"{g // w.coef}) for shape {format_shape(want)}")
            b = g // w.coef
        elif w != g:
            raise InputError(f"input {index} ({name!r}): dim {d} must be {w}, got {g}; expected shape "
                             f"{format_shape(want)}, got {list(got)}")
    return b


# ------------------------------------------------------------------------ build-time input ranges
Shape = tuple[int, ...]


def normalize_shapes(x: Any) -> tuple[tuple[str, Shape, Shape, Shape], ...]:
    """``BuildOptions.shapes``: ``{input: (min_shape, opt_shape, max_shape)}`` (input by name or position)
    or a sequence of ``(input, min, opt, max)`` -> a sorted tuple of ``(input, min, opt, max)``."""
    if not x:
        return ()
    items = list(x.items()) if isinstance(x, dict) else [(e[0], e[1:]) for e in x]
    out = []
    for key, rng in items:
        if isinstance(rng, (list, tuple)) and len(rng) == 1 and isinstance(rng[0], (list, tuple)):
            rng = rng[0]
        if not isinstance(rng, (list, tuple)) or len(rng) != 3:
            raise InputError(f"shapes[{key!r}] must be (min_shape, opt_shape, max_shape), got {rng!r}")
        shapes = []
        for s in rng:
            if not isinstance(s, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                           for d in s):
                raise InputError(f"shapes[{key!r}]: {s!r} is not a shape (a list of non-negative integers)")
            shapes.append(tuple(s))
        if not len(shapes[0]) == len(shapes[1]) == len(shapes[2]):
            raise InputError(f"shapes[{key!r}]: min, opt and max shapes {shapes} have different ranks")
        out.append((str(key), *shapes))
    return tuple(sorted(out))


class DynamicInputs:
    """Which model inputs have a batch range, the one BatchRange they share, and the export arguments.
    ``examples``: the example inputs (tensors, or anything with a ``shape``), by position."""

    def __init__(self, shapes: tuple[tuple[str, Shape, Shape, Shape], ...], names: list[str],
                 examples: tuple[Any, ...] | list[Any]) -> None:
        self.dims: dict[int, int] = {}
        self.n = len(examples)
        rng = None
        for key, lo, opt, hi in shapes:
            idx = int(key) if key.isdigit() else names.index(key) if key in names else None
            if idx is None or idx >= len(examples):
                raise InputError(f"shapes names input {key!r}, but the model's inputs are {names} (give a name or "
                                 "a position)")
            ex = tuple(examples[idx].shape)
            vary = [d for d in range(len(lo)) if not lo[d] == opt[d] == hi[d]]
            if len(lo) != len(ex):
                raise InputError(f"shapes[{key!r}]: rank {len(lo)} differs from the example input's {list(ex)}")
            fixed = [d for d in range(len(lo)) if d not in vary and lo[d] != ex[d]]
            if fixed:
                raise InputError(f"shapes[{key!r}]: dim {fixed[0]} is {lo[fixed[0]]} in the range but "
                                 f"{ex[fixed[0]]} in the example input {list(ex)}")
            if len(vary) > 1:
                raise InputError(f"shapes[{key!r}]: dims {vary} vary between min {list(lo)}, opt {list(opt)} and max "
                                 f"{list(hi)}; trtjit supports one dynamic (batch) dim per input")
            if not vary:
                continue
            d = vary[0]
            r = BatchRange(lo[d], opt[d], hi[d])
            if rng is not None and r != rng:
                raise InputError(f"shapes[{key!r}]: batch range {r} differs from another input's {rng}; the inputs "
                                 "of one engine share one dynamic batch")
            rng = r
            self.dims[idx] = d
        self.range: BatchRange | None = rng

    def export_args(self, examples: tuple[Any, ...]) -> tuple[Any, ...]:
        """Example inputs resized along their batch dim to the batch torch.export traces at (opt, and at
        least 2: export specializes sizes 0 and 1), repeating the example's rows."""
        import torch

        assert self.range is not None
        b = min(max(self.range.opt, 2), self.range.max)
        out = list(examples)
        for i, d in self.dims.items():
            t = examples[i]
            idx = torch.arange(b, device=t.device) % max(t.shape[d], 1)
            out[i] = t.index_select(d, idx)
        return tuple(out)

    def export_dynamic_shapes(self) -> tuple[Any, ...]:
        from torch.export import Dim

        assert self.range is not None
        batch = Dim("batch", min=self.range.min, max=self.range.max)
        return tuple({self.dims[i]: batch} if i in self.dims else None for i in range(self.n))


# ------------------------------------------------------------------------------ frontends without symbols
def merge_graphs(g1: Any, g2: Any, rng: BatchRange) -> Any:
    """One dynamic-batch graph from the same model imported at the two probe batches (``_PROBES``): same
    nodes, edges, ops and constants; every size and attribute either equal in both or proportional to the
    batch. For frontends whose shapes are plain integers (ONNX); GuardError names what differs."""
    from trtjit.ir import Graph, Node, TensorSpec

    order = g1.topo_order()
    if order != g2.topo_order() or g1.inputs != g2.inputs or g1.outputs != g2.outputs:
        diff = next((a for a, b in zip(order, g2.topo_order()) if a != b), "?")
        raise _guard(f"the imported graph's structure depends on the batch (first difference at node {diff!r}); "
                     "it cannot serve a batch range")
    g = Graph()
    for name in order:
        n1, n2 = g1.node(name), g2.node(name)
        where = f"node {name!r} ({n1.op})"
        if n1.op != n2.op or g1.inputs_of(name) != g2.inputs_of(name) or len(n1.outputs) != len(n2.outputs):
            raise _guard(f"{where}: its op or inputs depend on the batch")
        value = n1.value
        if n1.op == "constant":
            import torch
            if n1.value.shape != n2.value.shape or not torch.equal(n1.value, n2.value):
                raise _guard(f"{where}: a constant computed from the batch size ({list(n1.value.shape)} at batch "
                             f"{_PROBES[0]}, {list(n2.value.shape)} at batch {_PROBES[1]}); a dynamic-batch engine "
                             "cannot hold it")
        try:
            attrs = _combine(n1.attrs, n2.attrs, rng)
            outs = []
            for a, b in zip(n1.outputs, n2.outputs):
                if a.dtype != b.dtype:
                    raise _guard(f"output dtype {a.dtype} vs {b.dtype}")
                outs.append(TensorSpec(tuple(_combine(list(a.shape), list(b.shape), rng)), a.dtype))
        except GuardError as e:
            raise GuardError(f"{where}: {e}") from None
        g.add_node(Node(name, n1.op, attrs, outs, value, n1.source), g1.inputs_of(name))
    g.inputs, g.outputs = list(g1.inputs), list(g1.outputs)
    try:  # JSON-able (ONNX's named dims: {"batch": {"sym": 1}})
        meta = encode(_combine(dict(g1.meta), dict(g2.meta), rng))
    except GuardError as e:
        raise GuardError(f"the imported graph's metadata depends on the batch: {e}") from None
    g.meta = dict(meta, batch_range=rng.to_json())
    return g


def import_onnx_dynamic(model: Any, example_inputs: Any, shapes: tuple[tuple[str, Shape, Shape, Shape], ...]) -> Any:
    """An ONNX model imported for a batch range: named inputs get ``shapes`` (min/opt/max; a fixed shape
    when all three agree), the rest ``example_inputs`` or their declared shapes. Imported at the two
    probe batches and merged (``merge_graphs``); a static graph when no input's range varies."""
    from trtjit.frontend_onnx import import_onnx, load_model

    m, _ = load_model(model)
    inits = {t.name for t in m.graph.initializer}
    names = [i.name for i in m.graph.input if i.name not in inits]
    base: dict[str, Any] = {}
    if isinstance(example_inputs, dict):
        base.update(example_inputs)
    elif example_inputs is not None:
        base.update(zip(names, example_inputs))
    opt_of = {}
    for key, _lo, opt, _hi in shapes:
        name = names[int(key)] if key.isdigit() and int(key) < len(names) else key
        if name not in names:
            raise InputError(f"shapes names input {key!r}, but the ONNX model's inputs are {names}")
        opt_of[name] = opt
    examples = [_ShapeOnly(opt_of[n]) if n in opt_of else _ShapeOnly(()) for n in names]
    dyn = DynamicInputs(shapes, names, examples)
    fixed = {n: list(s) for n, s in opt_of.items()}
    if dyn.range is None:
        return import_onnx(model, {**base, **fixed} or None)
    graphs = []
    for b in _PROBES:
        inputs = dict(base, **fixed)
        for i, d in dyn.dims.items():
            shape = list(opt_of[names[i]])
            shape[d] = b
            inputs[names[i]] = shape
        graphs.append(import_onnx(model, inputs))
    return merge_graphs(graphs[0], graphs[1], dyn.range)


class _ShapeOnly:
    def __init__(self, shape: Shape) -> None:
        self.shape = tuple(shape)
