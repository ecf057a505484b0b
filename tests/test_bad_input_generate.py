"""Bad input and faults in `babeltune generate`, `serve` and `judge`: a table of cases, each checked for
its exit code, a message naming the endpoint / record / field, no traceback, and no row lost.

The misbehaving OpenAI-compatible server is written here with the standard library and listens on
127.0.0.1 (an ephemeral port); its base URL `http://127.0.0.1:PORT/<mode>/v1` picks the misbehaviour.
"""

from __future__ import annotations

import functools
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest

from babeltune.cli import main
from babeltune.generate import DecodingSettings, GenerationRequest, GenerationResult, read_generations
from babeltune.generate.runner import GenerationFileError, run_generation
from babeltune.generate.server import BindError, ChatServer, start_server
from tests.loopback import QuietHandler, loopback_server, serving
from tests.test_generate_runner import _CHILD, EchoBackend, make_records

VERDICT = "[[1]]"
"""What the server answers when it behaves: a valid pairwise verdict, and a fine response."""

_HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


class _Misbehaving(QuietHandler):
    """An OpenAI-compatible server whose first path segment says how to misbehave."""

    protocol_version = "HTTP/1.1"
    posts: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        if self.path.split("/")[1] == "models-html":
            self.send_body(200, _HTML, "text/html")
        else:
            self.send_body(200, json.dumps({"object": "list", "data": [{"id": "misbehaving"}]}).encode())

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode = self.path.split("/")[1]
        count = type(self).posts[mode] = type(self).posts.get(mode, 0) + 1
        content = VERDICT
        if mode == "slow":  # a slow, well-behaved endpoint whose answer depends on the prompt
            time.sleep(0.1)
            content = f"answer to: {request['messages'][-1]['content']}"
        ok = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
        if mode in ("ok", "slow") or (mode == "flaky-html" and count % 2 == 0):
            self.send_body(200, json.dumps(ok).encode())
        elif mode in ("html", "flaky-html"):
            self.send_body(200, _HTML, "text/html")
        elif mode == "latin1":
            self.send_body(200, '{"choices": "caf\u00e9"}'.encode("latin-1"))
        elif mode == "nochoices":
            self.send_body(200, json.dumps({"id": "cmpl-1", "object": "chat.completion"}).encode())
        elif mode == "401":
            self.send_body(401, json.dumps({"error": {"message": "invalid api key"}}).encode())
        else:
            self.send_body(500, json.dumps({"error": {"message": "scripted 500"}}).encode())


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT: append /<mode>/v1."""
    with loopback_server(_Misbehaving) as url:
        yield url


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


RECORDS = [  # a-en and b-en: the same prompt under two ids
    {"id": "a-en", "pid": "a", "lang": "en", "messages": [{"role": "user", "content": "Say hello."}]},
    {"id": "b-en", "pid": "b", "lang": "en", "messages": [{"role": "user", "content": "Say hello."}]},
    {"id": "c-es", "pid": "c", "lang": "es", "messages": [{"role": "user", "content": "Di hola."}]},
]


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    """Exit code and everything printed or logged; an exception escaping `main` fails the test."""
    code = main(argv)
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "Traceback" not in text, text
    return code, text


@dataclass(frozen=True)
class GenerateCase:
    name: str
    mode: str
    """The endpoint's misbehaviour (or 'unreachable'); '' sends no request at all."""
    args: tuple[str, ...]
    exit_code: int
    says: tuple[str, ...]
    """Substrings of the output ({url} is the endpoint's base URL)."""
    rows: int
    """Rows in the output file afterwards."""
    failed_rows: int = 0
    attempts: int | None = None
    """Attempts recorded in each failed row."""
    status: int | None = None
    """HTTP status recorded in each failed row."""
    out_is_a_folder: bool = False


