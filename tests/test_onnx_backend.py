"""onnx's own conformance suite (``onnx.backend.test``) against trtjit's ONNX backend
(``trtjit.onnx_backend.Backend``) on the CPU: the node tests the onnx package generates and its model tests
(pytorch-converted, pytorch-operator, simple, and real: the light zoo models), as
``onnx.backend.test.BackendTest`` runs them.

Every test trtjit does not pass yet (or does not run here: the light zoo models take tens of minutes each
under the Triton CPU interpreter) is listed, with its cause, in ``tests/onnx_backend_excludes.txt`` (one
file, grouped by cause) and shows up here as skipped with that cause.

CI time: by default a deterministic half of the tests runs (selected by a hash of the test name, so it is
the same set every run). Environment:

* ``TRTJIT_ONNX_BACKEND=full``: every test;
* ``TRTJIT_ONNX_BACKEND=off``: none;
* ``TRTJIT_ONNX_BACKEND_SHARD=i/n``: shard ``i`` of ``n`` of the full set (for parallel CI jobs).

``python -m trtjit.onnx_backend --jobs 2`` prints the pass counts, the causes and the missing ops ranked by
the tests they would unlock; ``--write-excludes tests/onnx_backend_excludes.txt`` regenerates the file.
"""

from __future__ import annotations

import os
import tempfile
import unittest
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx.backend.test.loader import load_model_tests  # noqa: E402
from onnx.backend.test.runner import Runner  # noqa: E402

from trtjit.onnx_backend import Backend, model_tests, read_excludes  # noqa: E402

EXCLUDES = Path(__file__).with_name("onnx_backend_excludes.txt")
MODE = os.environ.get("TRTJIT_ONNX_BACKEND", "sample").lower()
SHARD = os.environ.get("TRTJIT_ONNX_BACKEND_SHARD", "")
SAMPLE_EVERY = 2
_state = np.random.get_state()
np.random.seed(0)  # onnx draws the tests' inputs from numpy's global generator: the same inputs every run
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _CASES = load_model_tests(kind="node")
np.random.set_state(_state)


def _selected(name: str) -> bool:
    h = zlib.crc32(name.encode())
    if SHARD:
        i, n = (int(p) for p in SHARD.split("/"))
        return h % n == i
    if MODE == "full":
        return True
    if MODE == "off":
        return False
    return h % SAMPLE_EVERY == 0


class _NodeTests(Runner):
    """onnx's backend-test runner restricted to the node tests (the model tests come from
    ``trtjit.onnx_backend.model_tests``)."""

    def __init__(self) -> None:  # noqa: D107 - deliberately not calling Runner.__init__ (loads every kind)
        from collections import defaultdict

        self.backend = Backend
        self._parent_module = __name__
        self._include_patterns, self._exclude_patterns, self._xfail_patterns = set(), set(), set()
        self._test_kwargs = {}
        self._test_items = defaultdict(dict)
        for case in _CASES:
            self._add_model_test(case, "Node")


def _build(items: dict, name: str) -> type[unittest.TestCase]:
    excluded = read_excludes(str(EXCLUDES))
    cls = type(name, (unittest.TestCase,), {"__module__": __name__})
    for base, func in sorted(items.items()):
        if base in excluded:
            fn = unittest.skip(f"excluded: {excluded[base]}")(func)
        elif _selected(base):
            fn = func
        else:
            continue
        setattr(cls, base + "_cpu", fn)
    return cls


def _node_items() -> dict:
    runner = _NodeTests()
    items = {n: it for cat in runner._test_items.values() for n, it in cat.items()}
    return {n[: -len("_cpu")]: it.func for n, it in items.items() if n.endswith("_cpu")}


TestOnnxBackendNode = _build(_node_items(), "TestOnnxBackendNode")
# the "real" light zoo models write their generated inputs under ONNX_MODELS
os.environ.setdefault("ONNX_MODELS", tempfile.mkdtemp(prefix="trtjit-onnx-models-"))
_MODELS = model_tests()
TestOnnxBackendModels = _build(_MODELS, "TestOnnxBackendModels")


def test_excludes_file_is_well_formed() -> None:
    """Every excluded test exists in the installed onnx, once, under a cause."""
    excluded = read_excludes(str(EXCLUDES))
    names = {c.name for c in _CASES} | set(_MODELS)
    unknown = sorted(set(excluded) - names)
    assert not unknown, f"excludes name tests the installed onnx does not have: {unknown[:10]}"
    lines = [ln.strip() for ln in EXCLUDES.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    tests = [ln for ln in lines if not ln.startswith("##")]
    assert len(tests) == len(set(tests)), "a test is listed twice"


def test_classification_and_excludes_round_trip(tmp_path) -> None:
    from trtjit.errors import UnsupportedOpError
    from trtjit.onnx_backend import classify, combine_runs, missing_op_ranking, write_excludes

    assert classify(UnsupportedOpError({"Scan": ["loop1"]})) == "op not supported: Scan"
    assert classify(UnsupportedOpError({"Pad": ["p (mode='foo')"]})).startswith("variant not supported: Pad")
    assert classify(UnsupportedOpError({"Reshape": ["r (shape ('s') must be known at build time, x)"]})) == \
        "dynamic shape: data-dependent shape or run-time shape tensor"
    assert classify(AssertionError("Output 0 has incorrect shape")) == "wrong result: shape"
    runs = [[("test_a", "pass", "", 1.0), ("test_b", "fail", "op not supported: Scan", 1.0)],
            [("test_a", "fail", "wrong result: numerics", 1.0), ("test_b", "fail", "op not supported: Scan", 1.0)]]
    res = combine_runs(runs)
    assert res[0][2].startswith("flaky: ") and res[1][2] == "op not supported: Scan"
    assert missing_op_ranking(res) == [("Scan", 1)]
    path = tmp_path / "ex.txt"
    write_excludes(res, str(path))
    assert read_excludes(str(path)) == {"test_a": res[0][2], "test_b": "op not supported: Scan"}
