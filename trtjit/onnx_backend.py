"""trtjit as an ONNX backend (``onnx.backend.base.Backend``), so onnx's own conformance suite runs on it.

    from trtjit.onnx_backend import Backend
    rep = Backend.prepare(model, "CPU")
    outputs = rep.run([x, y])            # numpy in, numpy out, in graph output order

``prepare`` checks the model and compiles it for the shapes it declares when they are all static; models
with dynamic dimensions, or with shape-tensor inputs whose values shape the graph (the ``shape`` input of
a ``Reshape`` ...), compile on the first ``run`` for the shapes and values given, and again when those
change (each engine is kept). Inputs and outputs of the narrow element types (FLOAT8*, INT4 ...) are the
ml_dtypes arrays onnx uses; a sequence input or output is a list of arrays.

``python -m trtjit.onnx_backend [--pattern REGEX] [--jobs N] [--progress] [--write-excludes PATH]`` runs
every node test of the installed onnx package and its pytorch-converted, pytorch-operator and simple model
tests (``--real`` adds the light zoo models, tens of minutes each without a GPU; ``--device CUDA`` on a
GPU), classifies each failure by cause and prints the pass counts, the causes, and the missing ops ranked by
the number of tests they would unlock (``--write-excludes`` regenerates ``tests/onnx_backend_excludes.txt``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import torch
from onnx.backend.base import Backend as _OnnxBackend
from onnx.backend.base import BackendRep, namedtupledict

from trtjit.errors import InputError, TrtjitError


def _to_torch(x: Any, device: torch.device) -> torch.Tensor:
    from trtjit.frontend_onnx import np_to_torch

    if isinstance(x, torch.Tensor):
        return x.to(device)
    from trtjit.frontend_onnx import Unsupported

    try:
        return np_to_torch(np.asarray(x), "input").to(device)
    except Unsupported as e:
        raise InputError(f"{e} (input element type not supported)") from None


def _to_numpy(t: torch.Tensor, narrow: str | None = None) -> np.ndarray:
    """numpy of an engine output; ``narrow``: the ONNX type (FLOAT8E4M3FN, INT4 ...) its storage holds."""
    from trtjit.frontend_onnx import NARROW, torch_to_np

    if narrow is not None:
        return NARROW[onnx.TensorProto.DataType.Value(narrow)].from_storage(t)
    return torch_to_np(t.detach().cpu())


class TrtjitRep(BackendRep):
    """A prepared model: one engine per distinct set of input shapes and shape-tensor values."""

    def __init__(self, model: onnx.ModelProto, device: str = "CPU", **options: Any) -> None:
        self.model = model
        self.device = torch.device("cuda" if device.upper().startswith("CUDA") else "cpu")
        self.options = options
        inits = {t.name for t in model.graph.initializer}
        self.input_names = [vi.name for vi in model.graph.input if vi.name not in inits]
        self.output_names = [vi.name for vi in model.graph.output]
        self.engines: dict[Any, Any] = {}
        self._last = None
        if self._static():
            self._last = self._engine(None)

    def _static(self) -> bool:
        """All input shapes declared, and no input small enough to be a shape tensor (whose value may
        shape the graph): then the engine can be built now."""
        from trtjit.frontend_onnx import SHAPE_TENSOR_MAX_NUMEL

        for vi in self.model.graph.input:
            if vi.name not in self.input_names:
                continue
            tt = vi.type.tensor_type
            if not tt.HasField("shape") or any(not d.HasField("dim_value") for d in tt.shape.dim):
                return False
            dims = [d.dim_value for d in tt.shape.dim]
            if len(dims) <= 1 and int(np.prod(dims)) <= SHAPE_TENSOR_MAX_NUMEL:
                return False
        return True

    def _engine(self, tensors: Sequence[torch.Tensor] | None) -> Any:
        from trtjit.builder import build
        from trtjit.frontend_onnx import import_onnx
        from trtjit.options import BuildOptions

        examples = None if tensors is None else \
            [None if t is None else [v.cpu() for v in t] if isinstance(t, list) else t.cpu() for t in tensors]
        graph = import_onnx(self.model, examples, check=False)
        if tensors is None and graph.meta.get("bound_inputs"):
            return None  # needs the values of shape-tensor inputs: compile on the first run
        engine = build(graph, BuildOptions.make(None, **self.options))
        self.engines[self._key(engine, tensors)] = engine
        return engine

    @staticmethod
    def _key(engine: Any, tensors: Sequence[torch.Tensor] | None) -> Any:
        bound = engine.graph.meta.get("bound_inputs") or {}
        specs = tuple((tuple(s.shape), s.dtype) for s in engine.input_specs)
        return specs, tuple(sorted((k, tuple(v["value"])) for k, v in bound.items()))

    def _matches(self, engine: Any, tensors: Sequence[torch.Tensor]) -> bool:
        if [(tuple(t.shape), t.dtype) for t in tensors] != [(s.shape, s.dtype) for s in engine.input_specs]:
            return False
        bound = engine.graph.meta.get("bound_inputs") or {}
        for name, t in zip(engine.input_names, tensors):
            if name in bound and t.reshape(-1).tolist() != bound[name]["value"]:
                return False
        return True

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        if isinstance(inputs, dict):
            missing = [n for n in self.input_names if n not in inputs]
            if missing:
                raise InputError(f"inputs lack {missing}")
            inputs = [inputs[n] for n in self.input_names]
        elif isinstance(inputs, (np.ndarray, torch.Tensor)):
            inputs = [inputs]
        # a sequence input is a list of arrays: the engine takes its tensors as separate inputs
        # None: an empty optional input
        nested = [None if x is None else [_to_torch(v, self.device) for v in x] if isinstance(x, (list, tuple))
                  else _to_torch(x, self.device) for x in inputs]
        tensors = [t for x in nested if x is not None for t in (x if isinstance(x, list) else [x])]
        engine = None
        for e in ([self._last] if self._last is not None else []) + list(self.engines.values()):
            if self._matches(e, tensors):
                engine = e
                break
        if engine is None:
            engine = self._engine(nested)
        self._last = engine
        outs = engine.run(*tensors)
        narrow = engine.graph.meta.get("onnx_narrow_outputs") or {}
        seqs = engine.graph.meta.get("onnx_sequence_outputs") or {}
        arrays: list[Any] = []
        it = iter(outs)
        for n in self.output_names:
            if n in seqs:  # a sequence output comes back as a list of arrays
                arrays.append([_to_numpy(next(it)) for _ in range(seqs[n])])
            else:
                arrays.append(_to_numpy(next(it), narrow.get(n)))
        return namedtupledict("Outputs", self.output_names)(*arrays)


class Backend(_OnnxBackend):
    """``onnx.backend.base.Backend`` for trtjit: CPU (Triton's interpreter) and, where present, CUDA."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> TrtjitRep:
        from trtjit.frontend_onnx import load_model

        m, _ = load_model(model)
        try:
            onnx.checker.check_model(m)
        except onnx.checker.ValidationError as e:
            from trtjit.frontend_onnx import checker_message

            raise InputError(f"invalid ONNX model: {checker_message(e)}") from None
        return TrtjitRep(m, device, **kwargs)

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[Any, ...]:
        """Run one node: wrap it in a model whose inputs are typed from ``inputs``."""
        super().run_node(node, inputs, device=device, outputs_info=outputs_info, **kwargs)
        if isinstance(inputs, dict):
            names = list(inputs)
            arrays = [np.asarray(inputs[n]) for n in names]
        else:
            names = [n for n in node.input if n]
            arrays = [np.asarray(x) for x in inputs]
        vis = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
               for n, a in zip(names, arrays)]
        outs = []
        for i, n in enumerate(o for o in node.output if o):
            if outputs_info is not None and i < len(outputs_info):
                dt, shape = outputs_info[i]
                outs.append(onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt)),
                                                               shape))
            else:
                outs.append(onnx.helper.make_value_info(n, onnx.TypeProto()))
        graph = onnx.helper.make_graph([node], "run_node", vis, outs)
        opset = kwargs.pop("opset_version", onnx.defs.onnx_opset_version())
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        return TrtjitRep(model, device, **kwargs).run(arrays)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        d = device.upper()
        if d.startswith("CPU"):
            return True
        if d.startswith("CUDA"):
            return torch.cuda.is_available()
        return False