GENERATE_CASES = [
    GenerateCase("duplicate prompts get a row each", "ok", (), 0, ("3 prompts: 0 reused, 3 generated (1 sharing",), 3),
    GenerateCase("200 HTML reply: retried, then failed rows", "html", (), 1,
                 ("{url}/chat/completions: HTTP 200, content type text/html", "body is not JSON", "502 Bad Gateway",
                  "failed: record 'a-en'", "failed: record 'c-es'"), 3, 3, 2, 200),
    GenerateCase("200 non-UTF-8 reply", "latin1", (), 1, ("{url}/chat/completions: HTTP 200", "not UTF-8",
                                                          "failed: record 'b-en'"), 3, 3, 2, 200),
    GenerateCase("200 JSON without choices", "nochoices", (), 1,
                 ("{url}/chat/completions: HTTP 200", "not a chat completion", "'choices'", "record 'c-es'"), 3, 3, 2,
                 200),
    GenerateCase("a bad reply then a good one", "flaky-html", (), 0, ("3 generated",), 3),
    GenerateCase("401: failed rows without retries", "401", (), 1,
                 ("{url}/chat/completions: HTTP 401: invalid api key", "record 'a-en'"), 3, 3, 1, 401),
    GenerateCase("5xx: retried, then failed rows", "500", (), 1, ("HTTP 500: scripted 500", "record 'c-es'"),
                 3, 3, 2, 500),
    GenerateCase("unreachable endpoint: error before anything is sent", "unreachable", ("--endpoint-model", ""), 2,
                 ("cannot reach the endpoint {url}",), 0),
    GenerateCase("unreachable endpoint, model named: error before anything is sent", "unreachable", (), 2,
                 ("cannot reach the endpoint {url}",), 0),
    GenerateCase("/models answers HTML", "models-html", ("--endpoint-model", ""), 2,
                 ("{url}/models: HTTP 200, content type text/html", "OpenAI-compatible"), 0),
    GenerateCase("--out is a folder", "", (), 2, ("--out ", "gen.jsonl: is a folder; give a file path"), 0,
                 out_is_a_folder=True),
    GenerateCase("NaN temperature", "", ("--temperature", "nan"), 2, ("temperature", "finite"), 0),
    GenerateCase("NaN top_p through --set", "", ("--set", "decoding.top_p=nan"), 2, ("top_p", "finite"), 0),
    GenerateCase("infinite repetition penalty", "", ("--repetition-penalty", "inf"), 2,
                 ("repetition_penalty", "finite"), 0),
]


@pytest.mark.parametrize("case", GENERATE_CASES, ids=[c.name for c in GENERATE_CASES])
def test_generate_bad_endpoints_and_settings(case: GenerateCase, endpoint: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             caplog: pytest.LogCaptureFixture) -> None:
    data = _write_jsonl(tmp_path / "prompts.jsonl", RECORDS)
    out = tmp_path / "gen.jsonl"
    if case.out_is_a_folder:
        out.mkdir()
    base = (f"http://127.0.0.1:{_closed_port()}/v1" if case.mode == "unreachable"
            else f"{endpoint}/{case.mode or 'ok'}/v1")
    _Misbehaving.posts.pop(case.mode, None)
    code, text = _run(["generate", "--endpoint", base, "--endpoint-model", "m", "--data", str(data), "--out", str(out),
                       "--max-retries", "1", "--concurrency", "1", "--timeout", "5",
                       "--set", "endpoint.backoff=0.01", *case.args], capsys, caplog)
    assert code == case.exit_code, text
    for part in case.says:
        assert part.format(url=base) in text, text
    rows = read_generations(out) if out.is_file() else []
    assert len(rows) == case.rows
    if rows:
        assert sorted(r.id for r in rows) == ["a-en", "b-en", "c-es"]
    failed = [r for r in rows if r.error is not None]
    assert len(failed) == case.failed_rows
    for row in failed:
        assert base in row.error and row.finish_reason == "error"
        assert (row.extra["attempts"], row.extra["status"]) == (case.attempts, case.status)
    if case.mode == "ok":
        assert _Misbehaving.posts["ok"] == 2, "greedy: one request serves both records with the same prompt"
        assert {r.response for r in rows} == {VERDICT}
        assert rows[1 if rows[0].id == "a-en" else 0].extra.get("same_prompt_as") in (None, "a-en")
        code, text = _run(["generate", "--endpoint", base, "--endpoint-model", "m", "--data", str(data),
                           "--out", str(out)], capsys, caplog)
        assert code == 0 and "3 prompts: 3 reused, 0 generated" in text, text
        assert len(read_generations(out)) == 3 and _Misbehaving.posts["ok"] == 2


