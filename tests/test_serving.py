"""trtjit.serving: the KServe v2 server, driven by the real tritonclient (HTTP and gRPC).

One in-process server (free loopback ports) serves a small repository of tiny engines for most tests;
the shutdown test starts its own, the CLI test runs `python -m trtjit serve` as a subprocess.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import importlib.util
import json
import re
import sys
import threading
import time
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import pytest
import torch
from conftest import assert_close_rel

import trtjit

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")
grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from trtjit.serving.config import ModelConfig  # noqa: E402
from trtjit.serving.errors import ServingError  # noqa: E402
from trtjit.serving.server import ServerThread  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("serve_load", ROOT / "benchmarks" / "serve_load.py")
serve_load = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("serve_load", serve_load)
_spec.loader.exec_module(serve_load)

DELAY_US = 100_000  # mlp's max queue delay: long enough that concurrent requests always meet in the queue
MAX_BODY = 1 << 20


class Pair(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a * b + a, torch.relu(a - b)


def _mlp(seed: int) -> torch.nn.Module:
    return serve_load.make_model(seed)


def _write(root: Path, name: str, engines: dict[str, trtjit.Engine], config: dict | None) -> None:
    for rel, e in engines.items():
        (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
        e.save(str(root / name / rel))
    if config is not None:
        (root / name / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("repo")
    m1, m2 = _mlp(0), _mlp(1)
    e8 = trtjit.compile(m1, (torch.randn(8, 16),))
    e4 = trtjit.compile(m1, (torch.randn(4, 16),))
    e8v2 = trtjit.compile(m2, (torch.randn(8, 16),))
    dyn = {"max_batch_size": 8, "instance_count": 2,
           "dynamic_batching": {"preferred_batch_size": [8], "max_queue_delay_microseconds": DELAY_US}}
    # mlp: two versions; version 1 also has an engine for batch 4 (batches of <= 4 run on it)
    _write(root, "mlp", {"1/model.plan": e8, "1/model.b4.plan": e4, "2/model.plan": e8v2}, dyn)
    _write(root, "plain", {"1/model.plan": e8}, {"max_batch_size": 8})
    _write(root, "spare", {"1/model.plan": e8}, None)  # unbatched: exactly [8, 16]
    _write(root, "pair", {"1/model.plan": trtjit.compile(Pair(), (torch.randn(4, 8), torch.randn(4, 8)))},
           {"output": [{"name": "sum"}, {"name": "diff"}]})
    _write(root, "broken", {"1/model.plan": e8}, None)
    plan = root / "broken" / "1" / "model.plan"
    plan.write_bytes(plan.read_bytes()[:-100])  # truncated
    return {"root": root, "mlp": {1: m1, 2: m2}}


@pytest.fixture(scope="module")
def server(repo):
    with ServerThread(repo["root"], max_body_bytes=MAX_BODY) as s:
        yield s


@pytest.fixture
def hc(server):
    c = httpclient.InferenceServerClient(server.http_url)
    yield c
    c.close()


@pytest.fixture
def gc(server):
    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


def _x(gen: torch.Generator, *shape: int) -> np.ndarray:
    return torch.randn(*shape, generator=gen).numpy()


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a))


def _ref(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(model).double()(torch.from_numpy(x).double()).float()


def _http_in(name: str, x: np.ndarray, binary: bool = True, datatype: str = "FP32") -> httpclient.InferInput:
    i = httpclient.InferInput(name, list(x.shape), datatype)
    i.set_data_from_numpy(x, binary_data=binary)
    return i


def _grpc_in(name: str, x: np.ndarray, datatype: str = "FP32") -> grpcclient.InferInput:
    i = grpcclient.InferInput(name, list(x.shape), datatype)
    i.set_data_from_numpy(x)
    return i


def _stats(client, model: str, version: str = "1") -> dict:
    return client.get_inference_statistics(model, version)["model_stats"][0]


def _raw(server, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict]:
    host, port = server.http_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else {}
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------- protocol
def test_http_health_metadata_and_infer(server, hc, repo, gen) -> None:
    assert hc.is_server_live() and hc.is_server_ready()
    meta = hc.get_server_metadata()
    assert meta["name"] == "trtjit" and "binary_tensor_data" in meta["extensions"]
    md = hc.get_model_metadata("mlp")
    assert md["versions"] == ["1", "2"] and md["platform"] == "trtjit_plan"
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    assert md["outputs"] == [{"name": "output_0", "datatype": "FP32", "shape": [-1, 8]}]
    assert md["parameters"]["engine_batch_sizes"] == [8] and "padded" in md["parameters"]["batch_padding"]
    assert hc.get_model_metadata("mlp", "1")["parameters"]["engine_batch_sizes"] == [4, 8]
    assert hc.is_model_ready("mlp") and hc.is_model_ready("mlp", "2") and not hc.is_model_ready("mlp", "7")
    assert not hc.is_model_ready("nope")
    for batch, binary in ((3, True), (6, False), (8, True)):  # 3 -> engine b4, 6 -> b8 padded, 8 -> b8
        x = _x(gen, batch, 16)
        out = httpclient.InferRequestedOutput("output_0", binary_data=binary)
        r = hc.infer("mlp", [_http_in("input", x, binary)], outputs=[out], request_id=f"r{batch}")
        assert r.get_response()["id"] == f"r{batch}" and r.get_response()["model_version"] == "2"
        assert_close_rel(_t(r.as_numpy("output_0")), _ref(repo["mlp"][2], x))
        r1 = hc.infer("mlp", [_http_in("input", x)], model_version="1")
        assert_close_rel(_t(r1.as_numpy("output_0")), _ref(repo["mlp"][1], x))
    x = _x(gen, 2, 16)  # compressed request and response
    r = hc.infer("mlp", [_http_in("input", x)], model_version="1", request_compression_algorithm="gzip",
                 response_compression_algorithm="deflate")
    assert_close_rel(_t(r.as_numpy("output_0")), _ref(repo["mlp"][1], x))
    cfg = hc.get_model_config("mlp")
    assert cfg["max_batch_size"] == 8 and cfg["dynamic_batching"]["preferred_batch_size"] == [8]
    # two inputs, two named outputs, unbatched, JSON in and out
    a, b = _x(gen, 4, 8), _x(gen, 4, 8)
    r = hc.infer("pair", [_http_in("a", a, False), _http_in("b", b, False)],
                 outputs=[httpclient.InferRequestedOutput("diff", binary_data=False)])
    assert [o["name"] for o in r.get_response()["outputs"]] == ["diff"]
    assert np.allclose(r.as_numpy("diff"), np.maximum(a - b, 0), atol=1e-6)
    assert np.allclose(hc.infer("pair", [_http_in("a", a), _http_in("b", b)]).as_numpy("sum"), a * b + a, atol=1e-5)


def test_grpc_health_metadata_config_stats_and_infer(server, gc, repo, gen) -> None:
    assert gc.is_server_live() and gc.is_server_ready()
    assert gc.get_server_metadata().name == "trtjit"
    md = gc.get_model_metadata("mlp", "1")
    assert md.versions == ["1"] and list(md.inputs[0].shape) == [-1, 16] and md.outputs[0].datatype == "FP32"
    assert gc.is_model_ready("mlp") and not gc.is_model_ready("mlp", "9") and not gc.is_model_ready("nope")
    cfg = gc.get_model_config("mlp", "1").config
    assert cfg.max_batch_size == 8 and list(cfg.dynamic_batching.preferred_batch_size) == [8]
    assert cfg.parameters["engine_batch_sizes"].string_value == "[4, 8]"
    x = _x(gen, 5, 16)
    r = gc.infer("mlp", [_grpc_in("input", x)], model_version="1", request_id="g1")
    assert r.get_response().id == "g1"
    assert_close_rel(_t(r.as_numpy("output_0")), _ref(repo["mlp"][1], x))
    st = gc.get_inference_statistics("mlp", "1").model_stats[0]
    assert st.inference_count >= 5 and st.execution_count >= 1 and st.inference_stats.success.count >= 1
    a, b = _x(gen, 4, 8), _x(gen, 4, 8)
    r = gc.infer("pair", [_grpc_in("a", a), _grpc_in("b", b)])
    assert np.allclose(r.as_numpy("sum"), a * b + a, atol=1e-5)


def test_grpc_stream_infer(server, gc, repo, gen) -> None:
    got: list = []
    done = threading.Event()

    def callback(result, error) -> None:
        got.append((result, error))
        if len(got) == 5:
            done.set()

    xs = [_x(gen, 1, 16) for _ in range(4)]
    gc.start_stream(callback=callback)
    try:
        for k, x in enumerate(xs):
            gc.async_stream_infer("mlp", [_grpc_in("input", x)], request_id=str(k), model_version="1")
        gc.async_stream_infer("mlp", [_grpc_in("input", _x(gen, 1, 15))], request_id="bad")
        assert done.wait(30)
    finally:
        gc.stop_stream()
    errors = [e for r, e in got if e is not None]
    assert len(errors) == 1 and "expected shape [-1, 16]" in str(errors[0])
    for r, e in got:
        if e is None:
            k = int(r.get_response().id)
            assert_close_rel(_t(r.as_numpy("output_0")), _ref(repo["mlp"][1], xs[k]))


# ------------------------------------------------------------------------------------------- batching
def test_dynamic_batcher_merges_concurrent_requests(server, repo, gen) -> None:
    n = 16
    xs = [_x(gen, 1 + k % 3, 16) for k in range(n)]
    client = httpclient.InferenceServerClient(server.http_url, concurrency=n)
    try:
        before = _stats(client, "mlp")
        pending = [client.async_infer("mlp", [_http_in("input", x)], model_version="1") for x in xs]
        results = [p.get_result() for p in pending]
        after = _stats(client, "mlp")
        plain0 = _stats(client, "plain")
        for r in [client.async_infer("plain", [_http_in("input", x)]) for x in xs[:4]]:
            r.get_result()
        plain1 = _stats(client, "plain")
    finally:
        client.close()
    for x, r in zip(xs, results):  # every request got its own rows back
        assert_close_rel(_t(r.as_numpy("output_0")), _ref(repo["mlp"][1], x))
    requests = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    execs = after["execution_count"] - before["execution_count"]
    assert requests == n
    assert after["inference_count"] - before["inference_count"] == sum(x.shape[0] for x in xs)
    assert execs < requests, f"{execs} executions for {requests} requests: the batcher merged nothing"
    assert plain1["execution_count"] - plain0["execution_count"] == 4  # no dynamic batching: one run each
    sizes = {b["batch_size"] for b in after["batch_stats"]}
    assert max(sizes) > 3, f"batch sizes executed: {sorted(sizes)}"


def test_queue_timeout(server, hc, gc, gen) -> None:
    x = _x(gen, 1, 16)
    with pytest.raises(InferenceServerException, match="Request timeout expired") as e:
        hc.infer("mlp", [_http_in("input", x)], timeout=1)
    assert e.value.status() == "503"
    with pytest.raises(InferenceServerException, match="Request timeout expired") as e:
        gc.infer("mlp", [_grpc_in("input", x)], timeout=1)
    assert e.value.status() == "StatusCode.UNAVAILABLE"
    assert hc.infer("mlp", [_http_in("input", x)], timeout=10_000_000).as_numpy("output_0").shape == (1, 8)


def test_config_validation_messages(tmp_path) -> None:
    ok = ModelConfig.parse("m", {"max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [2, 4]},
                                 "instance_group": [{"count": 3, "kind": "KIND_GPU"}]})
    assert ok.instance_count == 3 and ok.dynamic_batching.preferred_batch_size == [2, 4]
    bad = [({"max_batch_size": -1}, "'max_batch_size' must be an integer >= 0"),
           ({"dynamic_batching": {}}, "needs 'max_batch_size' > 0"),
           ({"max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [8]}}, "exceed 'max_batch_size' 4"),
           ({"max_batch_sise": 4}, "unknown key(s) ['max_batch_sise']"),
           ({"instance_count": 0}, "'instance_count' must be an integer >= 1"),
           ({"platform": "onnxruntime_onnx"}, "runs only trtjit engines")]
    for raw, msg in bad:
        with pytest.raises(ServingError) as e:
            ModelConfig.parse("m", raw, "config.json")
        assert msg in str(e.value) and "model 'm'" in str(e.value)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ServingError, match="is not valid JSON"):
        ModelConfig.from_dir(tmp_path / "m")


# ------------------------------------------------------------------------------------------- errors
def test_http_errors_and_server_keeps_serving(server, hc, gen) -> None:
    infer = "/v2/models/mlp/versions/1/infer"
    cases = [
        (infer, b"{not json", {}, 400, "malformed JSON"),
        (infer, b"[1, 2]", {}, 400, "must be a JSON object"),
        (infer, json.dumps({"inputs": []}).encode(), {}, 400, "non-empty 'inputs'"),
        (infer, b'{"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", '
                b'"parameters": {"binary_data_size": 64}}]}',
         {"Inference-Header-Content-Length": "500"}, 400, "outside the request body"),
        (infer, json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32",
                                        "data": [1.0] * 15}]}).encode(), {}, 400, "15 data elements"),
        (infer, json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32",
                                        "data": ["a"] * 16}]}).encode(), {}, 400, "must be numbers"),
        (infer, json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP99",
                                        "data": [1.0] * 16}]}).encode(), {}, 400, "unknown datatype"),
        ("/v2/models/nope/infer", b"{}", {}, 404, "unknown model 'nope'"),
        ("/v2/models/mlp/versions/7/infer", b"{}", {}, 404, "has no version '7'"),
        ("/v2/models/mlp/versions/1/bogus", b"{}", {}, 404, "no such endpoint"),
        (infer, b"x" * (MAX_BODY + 1), {}, 413, "exceeds the server's limit"),
    ]
    for path, body, headers, status, msg in cases:
        code, err = _raw(server, "POST", path, body, headers)
        assert (code, msg in err.get("error", "")) == (status, True), (path, body[:80], code, err)
    code, err = _raw(server, "GET", "/v2/models/nope")
    assert code == 404 and "unknown model 'nope'" in err["error"]
    x = _x(gen, 2, 16)
    client_cases = [
        ([_http_in("input", _x(gen, 2, 15))], "expected shape [-1, 16]"),
        ([_http_in("input", x.astype(np.float64), datatype="FP64")], "expected datatype FP32, got FP64"),
        ([_http_in("input", _x(gen, 9, 16))], "batch size 9 is outside 1..8"),
        ([_http_in("input", x), _http_in("extra", x)], "unexpected input 'extra'"),
        ([_http_in("input", x), _http_in("input", x)], "given more than once"),
    ]
    for inputs, msg in client_cases:
        with pytest.raises(InferenceServerException) as e:
            hc.infer("mlp", inputs, model_version="1")
        assert e.value.status() == "400" and msg in e.value.message(), e.value.message()
    with pytest.raises(InferenceServerException, match="missing input") as e:
        hc.infer("pair", [_http_in("a", _x(gen, 4, 8))])
    with pytest.raises(InferenceServerException, match="unknown output 'nope'"):
        hc.infer("mlp", [_http_in("input", x)], outputs=[httpclient.InferRequestedOutput("nope")])
    with pytest.raises(InferenceServerException, match="exceeds the server's limit") as e:
        hc.infer("mlp", [_http_in("input", _x(gen, 8, 40_000))])
    assert e.value.status() == "413"
    assert hc.is_server_ready()
    assert hc.infer("mlp", [_http_in("input", x)]).as_numpy("output_0").shape == (2, 8)
    failures = _stats(hc, "mlp")["inference_stats"]["fail"]["count"]
    assert failures >= len(client_cases)  # requests that reached the model (not the unparsable ones)


def test_grpc_errors(server, gc, gen) -> None:
    x = _x(gen, 2, 16)
    cases = [("nope", "", [_grpc_in("input", x)], "StatusCode.NOT_FOUND", "unknown model 'nope'"),
             ("mlp", "3", [_grpc_in("input", x)], "StatusCode.NOT_FOUND", "has no version '3'"),
             ("mlp", "", [_grpc_in("input", _x(gen, 2, 17))], "StatusCode.INVALID_ARGUMENT", "expected shape"),
             ("mlp", "", [_grpc_in("input", x.astype(np.int32), "INT32")], "StatusCode.INVALID_ARGUMENT",
              "expected datatype FP32, got INT32"),
             ("mlp", "", [_grpc_in("input", _x(gen, 8, 40_000))], "StatusCode.RESOURCE_EXHAUSTED", "")]
    for model, version, inputs, status, msg in cases:
        with pytest.raises(InferenceServerException) as e:
            gc.infer(model, inputs, model_version=version)
        assert e.value.status() == status and msg in e.value.message(), (status, e.value.message())
    with pytest.raises(InferenceServerException, match="unknown model") as e:
        gc.get_model_metadata("nope")
    assert gc.is_server_ready() and gc.infer("mlp", [_grpc_in("input", x)]).as_numpy("output_0").shape == (2, 8)


# ------------------------------------------------------------------------------------------- repository, metrics
def test_repository_index_load_unload(server, hc, gc, gen) -> None:
    index = {(m["name"], m.get("version", "")): m for m in hc.get_model_repository_index()}
    assert index[("mlp", "1")]["state"] == "READY" and index[("mlp", "2")]["state"] == "READY"
    broken = index[("broken", "")]
    assert broken["state"] == "UNAVAILABLE" and "truncated" in broken["reason"]
    assert all(m["state"] == "READY" for m in hc.get_model_repository_index() if m["name"] != "broken")
    x = _x(gen, 8, 16)
    assert hc.infer("spare", [_http_in("input", x)]).as_numpy("output_0").shape == (8, 8)
    hc.unload_model("spare")
    assert not hc.is_model_ready("spare") and not gc.is_model_ready("spare")
    with pytest.raises(InferenceServerException, match="not ready .*unloaded") as e:
        hc.infer("spare", [_http_in("input", x)])
    assert e.value.status() == "404"
    gc.load_model("spare", config=json.dumps({"max_batch_size": 8}))  # reload with another config
    assert hc.get_model_metadata("spare")["inputs"][0]["shape"] == [-1, 16]
    assert hc.infer("spare", [_http_in("input", x[:3])]).as_numpy("output_0").shape == (3, 8)
    gc.unload_model("spare")
    hc.load_model("spare")
    assert hc.get_model_metadata("spare")["inputs"][0]["shape"] == [8, 16]
    with pytest.raises(InferenceServerException, match="not in the repository") as e:
        hc.load_model("nope")
    assert e.value.status() == "404"
    with pytest.raises(InferenceServerException, match="truncated"):
        gc.load_model("broken")
    with pytest.raises(InferenceServerException, match="bad configuration"):
        hc.load_model("spare", config='{"max_batch_size": "eight"}')
    assert hc.is_model_ready("spare")  # a failed reload keeps the loaded model


def test_metrics_endpoint(server, hc, gen) -> None:
    hc.infer("plain", [_http_in("input", _x(gen, 2, 16))])
    text = urlopen(server.metrics_url, timeout=10).read().decode()
    for name in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                 "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_infer_duration_us"):
        assert f"# TYPE {name} counter" in text
        m = re.search(rf'^{name}\{{model="plain",version="1"\}} (\S+)$', text, re.M)
        assert m, name
    values = serve_load.scrape(server.metrics_url)
    assert values[("nv_inference_request_success", "plain")] >= 1
    assert values[("nv_inference_count", "plain")] >= 2
    assert values[("nv_inference_compute_infer_duration_us", "plain")] > 0


# ------------------------------------------------------------------------------------------- load, shutdown, CLI
def test_small_load_loses_nothing(server, repo, capsys) -> None:
    rows = []
    for model in ("plain", "mlp"):
        r = asyncio.run(serve_load.run_load(server.http_url, model, concurrency=12, requests=48, duration=30,
                                            reference=repo["mlp"][2 if model == "mlp" else 1],
                                            metrics_url=server.metrics_url))
        assert (r.sent, r.ok, r.errors, r.wrong, r.server_success) == (48, 48, [], 0, 48)
        rows.append(r)
    assert rows[1].execs < rows[0].execs == 48
    g = asyncio.run(serve_load.run_load(server.grpc_url, "mlp", protocol="grpc", concurrency=8, requests=24,
                                        duration=30, batch=2, reference=repo["mlp"][2]))
    assert (g.ok, g.errors) == (24, [])
    with capsys.disabled():
        print("\n" + serve_load.HEADER + "\n" + "\n".join(r.row() for r in [*rows, g]))


def test_graceful_shutdown_finishes_requests_in_flight(repo, gen) -> None:
    s = ServerThread(repo["root"], models=["mlp"]).start()
    url = s.http_url
    client = httpclient.InferenceServerClient(url, concurrency=4)
    xs = [_x(gen, 1, 16) for _ in range(4)]
    pending = [client.async_infer("mlp", [_http_in("input", x)], model_version="1") for x in xs]
    end = time.monotonic() + 10
    while s.server.core.inflight < 4 and time.monotonic() < end:
        time.sleep(0.005)
    assert s.server.core.inflight == 4  # queued: the batcher waits DELAY_US for more
    assert s.stop(timeout=30) is True
    for x, p in zip(xs, pending):
        assert_close_rel(_t(p.get_result().as_numpy("output_0")), _ref(repo["mlp"][1], x))
    client.close()
    with pytest.raises(Exception):  # noqa: B017  (connection refused: the server is gone)
        httpclient.InferenceServerClient(url, connection_timeout=2).is_server_live()


def test_cli_serve_subprocess(repo, gen) -> None:
    proc = serve_load.ServeProcess(repo["root"], ["--model-control-mode", "explicit", "--load-model", "plain"])
    try:
        c = httpclient.InferenceServerClient(proc.http_url)
        x = _x(gen, 2, 16)
        assert_close_rel(_t(c.infer("plain", [_http_in("input", x)]).as_numpy("output_0")),
                         _ref(repo["mlp"][1], x))
        assert not c.is_model_ready("mlp")
        assert "nv_inference_exec_count" in urlopen(proc.metrics_url, timeout=10).read().decode()
        c.close()
    finally:
        code, out = proc.stop()
    assert code == 0 and "trtjit serve: stopped" in out, out