prepare = Backend.prepare
run_model = Backend.run_model
run_node = Backend.run_node
supports_device = Backend.supports_device


# ================================================================================ conformance status
def classify(exc: BaseException) -> str:
    """One line: the cause of a failing node test (the excludes file groups tests by it)."""
    from trtjit.errors import UnsupportedOpError

    msg = str(exc)
    if isinstance(exc, UnsupportedOpError):
        ops = sorted(exc.unsupported)
        reasons = []
        for op in ops:
            for where in exc.unsupported[op]:
                m = re.search(r"\((.*)\)$", where)
                if m:
                    reasons.append(m.group(1))
        text = " ".join(reasons)
        if "dtype" in text or "strings" in text or "numpy dtype" in text or "holds strings" in text:
            return "dtype: " + _dtype_of(text)
        if "must be known at build time" in text:
            return "dynamic shape: data-dependent shape or run-time shape tensor"
        plain = [op for op in ops if not any(re.search(r"\(.*\)$", w) for w in exc.unsupported[op])]
        if plain:
            return "op not supported: " + ", ".join(plain)
        if "not in the default ONNX domain" in text:
            return "op not supported: " + ", ".join(ops) + " (other domain, no plugin registered)"
        return "variant not supported: " + ", ".join(ops) + f" ({_short(reasons[0]) if reasons else ''})"
    if "element type" in msg and "not support" in msg or "not supported (input element type" in msg:
        return "dtype: " + _dtype_of(msg)
    if "cast to" in msg and "dtype" in msg:
        return "dtype: " + _dtype_of(msg)
    if isinstance(exc, AssertionError):
        if "incorrect shape" in msg:
            return "wrong result: shape"
        if "dtype" in msg.lower() and "Mismatched" not in msg:
            return "wrong result: dtype"
        return "wrong result: numerics"
    if isinstance(exc, TrtjitError):
        return f"error: {type(exc).__name__}: {_short(msg)}"
    return f"crash: {type(exc).__name__}: {_short(msg)}"