def test_overwrite_waits_for_the_lock_and_names_the_writer(tmp_path: Path) -> None:
    """--overwrite while another process writes the file: refused, naming that process; nothing it wrote
    is lost (before: the file was unlinked first and both runs reported success)."""
    out = tmp_path / "g.jsonl"
    n = 30
    code = _CHILD.format(tests=str(Path(__file__).parent), n=n, delay=0.03, dup=False, out=str(out))
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out.exists() and out.stat().st_size > 0):
            time.sleep(0.01)

        with pytest.raises(GenerationFileError, match=rf"another process is writing this file \(pid {child.pid} on "
                                                       rf"host {socket.gethostname()}"):
            run_generation(make_records(n), EchoBackend(tag="other"), DecodingSettings(max_new_tokens=8), out,
                           overwrite=True)
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    rows = read_generations(out)
    assert len(rows) == n and all(r.model["tag"] == "v1" for r in rows)
    assert not out.with_name("g.jsonl.lock").exists(), "the lock file is removed when its writer ends"


def test_generate_killed_mid_run_resumes_to_the_uninterrupted_rows(endpoint: str, tmp_path: Path) -> None:
    """`babeltune generate` against a slow endpoint, SIGKILLed mid-run, then run again: exactly the rows
    of an uninterrupted run (records sharing a prompt included), none lost, none twice."""
    prompts = [{"id": f"r{i:02d}-en", "pid": f"r{i:02d}", "lang": "en",
                "messages": [{"role": "user", "content": f"question {i // 2}"}]} for i in range(30)]
    data = _write_jsonl(tmp_path / "prompts.jsonl", prompts)
    url = f"{endpoint}/slow/v1"
    argv = ["generate", "--endpoint", url, "--endpoint-model", "m", "--data", str(data), "--concurrency", "2"]
    out = tmp_path / "killed.jsonl"
    child = subprocess.Popen([sys.executable, "-m", "babeltune.cli", *argv, "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and out.read_bytes().count(b"\n") >= 4):
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    written = out.read_bytes().count(b"\n")
    assert 4 <= written < 30, "the run should have been killed mid-run"
    assert main([*argv, "--out", str(out)]) == 0
    assert main([*argv, "--out", str(tmp_path / "whole.jsonl")]) == 0
    rows, whole = read_generations(out), read_generations(tmp_path / "whole.jsonl")
    assert len(rows) == 30 and sorted(r.id for r in rows) == [p["id"] for p in prompts]
    essentials = [(r.id, r.key, r.response, r.finish_reason, r.error) for r in rows]
    assert sorted(essentials) == sorted((r.id, r.key, r.response, r.finish_reason, r.error)
                                        for r in whole)
    assert all(r.response == f"answer to: {r.prompt}" for r in rows)


# --- babeltune serve -------------------------------------------------------------------------------------


class _StubBackend:
    """What ChatServer needs from a LocalBackend, without a model: answers 'ok'."""

    batch_size = 2
    fingerprint = "stub"
    model_name = "stub"

    def generate(self, requests: Sequence[GenerationRequest], settings: DecodingSettings) -> Iterator[GenerationResult]:
        for req in requests:
            yield GenerationResult(req.id, "ok", "stop", 3, 1)


@pytest.fixture(scope="module")
def served() -> Iterator[ChatServer]:
    with serving(cast(Any, _StubBackend()), served_name="stub", read_timeout=0.5) as server:
        yield server


def _raw_post(server: ChatServer, body: bytes, headers: dict[str, str], *,
              close_early: bool = False) -> tuple[int, str]:
    """Send a raw POST (any headers, any body) and return (status, response body)."""
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=10) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)
        if close_early:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), payload.decode("utf-8", "replace")


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def _chat(**fields: Any) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}).encode()


