"""INT8 calibration: calibrators, activation histograms and TensorRT-format calibration caches.

A calibrator holds representative input batches (any iterable: a list, a generator, a DataLoader) and,
optionally, a cache path. An int8 build (``trtjit.compile(model, x, precision="int8", calibrator=cal)``)
runs every batch through the fp32 graph with the reference interpreter (``trtjit.interpreter``, which
captures every intermediate value), accumulates a histogram of |x| for each tensor an int8 layer reads, and
asks the calibrator's algorithm for a threshold T; the tensor's scale is T / 127 (symmetric, per tensor).

Algorithms: ``EntropyCalibrator`` (TensorRT's EntropyCalibration2: the threshold minimizing the KL
divergence between the clipped histogram and its 128-level quantization), ``MinMaxCalibrator`` (the
largest |x| seen), ``PercentileCalibrator`` (a percentile of |x|, 99.99 by default), ``MSECalibrator`` (the
threshold minimizing the expected squared quantization error, rounding plus clipping).

The TensorRT interface shape is there for subclasses: ``get_batch_size()``, ``get_batch(names)`` (a list of
tensors, one per input name, or ``None`` when exhausted), ``read_calibration_cache()`` (bytes or ``None``)
and ``write_calibration_cache(data)``.

The cache is TensorRT's text format: a first line ``TRT-<version>-<algorithm>``, then one
``tensor_name: <8 hex digits>`` line per tensor, the hex digits being the big-endian IEEE float32 scale.
trtjit also records two keys in the same format, as entries of tensors no network has
(``__trtjit_graph_key__0`` ... so TensorRT ignores them): a key of the imported graph (structure and
weights) and one of the calibration data, and the layers the precision check kept in fp32
(``__trtjit_fp32__<layer>: <its int8 error>``), so a build from the cache alone (calibrate on the host,
build for the target) makes the same engine. A cache whose graph key differs is refused; a cache whose data
key differs from the calibrator's (re-iterable) data is refused; ``recalibrate=True`` recalibrates and
overwrites instead. A cache without keys (written by TensorRT) is accepted as is: its scales are used by
tensor name, and layers whose input it has no scale for stay fp32.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trtjit.errors import CalibrationError
from trtjit.ir import Graph, TensorSpec, Value

TRT_VERSION = "8601"  # the TensorRT version (8.6.1) whose cache header trtjit writes; any version is read
_KEY_ENTRY = "__trtjit_{kind}_key__{i}"
_FP32_ENTRY = "__trtjit_fp32__"  # + layer name: a layer the precision check kept fp32 (value: its int8 error)
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
BINS = 2048
QUANT_LEVELS = 128


def value_name(v: Value) -> str:
    """A tensor's name in calibration caches: its producing node, plus ``:i`` for outputs after the first."""
    return v.node if v.index == 0 else f"{v.node}:{v.index}"