def _short(s: str) -> str:
    s = s.strip().splitlines()[0] if s.strip() else ""
    s = re.sub(r"'[^']*'", "'…'", s)
    s = re.sub(r"\[[^\]]*\]", "[…]", s)
    return s[:110]


def _dtype_of(text: str) -> str:
    m = re.search(r"(UINT\d+|INT\d+|FLOAT8\w*|FLOAT4\w*|STRING|COMPLEX\d+|strings)", text) or \
        re.search(r"dtype (?:torch\.)?(\w+)", text)
    return m.group(1).upper() if m else "unsupported element type"


def _node_tests() -> list[Any]:
    from onnx.backend.test.loader import load_model_tests

    return load_model_tests(kind="node")


# onnx's model test kinds besides the node tests: their models and data ship in the onnx package ("real"
# runs the light versions of the zoo models with the outputs stored next to them)
MODEL_KINDS = {"real": "Real", "simple": "Simple", "pytorch-converted": "PyTorchConverted",
               "pytorch-operator": "PyTorchOperator"}


# the "real" kind's light zoo models take 224x224 inputs: tens of minutes each under the Triton CPU
# interpreter, so the conformance run lists them as not run unless asked for (--real), as on a GPU
NOT_RUN_REAL = ("not run here: light ONNX-zoo model at full 224x224 input, tens of minutes under the Triton CPU "
                "interpreter (run it on a GPU: python -m trtjit.onnx_backend --real --device CUDA)")


def model_tests(kinds: Sequence[str] = tuple(MODEL_KINDS), device: str = "CPU") -> dict[str, Any]:
    """{test name: test function} of onnx's model tests of ``kinds`` (as ``onnx.backend.test.BackendTest``
    runs them; the functions take the unittest instance, which they do not use)."""
    from collections import defaultdict

    from onnx.backend.test.loader import load_model_tests
    from onnx.backend.test.runner import Runner

    class _Models(Runner):
        def __init__(self) -> None:  # noqa: D107 - not Runner.__init__, which loads every kind
            self.backend = Backend
            self._parent_module = __name__
            self._include_patterns, self._exclude_patterns, self._xfail_patterns = set(), set(), set()
            self._test_kwargs = {}
            self._test_items = defaultdict(dict)
            for kind in kinds:
                for case in load_model_tests(kind=kind):
                    self._add_model_test(case, MODEL_KINDS[kind])

    runner = _Models()
    suffix = "_" + device.lower()
    return {n[:-len(suffix)]: it.func for cat in runner._test_items.values() for n, it in cat.items()
            if n.endswith(suffix)}