@dataclass(frozen=True)
class ServeCase:
    name: str
    body: bytes
    headers: dict[str, str] | None
    """None: a correct Content-Length."""
    status: int
    says: str
    close_early: bool = False


_NESTED = b'{"messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
SERVE_CASES = [
    ServeCase("Content-Length abc", _chat(), {"Content-Length": "abc"}, 400, "Content-Length must be an integer"),
    ServeCase("no Content-Length", _chat(), {}, 400, "a Content-Length header is required"),
    ServeCase("oversized body", b"", {"Content-Length": str(9 << 20)}, 400, "request body must be 1.."),
    ServeCase("deeply nested JSON", _NESTED, None, 400, "nested too deeply"),
    ServeCase("body shorter than its Content-Length, connection kept open", b'{"mess',
              {"Content-Length": "100"}, 408, "did not arrive within 0.5 s"),
    ServeCase("body shorter than its Content-Length, connection closed", b'{"mess',
              {"Content-Length": "100"}, 400, "ended after 6 of its 100 bytes", close_early=True),
    ServeCase("not JSON", b"hello", None, 400, "not valid JSON"),
    ServeCase("not UTF-8", '{"messages": "caf\u00e9"}'.encode("latin-1"), None, 400, "not UTF-8"),
    ServeCase("tools", _chat(tools=[{"type": "function", "function": {"name": "f"}}]), None, 400, "field 'tools'"),
    ServeCase("logprobs", _chat(logprobs=True, top_logprobs=3), None, 400, "field 'logprobs'"),
    ServeCase("a penalty", _chat(frequency_penalty=0.5), None, 400, "field 'frequency_penalty': is not supported"),
    ServeCase("unknown field", _chat(guided_json={"type": "object"}), None, 400, "field 'guided_json'"),
    ServeCase("stop strings", _chat(stop=["\n"]), None, 400, "stop sequences are not supported"),
    ServeCase("NaN temperature", _chat()[:-1] + b', "temperature": NaN}', None, 400, "temperature must be a finite"),
    ServeCase("infinite top_p", _chat()[:-1] + b', "top_p": Infinity}', None, 400, "top_p must be a finite"),
    ServeCase("infinite top_k", _chat()[:-1] + b', "top_k": 1e400}', None, 400, "top_k must be an integer"),
    ServeCase("fractional top_k", _chat(top_k=2.5), None, 400, "top_k must be an integer"),
    ServeCase("neutral values of unsupported fields are fine", _chat(logprobs=False, tools=[], presence_penalty=0,
                                                                     user="me"), None, 200, '"content": "ok"'),
]


@pytest.mark.parametrize("case", SERVE_CASES, ids=[c.name for c in SERVE_CASES])
def test_serve_refuses_bad_requests(case: ServeCase, served: ChatServer) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(len(case.body))} if case.headers is None \
        else case.headers
    start = time.monotonic()
    status, text = _raw_post(served, case.body, headers, close_early=case.close_early)
    assert (status, case.says in text) == (case.status, True), text
    assert time.monotonic() - start < 5
    # the server still answers after every bad request
    assert _raw_post(served, _chat(), {"Content-Length": str(len(_chat()))})[0] == 200