# ------------------------------------------------------------------------------------------ keys
def graph_key(graph: Graph) -> str:
    """64-bit hex key of a graph: every node's op, attributes, inputs and output specs, and every weight's
    bytes. The same model imports to the same key on any machine."""
    h = hashlib.sha256()
    for name in graph.topo_order():
        n = graph.node(name)
        attrs = {k: (f"<graph {v!r}>" if isinstance(v, Graph) else v) for k, v in n.attrs.items()}
        rec = [name, n.op, attrs, [list(v) for v in graph.inputs_of(name)], [s.to_json() for s in n.outputs]]
        h.update(json.dumps(rec, sort_keys=True, default=str).encode())
        if n.op == "constant":
            h.update(_tensor_bytes(n.value))
    h.update(json.dumps([graph.inputs, [list(v) for v in graph.outputs]]).encode())
    return h.hexdigest()[:16]


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    return str(t.dtype).encode() + str(list(t.shape)).encode() + (
        t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


# ------------------------------------------------------------------------------------- histograms
@dataclass
class Histogram:
    """Histogram of |x| over [0, edge) in ``bins`` bins; the range grows (re-binning what was counted,
    assuming values spread evenly within a bin) when a batch exceeds it, so one pass over the data is
    enough and generators work."""

    bins: int = BINS
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    edge: float = 0.0
    amax: float = 0.0
    total: int = 0

    def add(self, x: torch.Tensor) -> None:
        a = x.detach().abs().double().reshape(-1)
        m = float(a.max()) if a.numel() else 0.0
        if self.counts.size == 0:
            self.counts = np.zeros(self.bins)
        if m > self.edge:
            self._grow(m)
        self.amax = max(self.amax, m)
        self.total += a.numel()
        if self.edge > 0:
            idx = torch.clamp((a * (self.bins / self.edge)).long(), max=self.bins - 1)
            self.counts += torch.bincount(idx, minlength=self.bins).double().numpy()
        else:
            self.counts[0] += a.numel()

    def _grow(self, m: float) -> None:
        if self.edge > 0 and self.counts.sum() > 0:
            old_edges = np.linspace(0.0, self.edge, self.bins + 1)
            cdf = np.concatenate([[0.0], np.cumsum(self.counts)])
            new_edges = np.linspace(0.0, m, self.bins + 1)
            self.counts = np.diff(np.interp(new_edges, old_edges, cdf))
        elif self.counts.sum() > 0:  # everything so far was exactly zero
            zeros = self.counts.sum()
            self.counts = np.zeros(self.bins)
            self.counts[0] = zeros
        self.edge = m

    @property
    def width(self) -> float:
        return self.edge / self.bins


def minmax_threshold(h: Histogram) -> float:
    return h.amax


def percentile_threshold(h: Histogram, percentile: float) -> float:
    cdf = np.cumsum(h.counts) / max(h.counts.sum(), 1.0)
    i = int(np.searchsorted(cdf, percentile / 100.0))
    return min((i + 1) * h.width, h.amax)


def mse_threshold(h: Histogram) -> float:
    """Threshold minimizing sum_j n_j * err_j(T): rounding error s^2/12 inside [0, T] (s = T / 127),
    clipping error (c_j - T)^2 above it, with c_j the bin centers."""
    centers = (np.arange(h.bins) + 0.5) * h.width
    cands = np.arange(QUANT_LEVELS // 2, h.bins + 1) * h.width
    best, best_err = h.amax, None
    for t in cands:
        s = t / 127.0
        inside = centers <= t
        err = float(h.counts[inside].sum() * s * s / 12.0 + (h.counts[~inside] * (centers[~inside] - t) ** 2).sum())
        if best_err is None or err < best_err:
            best, best_err = float(t), err
    return min(best, h.amax)


def entropy_threshold(h: Histogram, levels: int = QUANT_LEVELS, stride: int = 4) -> float:
    """TensorRT's entropy calibration: for each candidate bin count i >= 128, P is the first i bins with
    every count beyond them added to the last one, Q is P's support quantized into 128 levels (each
    level's mass spread over its nonzero bins); the threshold is (i + 0.5) * bin width of the i with the
    smallest KL(P || Q), trying every ``stride``-th i (1 is TensorRT's exhaustive search, four times
    slower for a threshold within 0.2% of the range). As NVIDIA's pytorch-quantization does, the first bin (the spike of exact zeros
    after a ReLU) is replaced by the second before comparing, so the spike does not decide the range."""
    if h.edge == 0 or h.counts[1:].sum() == 0:
        return h.amax
    hist = h.counts.copy()
    hist[0] = hist[1]
    total_after = np.concatenate([np.cumsum(hist[::-1])[::-1][1:], [0.0]])  # mass beyond bin i-1 for each i
    best_i, best_kl = h.bins, None
    for i in sorted(set(range(levels, h.bins + 1, stride)) | {h.bins}):
        sliced = hist[:i]
        p = sliced.copy()
        p[-1] += total_after[i - 1]
        nonzero = sliced != 0
        starts = np.arange(levels) * (i // levels)
        sums = np.add.reduceat(sliced, starts)
        nz = np.add.reduceat(nonzero.astype(np.float64), starts)
        lengths = np.diff(np.append(starts, i))
        q = np.repeat(np.where(nz > 0, sums / np.maximum(nz, 1), 0.0), lengths) * nonzero
        psum, qsum = p.sum(), q.sum()
        if qsum == 0:
            continue
        p, q = p / psum, q / qsum
        mask = p > 0
        qm = np.where(q[mask] > 0, q[mask], 1e-12)  # P's mass where Q has none (smoothed)
        kl = float(np.sum(p[mask] * np.log(p[mask] / qm)))
        if best_kl is None or kl < best_kl:
            best_i, best_kl = i, kl
    return min((best_i + 0.5) * h.width, h.amax)


# ------------------------------------------------------------------------------------------ cache
@dataclass
class CalibrationCache:
    algorithm: str
    scales: dict[str, float]
    graph_key: str | None = None
    data_key: str | None = None
    version: str = TRT_VERSION
    fp32_layers: dict[str, float] = field(default_factory=dict)  # layer -> int8 error that kept it fp32

    def to_text(self) -> str:
        lines = [f"TRT-{self.version}-{self.algorithm}"]
        for kind, key in (("graph", self.graph_key), ("data", self.data_key)):
            if key:
                for i in range(0, len(key), 8):
                    lines.append(f"{_KEY_ENTRY.format(kind=kind, i=i // 8)}: {key[i:i + 8]}")
        for name, err in self.fp32_layers.items():
            lines.append(f"{_FP32_ENTRY}{name}: {struct.pack('>f', err).hex()}")
        for name, s in self.scales.items():
            lines.append(f"{name}: {struct.pack('>f', s).hex()}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def parse(text: str | bytes, where: str = "calibration cache") -> CalibrationCache:
        """Read TensorRT's format (and trtjit's keys); a malformed line raises naming it."""
        if isinstance(text, bytes):
            try:
                text = text.decode("ascii")
            except UnicodeDecodeError:
                raise CalibrationError(f"{where}: not a TensorRT calibration cache (not ASCII text)") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if not lines or not _HEADER.match(lines[0]):
            raise CalibrationError(f"{where}: not a TensorRT calibration cache: the first line must be "
                                   f"'TRT-<version>-<algorithm>', got {lines[0][:60] if lines else ''!r}")
        version, algorithm = _HEADER.match(lines[0]).groups()
        scales: dict[str, float] = {}
        fp32: dict[str, float] = {}
        keys: dict[str, list[tuple[int, str]]] = {"graph": [], "data": []}
        for no, ln in enumerate(lines[1:], start=2):
            name, sep, val = ln.rpartition(":")
            name, val = name.strip(), val.strip()
            if not sep or not name or not re.fullmatch(r"[0-9a-fA-F]{1,8}", val):
                raise CalibrationError(f"{where}: line {no} {ln[:60]!r} is not 'tensor_name: <8 hex digits>'")
            m = re.fullmatch(r"__trtjit_(graph|data)_key__(\d+)", name)
            if m:
                keys[m.group(1)].append((int(m.group(2)), val.lower().zfill(8)))
                continue
            s = struct.unpack(">f", bytes.fromhex(val.zfill(8)))[0]
            if name.startswith(_FP32_ENTRY):
                fp32[name[len(_FP32_ENTRY):]] = s
                continue
            if not np.isfinite(s) or s <= 0:
                raise CalibrationError(f"{where}: tensor {name!r} has scale {s} (line {no}); scales must be "
                                       "positive and finite")
            scales[name] = s
        gk, dk = ("".join(v for _, v in sorted(keys[k])) or None for k in ("graph", "data"))
        return CalibrationCache(algorithm, scales, gk, dk, version, fp32)


# ------------------------------------------------------------------------------------ calibrators
class Calibrator:
    """Base calibrator; subclasses choose the threshold algorithm (``threshold``).

    batches: any iterable of input batches: a tensor (one-input models), a tuple/list of tensors in input
        order (extra trailing items, e.g. the labels of a DataLoader, are ignored) or a dict {input name:
        tensor}; numpy arrays are accepted. Each batch must match the engine's input shapes and dtypes.
    cache: path of the calibration cache: read when it exists (no data is needed then, though the
        precision check runs on data when there is some), written after calibrating.
    recalibrate: ignore an existing cache (stale or not), calibrate from the data and overwrite it.
    max_batches: stop after this many batches.
    check_batches: how many batches the per-layer precision check compares int8 with fp32 on.
    """

    algorithm = "EntropyCalibration2"

    def __init__(self, batches: Iterable[Any] | None = None, cache: str | Path | None = None, *,
                 recalibrate: bool = False, max_batches: int | None = None, check_batches: int = 2,
                 bins: int = BINS) -> None:
        if batches is not None and not isinstance(batches, Iterable):
            raise CalibrationError(f"calibration batches must be an iterable of batches (list, generator, "
                                   f"DataLoader), got {type(batches).__name__}")
        if isinstance(batches, torch.Tensor):
            raise CalibrationError("calibration batches must be an iterable of batches, got one tensor; wrap it "
                                   "in a list: [x] (or split it: list(x.split(batch_size)))")
        self.batches = batches
        self.cache = Path(cache) if cache is not None else None
        self.recalibrate = recalibrate
        self.max_batches = max_batches
        self.check_batches = check_batches
        self.bins = bins
        self._iter: Iterator[Any] | None = None
        self._peeked: list[Any] = []

    # ------------------------------------------------------------- TensorRT's interface
    def get_batch_size(self) -> int:
        """Leading dimension of the first batch (1 when there is none)."""
        first = self._peek()
        if first is None:
            return 1
        t = _first_tensor(first)
        return int(t.shape[0]) if t is not None and t.dim() else 1

    def get_batch(self, names: list[str]) -> list[torch.Tensor] | None:
        """The next batch as one tensor per input name, or None when the data is exhausted."""
        if self._peeked:
            b = self._peeked.pop(0)
        else:
            if self._iter is None:
                if self.batches is None:
                    return None
                self._iter = iter(self.batches)
            try:
                b = next(self._iter)
            except StopIteration:
                return None
        return _normalize(b, names)

    def read_calibration_cache(self) -> bytes | None:
        if self.cache is None or self.recalibrate or not self.cache.is_file():
            return None
        return self.cache.read_bytes()

    def write_calibration_cache(self, cache: bytes) -> None:
        if self.cache is not None:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            self.cache.write_bytes(cache)

    # ------------------------------------------------------------- trtjit's side
    def threshold(self, hist: Histogram) -> float:
        return entropy_threshold(hist)

    def reset(self) -> bool:
        """Start the data over; False when it cannot be (a generator or iterator runs once)."""
        if self.batches is None or iter(self.batches) is self.batches:
            return False
        self._iter, self._peeked = None, []
        return True

    def _peek(self) -> Any:
        if not self._peeked:
            if self._iter is None:
                if self.batches is None:
                    return None
                self._iter = iter(self.batches)
            try:
                self._peeked.append(next(self._iter))
            except StopIteration:
                return None
        return self._peeked[0]

    def __repr__(self) -> str:
        return f"<trtjit.{type(self).__name__} {self.algorithm} cache={str(self.cache) if self.cache else None}>"


class EntropyCalibrator(Calibrator):
    """TensorRT's EntropyCalibration2: minimal KL divergence between clipped and quantized histograms."""

    algorithm = "EntropyCalibration2"


class MinMaxCalibrator(Calibrator):
    """Scale from the largest |x| seen (TensorRT's MinMaxCalibration): no clipping, coarser steps."""

    algorithm = "MinMaxCalibration"

    def threshold(self, hist: Histogram) -> float:
        return minmax_threshold(hist)


class PercentileCalibrator(Calibrator):
    """Scale from a percentile of |x| (``percentile``, 99.99 by default); clips the rarest outliers."""

    algorithm = "PercentileCalibration"

    def __init__(self, batches: Iterable[Any] | None = None, cache: str | Path | None = None, *,
                 percentile: float = 99.99, **kwargs: Any) -> None:
        super().__init__(batches, cache, **kwargs)
        if not 0 < percentile <= 100:
            raise CalibrationError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = percentile

    def threshold(self, hist: Histogram) -> float:
        return percentile_threshold(hist, self.percentile)


class MSECalibrator(Calibrator):
    """Scale minimizing the expected squared quantization error (rounding inside, clipping outside)."""

    algorithm = "MSECalibration"

    def threshold(self, hist: Histogram) -> float:
        return mse_threshold(hist)


def calibrator_for_cache(path: str | Path) -> Calibrator:
    """A calibrator with no data that reads ``path``, of the class its header names (the CLI's --int8)."""
    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"calibration cache {p}: no such file")
    head = p.read_bytes()[:200].decode("ascii", "replace").splitlines()
    m = _HEADER.match(head[0].strip()) if head else None
    if m is None:
        raise CalibrationError(f"{p}: not a TensorRT calibration cache: the first line must be "
                               f"'TRT-<version>-<algorithm>'")
    classes = {c.algorithm: c for c in (EntropyCalibrator, MinMaxCalibrator, PercentileCalibrator, MSECalibrator)}
    classes["EntropyCalibration"] = classes["LegacyCalibration"] = EntropyCalibrator
    cls = classes.get(m.group(2))
    if cls is None:
        raise CalibrationError(f"{p}: calibration algorithm {m.group(2)!r} is unknown; known: {sorted(classes)}")
    cal = cls(cache=p)
    cal.algorithm = m.group(2)  # TensorRT's older algorithms: their scales are used as they are
    return cal


def _first_tensor(b: Any) -> torch.Tensor | None:
    if isinstance(b, (torch.Tensor, np.ndarray)):
        return torch.as_tensor(b)
    if isinstance(b, (list, tuple)) and b:
        return _first_tensor(b[0])
    if isinstance(b, dict) and b:
        return _first_tensor(next(iter(b.values())))
    return None


def _normalize(b: Any, names: list[str]) -> list[Any]:
    """One item per input name (values are checked against the graph later, naming the batch)."""
    if isinstance(b, dict):
        missing = [n for n in names if n not in b]
        if missing:
            raise CalibrationError(f"calibration batch lacks input(s) {missing} (it has {sorted(b)})")
        return [b[n] for n in names]
    if isinstance(b, (list, tuple)):
        if len(b) < len(names):
            raise CalibrationError(f"calibration batch has {len(b)} item(s), the graph takes {len(names)} "
                                   f"input(s) {names}")
        return list(b[:len(names)])
    return [b]


# ------------------------------------------------------------------------------------ calibration
@dataclass
class CalibrationResult:
    scales: dict[str, float]
    source: str  # "data" or the cache path
    batches: int = 0
    samples: list[dict[str, torch.Tensor]] = field(default_factory=list)  # first batches' layer inputs
    notes: list[str] = field(default_factory=list)
    algorithm: str = ""
    fp32_layers: dict[str, float] = field(default_factory=dict)  # from the cache: layers kept fp32 when calibrated
    new_cache: CalibrationCache | None = None  # made from data: the caller records its decisions, then ``save``s

    def save(self, cal: Calibrator) -> None:
        if self.new_cache is not None:
            cal.write_calibration_cache(self.new_cache.to_text().encode())


def _check_batch(graph: Graph, items: list[Any], index: int) -> tuple[torch.Tensor, ...]:
    out = []
    for name, t in zip(graph.inputs, items):
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(t)
        if not isinstance(t, torch.Tensor):
            raise CalibrationError(f"calibration batch {index}, input {name!r}: expected a tensor, got "
                                   f"{type(t).__name__}")
        want = graph.node(name).spec
        got = TensorSpec.of(t)
        if got != want:
            hint = ("; a DataLoader's last, smaller batch: pass drop_last=True" if got.dtype == want.dtype and
                    got.shape[1:] == want.shape[1:] and got.shape[:1] < want.shape[:1] else "")
            raise CalibrationError(f"calibration batch {index}, input {name!r}: expected {want}, got {got} "
                                   f"(calibration batches must match the engine's input shapes and dtypes{hint})")
        if t.dtype.is_floating_point and not torch.isfinite(t).all():
            raise CalibrationError(f"calibration batch {index}, input {name!r} holds NaN or Inf")
        out.append(t.detach().cpu())
    return tuple(out)


def _batches(cal: Calibrator, graph: Graph) -> Iterator[tuple[int, tuple[torch.Tensor, ...]]]:
    i = 0
    while cal.max_batches is None or i < cal.max_batches:
        try:
            items = cal.get_batch(list(graph.inputs))
        except CalibrationError as e:
            raise CalibrationError(f"calibration batch {i}: {e}") from None
        if items is None:
            return
        yield i, _check_batch(graph, list(items), i)
        i += 1


def calibrate(cal: Calibrator, graph: Graph, tensors: dict[str, Value], key: str) -> CalibrationResult:
    """Scales for ``tensors`` (cache name -> value of ``graph``): from the calibrator's cache when it
    fits, else from its data through the fp32 reference interpreter (``result.save(cal)`` then writes the
    cache, once the caller has recorded its fp32 decisions in ``result.new_cache``)."""
    from trtjit.interpreter import run_graph

    if not isinstance(cal, Calibrator):
        raise CalibrationError(f"calibrator must be a trtjit calibrator (trtjit.EntropyCalibrator(batches), ...), "
                               f"got {type(cal).__name__}")
    where = str(cal.cache) if cal.cache is not None else f"{type(cal).__name__}.read_calibration_cache()"
    raw = cal.read_calibration_cache()
    if raw is not None:
        cache = CalibrationCache.parse(raw, where)
        fix = "delete it or pass recalibrate=True to the calibrator"
        if cache.algorithm != cal.algorithm:
            raise CalibrationError(f"calibration cache {where} was made by {cache.algorithm}, the calibrator is "
                                   f"{type(cal).__name__} ({cal.algorithm}); {fix}")
        if cache.graph_key is not None and cache.graph_key != key:
            raise CalibrationError(f"calibration cache {where} was made for another graph (graph key "
                                   f"{cache.graph_key}, this graph {key}); {fix}")
        notes = []
        if cache.graph_key is None:
            notes.append(f"cache {where} records no graph key (written by TensorRT?): scales used by tensor name")
        elif [n for n in tensors if n not in cache.scales]:
            missing = [n for n in tensors if n not in cache.scales]
            raise CalibrationError(f"calibration cache {where} has no scale for tensor(s) {missing[:5]} of this "
                                   f"graph although its graph key matches (made with other build options?); {fix}")
        samples = []
        if cache.data_key is not None and cal.reset():
            dk, n = hashlib.sha256(), 0
            for i, batch in _batches(cal, graph):
                for t in batch:
                    dk.update(_tensor_bytes(t))
                n = i + 1
            if n and dk.hexdigest()[:16] != cache.data_key:
                raise CalibrationError(f"calibration cache {where} was made from other calibration data (data key "
                                       f"{cache.data_key}, this data {dk.hexdigest()[:16]}); {fix}")
            cal.reset()
        elif cache.data_key is not None:
            notes.append("calibration data is a one-shot iterator: its key was not compared with the cache's")
        for i, batch in _batches(cal, graph):
            if i >= cal.check_batches:
                break
            _, env = run_graph(graph, batch, capture=True)
            samples.append({n: env[v] for n, v in tensors.items()})
        return CalibrationResult(dict(cache.scales), where, 0, samples, notes, cache.algorithm,
                                 dict(cache.fp32_layers))
    cal.reset()  # a calibrator (of a list or DataLoader) serves several builds
    hists = {n: Histogram(cal.bins) for n in tensors}
    dk = hashlib.sha256()
    samples: list[dict[str, torch.Tensor]] = []
    count = 0
    for i, batch in _batches(cal, graph):
        for t in batch:
            dk.update(_tensor_bytes(t))
        _, env = run_graph(graph, batch, capture=True)
        for n, v in tensors.items():
            x = env[v]
            if not torch.isfinite(x).all():
                raise CalibrationError(f"calibration batch {i}: tensor {n!r} holds NaN or Inf in the fp32 graph")
            hists[n].add(x)
        if i < cal.check_batches:
            samples.append({n: env[v] for n, v in tensors.items()})
        count = i + 1
    if count == 0:
        raise CalibrationError(f"the calibration set is empty: {type(cal).__name__}.get_batch returned None at "
                               "once (pass a non-empty iterable of batches, or a cache file; a generator runs "
                               "once, a list or DataLoader can serve several builds)")
    scales = {}
    for n, h in hists.items():
        t = cal.threshold(h)
        # float32, as the cache stores it, so a build from the cache is the same engine; an all-zero tensor
        # quantizes to 0 at any scale
        scales[n] = float(np.float32((t if t > 0 else 1.0) / 127.0))
    cache = CalibrationCache(cal.algorithm, scales, key, dk.hexdigest()[:16])
    return CalibrationResult(scales, "data", count, samples, [], cal.algorithm, new_cache=cache)


__all__ = ["CalibrationCache", "Calibrator", "EntropyCalibrator", "Histogram", "MSECalibrator", "MinMaxCalibrator",
           "PercentileCalibrator", "calibrate", "graph_key", "value_name"]
