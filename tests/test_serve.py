"""`babeltune serve` and the endpoint backend, talking over loopback: a real HTTP server on 127.0.0.1
on a random port. Also the client's retries, timeouts and refusals against a scripted server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from babeltune.data.records import Message
from babeltune.generate import (
    DecodingSettings,
    EndpointBackend,
    EndpointConfig,
    EndpointError,
    GenerationRequest,
    GenerationResult,
    LocalBackend,
    read_generations,
    run_generation,
)
from babeltune.generate.server import BatchingWorker
from tests.loopback import QuietHandler, loopback_server, serving
from tests.test_generate_runner import make_records

TOKEN = "s3cret-token"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def served(tiny_tok: Any, tiny_lm: Any) -> Iterator[tuple[Any, LocalBackend]]:
    backend = LocalBackend(tiny_lm, tiny_tok, batch_size=4, model_name="tiny")
    with serving(backend, token=TOKEN) as server:
        yield server, backend


def _client(url: str, monkeypatch: pytest.MonkeyPatch, token: str | None = TOKEN, **kw: Any) -> EndpointBackend:
    if token is None:
        monkeypatch.delenv("BT_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("BT_TEST_KEY", token)
    return EndpointBackend(EndpointConfig(url=url, api_key_env="BT_TEST_KEY", concurrency=3, backoff=0.01, **kw))


def test_server_binds_loopback_and_lists_its_model(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = served
    assert server.server_address[0] == "127.0.0.1" and server.server_address[1] > 0
    client = _client(server.url, monkeypatch)
    assert client.list_models() == ["tiny"]
    assert client.identity() == {"backend": "endpoint", "url": server.url, "model": "tiny"}


@pytest.mark.parametrize("settings", [
    DecodingSettings(max_new_tokens=8),  # greedy, repetition penalty 1.2
    DecodingSettings(max_new_tokens=8, temperature=1.0, repetition_penalty=1.0, seed=5),  # seeded sampling
])
def test_served_generations_equal_local_ones(served: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             settings: DecodingSettings) -> None:
    server, backend = served
    records = make_records(7)
    local = read_generations(run_generation(records, backend, settings, tmp_path / "local.jsonl").path)
    remote = read_generations(run_generation(records, _client(server.url, monkeypatch), settings,
                                             tmp_path / "remote.jsonl").path)
    by_id = {r.id: r for r in remote}
    for row in local:
        other = by_id[row.id]
        assert other.error is None
        assert other.response == row.response
        assert (other.prompt_tokens, other.completion_tokens) == (row.prompt_tokens, row.completion_tokens)
        assert other.extra["system_fingerprint"] == backend.fingerprint[:32]


def test_wrong_token_is_a_recorded_failure_without_retries(served: Any, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    server, _ = served
    records = make_records(2)
    client = _client(server.url, monkeypatch, token="wrong", model="tiny", max_retries=3)
    summary = run_generation(records, client, DecodingSettings(max_new_tokens=4), tmp_path / "g.jsonl")
    assert summary.failed == 2 and summary.generated == 0
    rows = read_generations(tmp_path / "g.jsonl")
    assert all(r.error == f"{server.url}/chat/completions: HTTP 401: missing or wrong bearer token"
               and r.extra["attempts"] == 1 for r in rows)
    with pytest.raises(EndpointError, match="HTTP 401"):
        _client(server.url, monkeypatch, token=None).list_models()


def _post(url: str, body: Any, token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_server_answers_openai_shape_and_refuses_bad_requests(served: Any) -> None:
    server, _ = served
    ok_body = {"model": "tiny", "messages": [{"role": "user", "content": "Habari za leo?"}], "max_tokens": 3,
               "temperature": 0}
    status, body = _post(server.url, ok_body)
    assert status == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 3
    bad = [
        ({**ok_body, "stream": True}, "stream"),
        ({**ok_body, "n": 2}, "n=1"),
        ({**ok_body, "model": "other"}, "unknown model"),
        ({**ok_body, "messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({**ok_body, "messages": []}, "messages"),
        ({**ok_body, "max_tokens": 0}, "max_tokens"),
        ({**ok_body, "temperature": -1}, "temperature"),
    ]
    for request, fragment in bad:
        status, body = _post(server.url, request)
        assert status == 400, request
        assert fragment in body["error"]["message"]


class _Recorder:
    """A backend that records the batches it is asked to answer."""

    name = "recorder"
    batch_size = 8

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def generate(self, requests: list[GenerationRequest], settings: DecodingSettings) -> Iterator[GenerationResult]:
        self.batches.append([r.id for r in requests])
        for r in requests:
            yield GenerationResult(r.id, f"answer {r.id}", "stop", 1, 1)


def test_worker_batches_queued_requests_by_settings() -> None:
    recorder = _Recorder()
    worker = BatchingWorker(recorder, max_batch=8, wait_s=1.0)  # type: ignore[arg-type]
    greedy, sampled = DecodingSettings(max_new_tokens=4), DecodingSettings(max_new_tokens=4, temperature=1.0)
    futures = [worker.submit(GenerationRequest(f"r{i}", (Message("user", "hi"),)), greedy if i < 3 else sampled)
               for i in range(5)]
    results = [f.result(timeout=30) for f in futures]
    worker.stop()
    assert [r.text for r in results] == [f"answer r{i}" for i in range(5)]
    assert sorted(map(sorted, recorder.batches)) == [["r0", "r1", "r2"], ["r3", "r4"]]


class _Scripted(QuietHandler):
    """Answers POSTs with the next scripted (status, delay, headers) and records what it got."""

    script: ClassVar[list[tuple[int, float, dict[str, str]]]] = []
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        self._reply(200, {"object": "list", "data": [{"id": "scripted"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        status, delay, headers = type(self).script.pop(0) if type(self).script else (200, 0.0, {})
        time.sleep(delay)
        if status == 200:
            self._reply(200, {"choices": [{"message": {"role": "assistant", "content": "fine"},
                                           "finish_reason": "length"}],
                              "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
        else:
            self._reply(status, {"error": {"message": f"scripted {status}"}}, headers)

    def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.send_body(status, json.dumps(body), content_type=None, headers=headers)


@pytest.fixture
def scripted() -> Iterator[str]:
    _Scripted.script, _Scripted.seen = [], []
    with loopback_server(_Scripted) as url:
        yield f"{url}/v1"


def _one(client: EndpointBackend, settings: DecodingSettings | None = None) -> GenerationResult:
    request = GenerationRequest("x", (Message("user", "hello"),))
    return next(iter(client.generate([request], settings or DecodingSettings(max_new_tokens=4))))


def test_retries_on_429_and_5xx_then_succeeds(scripted: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _Scripted.script = [(503, 0, {}), (429, 0, {"Retry-After": "0"}), (502, 0, {})]
    result = _one(_client(scripted, monkeypatch, max_retries=3))
    assert result.error is None and result.text == "fine" and result.finish_reason == "length"
    assert result.extra["attempts"] == 4 and len(_Scripted.seen) == 4
    sent = _Scripted.seen[0]
    assert sent["model"] == "scripted" and sent["max_tokens"] == 4 and sent["temperature"] == 0.0
    assert sent["repetition_penalty"] == 1.2 and "top_k" not in sent and isinstance(sent["seed"], int)


def test_out_of_retries_and_client_errors_are_recorded_failures(scripted: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _Scripted.script = [(500, 0, {})] * 3
    result = _one(_client(scripted, monkeypatch, max_retries=2))
    assert result.finish_reason == "error" and "HTTP 500: scripted 500" in (result.error or "")
    assert result.extra["attempts"] == 3
    _Scripted.script = [(400, 0, {})]
    result = _one(_client(scripted, monkeypatch, max_retries=5))
    assert result.error == f"{scripted}/chat/completions: HTTP 400: scripted 400" and result.extra["attempts"] == 1


def test_timeouts_are_retried_then_recorded(scripted: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _Scripted.script = [(200, 2.0, {}), (200, 2.0, {})]
    result = _one(_client(scripted, monkeypatch, timeout=0.3, max_retries=1))
    assert result.finish_reason == "error" and result.extra["attempts"] == 2
    assert "timed out" in (result.error or "").lower()


def test_unreachable_endpoint_fails_before_anything_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}/v1", monkeypatch)
    with pytest.raises(EndpointError, match="cannot reach the endpoint"):
        client.identity()