def run_model_test(fn: Any) -> tuple[str, str, float]:
    """(status, cause, seconds) of one model test function from ``model_tests``."""
    import time

    t0 = time.perf_counter()
    try:
        fn(None)
        return "pass", "", time.perf_counter() - t0
    except BaseException as e:  # noqa: BLE001 - classify every failure
        if isinstance(e, KeyboardInterrupt):
            raise
        return "fail", classify(e), time.perf_counter() - t0


def run_case(case: Any, device: str = "CPU") -> tuple[str, str, float]:
    """(status, cause, seconds) of one onnx node test case: status is 'pass' or 'fail'."""
    import time

    from onnx.backend.test.runner import Runner, _normalize_tensor

    t0 = time.perf_counter()
    try:
        rep = Backend.prepare(case.model, device)
        for inputs, ref in case.data_sets:
            ins = [_normalize_tensor(x) for x in inputs]
            refs = [_normalize_tensor(x) for x in ref]
            outs = rep.run(ins)
            Runner.assert_similar_outputs(refs, outs, rtol=case.rtol, atol=case.atol)
        return "pass", "", time.perf_counter() - t0
    except BaseException as e:  # noqa: BLE001 - classify every failure
        if isinstance(e, KeyboardInterrupt):
            raise
        return "fail", classify(e), time.perf_counter() - t0


def _worker(args: tuple[list[str], str, int, bool]) -> list[tuple[str, str, str, float]]:
    import warnings

    warnings.filterwarnings("ignore")
    names, device, seed, progress = args
    np.random.seed(seed)  # onnx draws the node tests' inputs from numpy's global generator
    wanted = set(names)
    out = []
    for case in _node_tests():
        if case.name in wanted:
            status, cause, sec = run_case(case, device)
            out.append((case.name, status, cause, sec))
            if progress:
                print(f"{status:4s} {sec:6.2f}s {case.name} {cause}", flush=True)
    if wanted - {r[0] for r in out}:
        for name, fn in model_tests(device=device).items():
            if name in wanted:
                status, cause, sec = run_model_test(fn)
                out.append((name, status, cause, sec))
                if progress:
                    print(f"{status:4s} {sec:6.2f}s {name} {cause}", flush=True)
    return out


def conformance(pattern: str = "", jobs: int = 1, device: str = "CPU", seed: int = 0, progress: bool = False,
                with_real: bool = False) -> list[tuple[str, str, str, float]]:
    """Run every node test whose name matches ``pattern``: (name, status, cause, seconds) each; ``seed``
    seeds the random inputs onnx generates."""
    import warnings

    warnings.filterwarnings("ignore")
    names = [c.name for c in _node_tests() if re.search(pattern, c.name)]
    real = set(model_tests(["real"]))
    names += [n for n in model_tests() if re.search(pattern, n) and (with_real or n not in real)]
    skipped = [(n, "fail", NOT_RUN_REAL, 0.0) for n in sorted(real) if re.search(pattern, n) and not with_real]
    if jobs <= 1:
        return sorted(_worker((names, device, seed, progress)) + skipped)
    import multiprocessing as mp

    chunks = [names[i::jobs] for i in range(jobs)]
    with mp.get_context("spawn").Pool(jobs) as pool:
        parts = pool.map(_worker, [(c, device, seed, progress) for c in chunks])
    res = [r for p in parts for r in p] + skipped
    return sorted(res)


def combine_runs(runs: list[list[tuple[str, str, str, float]]]) -> list[tuple[str, str, str, float]]:
    """One result per test from several runs: a test failing in some runs only is 'flaky'."""
    by: dict[str, list[tuple[str, str, str, float]]] = {}
    for run in runs:
        for r in run:
            by.setdefault(r[0], []).append(r)
    out = []
    for name, rs in sorted(by.items()):
        fails = [r for r in rs if r[1] == "fail"]
        sec = sum(r[3] for r in rs) / len(rs)
        if not fails:
            out.append((name, "pass", "", sec))
        elif len(fails) < len(rs):
            out.append((name, "fail", f"flaky: passes on some random inputs, else {fails[0][2]}", sec))
        else:
            out.append((name, "fail", fails[0][2], sec))
    return out