def test_serve_on_a_port_in_use_names_it(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = int(busy.getsockname()[1])
        with pytest.raises(BindError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            start_server(cast(Any, _StubBackend()), port=port)
        # the command says so before loading any model (this one does not even exist)
        code, text = _run(["serve", "--port", str(port), "--model", "/no/such/model"], capsys, caplog)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}: Address already in use" in text, text


# --- babeltune judge -------------------------------------------------------------------------------------


def _generations(path: Path, ids: Sequence[tuple[str, str]], failed: Sequence[str] = ()) -> Path:
    """A generation file (responses differ per file: identical ones are ties without asking the judge)."""
    return _write_jsonl(path, [{"id": f"{pid}-{lang}", "pid": pid, "lang": lang, "prompt": f"prompt {pid}",
                                "response": None if f"{pid}-{lang}" in failed else f"{path.stem} answer {pid}",
                                "reference": f"reference {pid}", "finish_reason": "stop",
                                "error": "HTTP 503" if f"{pid}-{lang}" in failed else None}
                               for pid, lang in ids])


BASELINE_IDS = [(f"p{i}", lang) for lang in ("en", "es") for i in range(6)]


@dataclass(frozen=True)
class JudgeCase:
    name: str
    argv: Callable[[Path, str], list[str]]
    """(tmp folder, endpoint base) -> arguments after `judge`."""
    exit_code: int
    says: tuple[str, ...]
    judged: int
    """Lines of the judgement file afterwards (every item judged, invalid or not: none lost)."""


def _sxs(tmp: Path, url: str, *extra: str) -> list[str]:
    cand = _generations(tmp / "cand.jsonl", [("p0", "en"), ("p1", "en"), ("p9", "en")])
    base = _generations(tmp / "base.jsonl", BASELINE_IDS)
    return ["sxs", "--candidate", str(cand), "--baseline", str(base), "--judge", "llm", "--endpoint", url,
            "--model", "m", "--out", str(tmp / "judged"), *extra]


def _rubric(tmp: Path, url: str) -> list[str]:
    gens = _generations(tmp / "gens.jsonl", BASELINE_IDS[:3], failed=["p2-en"])
    return ["rubric", "--generations", str(gens), "--endpoint", url, "--model", "m", "--out", str(tmp / "judged")]


JUDGE_CASES = [
    JudgeCase("candidate covers 3 of the baseline's 12 prompts: refused", lambda t, u: _sxs(t, f"{u}/ok/v1"), 2,
              ("cover different prompts", "en: 1 prompt(s) only in --candidate", "(p9-en)",
               "4 prompt(s) only in --baseline", "es: 6 prompt(s) only in --baseline", "--allow-partial"), 0),
    JudgeCase("--allow-partial judges the shared prompts and records the rest",
              lambda t, u: _sxs(t, f"{u}/ok/v1", "--allow-partial"), 0,
              ("warning: judging only the prompts both files cover", "es: 6 prompt(s) only in --baseline",
               "unmatched"), 2),
    JudgeCase("sxs: the judge endpoint answers HTML", lambda t, u: _sxs(t, f"{u}/html/v1", "--allow-partial"), 0,
              ("{url}/chat/completions: HTTP 200, content type text/html", "recorded as an invalid verdict"), 2),
    JudgeCase("rubric: the judge endpoint answers non-UTF-8", lambda t, u: _rubric(t, f"{u}/latin1/v1"), 0,
              ("{url}/chat/completions: HTTP 200", "not UTF-8", "1 failed generation(s)", "'p2-en'"), 2),
]


@pytest.mark.parametrize("case", JUDGE_CASES, ids=[c.name for c in JUDGE_CASES])
def test_judge_bad_input(case: JudgeCase, endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import babeltune.generate

    quick = functools.partial(babeltune.generate.EndpointConfig, backoff=0.01, max_retries=1)
    monkeypatch.setattr(babeltune.generate, "EndpointConfig", quick)
    argv = case.argv(tmp_path, endpoint)
    code, text = _run(["judge", *argv], capsys, caplog)
    url = argv[argv.index("--endpoint") + 1]
    assert code == case.exit_code, text
    for part in case.says:
        assert part.format(url=url) in text, text
    out = tmp_path / "judged"
    judged = [p for p in (out / "llm.jsonl", out / "rubric.jsonl") if p.exists()]
    assert sum(len(p.read_text().splitlines()) for p in judged) == case.judged
    if argv[0] == "sxs" and code == 0:
        coverage = json.loads((out / "coverage.json").read_text())
        assert coverage["unmatched"] == {"en": {"only_candidate": 1, "only_reference": 4},
                                         "es": {"only_candidate": 0, "only_reference": 6}}
        assert coverage["only_candidate"] == {"en": ["p9-en"]} and coverage["pairs"] == 2