def missing_op_ranking(results: list[tuple[str, str, str, float]]) -> list[tuple[str, int]]:
    """Missing ops ranked by how many failing tests name only them (the tests adding them would unlock)."""
    counts: dict[str, int] = {}
    for _, status, cause, _ in results:
        if status == "fail" and cause.startswith("op not supported: "):
            what = cause[len("op not supported: "):]
            tail = " (other domain, no plugin registered)"
            key = what if what.endswith(tail) else " + ".join(what.split(", "))
            counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def write_excludes(results: list[tuple[str, str, str, float]], path: str) -> None:
    groups: dict[str, list[str]] = {}
    for name, status, cause, _ in results:
        if status == "fail":
            groups.setdefault(cause, []).append(name)
    order = sorted(groups, key=lambda c: (c.split(":")[0], -len(groups[c]), c))
    lines = ["# ONNX backend tests (onnx.backend.test: node tests and the pytorch-converted, pytorch-operator, simple",
             "# and real model tests) that trtjit does not pass or does not run here, grouped by cause.",
             "# One test name per line (without the _cpu/_cuda suffix); '## <cause>' starts a group.",
             "# tests/test_onnx_backend.py skips every test listed here; regenerate with",
             "#   python -m trtjit.onnx_backend --jobs 2 --write-excludes tests/onnx_backend_excludes.txt",
             f"# {sum(len(v) for v in groups.values())} tests excluded of {len(results)} tests.", ""]
    for cause in order:
        lines.append(f"## {cause} ({len(groups[cause])})")
        lines.extend(sorted(groups[cause]))
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def read_excludes(path: str) -> dict[str, str]:
    """{test name: cause} from an excludes file."""
    out: dict[str, str] = {}
    cause = "unspecified"
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("## "):
                cause = re.sub(r"\s*\(\d+\)$", "", line[3:])
            elif line and not line.startswith("#"):
                out[line.split()[0]] = cause
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import time

    p = argparse.ArgumentParser(prog="python -m trtjit.onnx_backend", description=__doc__.split("\n\n")[0])
    p.add_argument("--pattern", default="", help="regex on test names (default: all node tests)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--write-excludes", default=None, help="write the excludes file for the failing tests")
    p.add_argument("--verbose", action="store_true", help="print each test's status")
    p.add_argument("--progress", action="store_true", help="print each test's status as it finishes")
    p.add_argument("--real", action="store_true", help="also run the light zoo models (slow without a GPU)")
    p.add_argument("--device", default="CPU", help="CPU or CUDA")
    p.add_argument("--repeat", type=int, default=1, help="run N times (onnx draws fresh random inputs each "
                   "process): tests that pass only sometimes are reported as flaky")
    args = p.parse_args(argv)
    if args.real:
        import os
        import tempfile

        os.environ.setdefault("ONNX_MODELS", tempfile.mkdtemp(prefix="trtjit-onnx-models-"))
    t0 = time.perf_counter()
    runs = [conformance(args.pattern, args.jobs, args.device, seed=r, progress=args.progress, with_real=args.real)
            for r in range(max(args.repeat, 1))]
    res = combine_runs(runs)
    wall = (time.perf_counter() - t0) / len(runs)
    passed = sum(1 for r in res if r[1] == "pass")
    if args.verbose:
        for name, status, cause, sec in res:
            print(f"{status:4s} {sec:6.2f}s {name} {cause}")
    causes: dict[str, int] = {}
    for _, status, cause, _ in res:
        if status == "fail":
            top = cause.split(":")[0]
            causes[top] = causes.get(top, 0) + 1
    nodes = {c.name for c in _node_tests()}
    n_node = sum(1 for r in res if r[0] in nodes)
    p_node = sum(1 for r in res if r[0] in nodes and r[1] == "pass")
    print(f"node tests: {p_node} of {n_node} pass; model tests: {passed - p_node} of {len(res) - n_node} pass")
    print(f"{passed} of {len(res)} tests pass ({wall:.0f} s wall, {sum(r[3] for r in res):.0f} s in tests, "
          f"{args.jobs} job(s))")
    for c, n in sorted(causes.items(), key=lambda kv: -kv[1]):
        print(f"  {n:5d} {c}")
    print("missing ops by tests they would unlock:")
    for op, n in missing_op_ranking(res)[:40]:
        print(f"  {n:4d} {op}")
    if args.write_excludes:
        write_excludes(res, args.write_excludes)
        print(f"wrote {args.write_excludes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
