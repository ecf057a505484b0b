"""`babeltune serve`: an OpenAI-compatible server (`/v1/chat/completions`, `/v1/models`) over a local model.

Standard library only (`http.server`). Handler threads put requests on a queue; one worker thread
owns the model and answers queued requests in batches (requests that arrive together and share
decoding settings are generated as one batch), so concurrent clients get the local backend's batched
speed and the model is never used by two threads at once.

Bound to 127.0.0.1 unless told otherwise. With a token set, every `/v1` request must carry
`Authorization: Bearer <token>`. Extensions beyond OpenAI's fields, as vLLM accepts them:
`top_k` and `repetition_penalty`. Not supported (answered with 400 naming the field): streaming,
n > 1, stop strings, tools, logprobs, penalties other than 0 and any field this server does not know.
A body that is not valid UTF-8 JSON, is nested too deeply, has a bad or missing Content-Length or is
larger than `MAX_BODY_BYTES` is answered with 400, and so is NaN or an infinite number for any field;
a client that sends less than its Content-Length gets 408 after `read_timeout` seconds.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from babeltune.data.records import Message, RecordError, parse_messages
from babeltune.generate.backends import GenerationRequest, GenerationResult
from babeltune.generate.local import LocalBackend
from babeltune.generate.settings import DecodingSettings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 << 20


class RequestError(ValueError):
    """A request the server refuses (HTTP 400 unless `status` says otherwise), with the reason shown to
    the client."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class BindError(RuntimeError):
    """The server cannot listen on the address asked for (in use, not this machine's, no permission)."""


SUPPORTED_FIELDS: frozenset[str] = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "repetition_penalty", "seed", "stream", "n", "stop", "user",
})
"""Chat-completion fields this server acts on (`user` is an opaque client tag, accepted and unused)."""

NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "logprobs": (False,), "top_logprobs": (0,),
    "tools": ([],), "tool_choice": ("none",), "functions": ([],), "function_call": ("none",),
    "parallel_tool_calls": (False, True), "logit_bias": ({},), "response_format": ({"type": "text"},),
    "stream_options": (), "store": (False,),
}
"""OpenAI fields this server does not implement, with the values that ask for nothing (null always
does): any other value is refused rather than silently ignored."""


@dataclass
class _Job:
    request: GenerationRequest
    settings: DecodingSettings
    future: Future[GenerationResult]


class BatchingWorker:
    """Owns the backend; answers queued jobs in batches grouped by decoding settings."""

    def __init__(self, backend: LocalBackend, max_batch: int, wait_s: float = 0.01) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="babeltune-serve-worker", daemon=True)
        self.thread.start()

    def submit(self, request: GenerationRequest, settings: DecodingSettings) -> Future[GenerationResult]:
        future: Future[GenerationResult] = Future()
        self.jobs.put(_Job(request, settings, future))
        return future

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=30)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """The first job plus whatever arrives within `wait_s`, up to `max_batch`; (jobs, stop asked)."""
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _run(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            groups: dict[DecodingSettings, list[_Job]] = {}
            for job in batch:
                groups.setdefault(job.settings, []).append(job)
            for settings, jobs in groups.items():
                self._answer(jobs, settings)
            if stop:
                return

    def _answer(self, jobs: list[_Job], settings: DecodingSettings) -> None:
        by_id = {job.request.id: job for job in jobs}
        try:
            for result in self.backend.generate([job.request for job in jobs], settings):
                by_id.pop(result.id).future.set_result(result)
        except Exception as exc:  # a model error fails these requests, not the server
            log.exception("generation failed")
            for job in by_id.values():
                job.future.set_exception(exc)
            return
        for job in by_id.values():
            job.future.set_exception(RuntimeError("the backend returned no result"))


def parse_chat_request(
    body: Any, default_max_tokens: int, max_tokens_limit: int
) -> tuple[list[Message], DecodingSettings, int | None]:
    """Validate an OpenAI chat-completions body: (messages, settings, seed). Raises RequestError."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for name, value in body.items():
        if name in SUPPORTED_FIELDS or value is None or value in NEUTRAL_VALUES.get(name, ()):
            continue
        known = "is not supported" if name in NEUTRAL_VALUES else "is not a field this server knows"
        raise RequestError(f"field {name!r}: {known} by babeltune serve (value {json.dumps(value)[:80]})")
    if body.get("stream"):
        raise RequestError("stream=true is not supported by babeltune serve")
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported")
    if body.get("stop"):
        raise RequestError("stop sequences are not supported; generation stops at the end of the turn")
    raw = body.get("messages")
    if isinstance(raw, list):
        raw = [_flatten_content(turn) for turn in raw]
    try:
        messages = list(parse_messages(raw, "request", None))
    except RecordError as exc:
        raise RequestError(f"{exc.field}: {exc.reason}") from exc
    if messages[-1].role == "assistant":
        raise RequestError("the last message must be a user turn")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = default_max_tokens
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= max_tokens_limit:
        raise RequestError(f"max_tokens must be an integer in 1..{max_tokens_limit}")
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise RequestError("seed must be an integer")
    try:
        settings = DecodingSettings(
            max_new_tokens=max_tokens,
            temperature=float(_number(body, "temperature", 1.0)),
            top_p=float(_number(body, "top_p", 1.0)),
            top_k=_integer(body, "top_k", 0),
            repetition_penalty=float(_number(body, "repetition_penalty", 1.0)),
            seed=0,
        )
    except ValueError as exc:
        raise RequestError(str(exc)) from exc
    return messages, settings, seed


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{name} must be a number")
    return value


def _integer(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} must be an integer, got {json.dumps(value)}")
    return value


def _flatten_content(turn: Any) -> Any:
    """OpenAI also allows content as a list of parts; keep text parts only."""
    if isinstance(turn, dict) and isinstance(turn.get("content"), list):
        parts = turn["content"]
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in parts):
            raise RequestError("only text content parts are supported")
        return {**turn, "content": "".join(str(p.get("text", "")) for p in parts)}
    return turn


class ChatServer(ThreadingHTTPServer):
    """The HTTP server; holds what handlers need."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: LocalBackend, *, served_name: str, token: str | None,
                 default_max_tokens: int = 512, max_tokens_limit: int = 4096, wait_s: float = 0.01,
                 read_timeout: float = 30.0) -> None:
        try:
            super().__init__(address, _Handler)
        except OSError as exc:
            raise BindError(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}") from exc
        self.read_timeout = read_timeout
        """Seconds a connection may take to send a request (headers and body) before it is answered 408."""
        self.backend = backend
        self.served_name = served_name
        self.token = token
        self.default_max_tokens = default_max_tokens
        self.max_tokens_limit = max_tokens_limit
        self.worker = BatchingWorker(backend, max_batch=backend.batch_size, wait_s=wait_s)
        self.created = int(time.time())

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def server_close(self) -> None:
        worker = getattr(self, "worker", None)  # absent when binding failed
        if worker is not None:
            worker.stop()
        super().server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.read_timeout)  # a stalled client cannot hold a connection forever

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status}})

    def _authorized(self) -> bool:
        token = self.server.token
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        given = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        if hmac.compare_digest(given.encode(), token.encode()):
            return True
        self._error(401, "missing or wrong bearer token", "authentication_error")
        return False

    def _read_json_body(self) -> Any:
        """The request body as JSON; RequestError (400, or 408 when the body does not arrive in time)."""
        header = self.headers.get("Content-Length")
        if header is None:
            raise RequestError("a Content-Length header is required (chunked bodies are not supported)")
        try:
            length = int(header)
        except ValueError:
            raise RequestError(f"Content-Length must be an integer, got {header!r}") from None
        if not 0 < length <= MAX_BODY_BYTES:
            raise RequestError(f"request body must be 1..{MAX_BODY_BYTES} bytes with a Content-Length, got {length}")
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(f"the body did not arrive within {self.server.read_timeout:g} s "
                               f"(Content-Length {length})", 408) from None
        if len(raw) < length:
            raise RequestError(f"the body ended after {len(raw)} of its {length} bytes (Content-Length)")
        try:
            return json.loads(raw.decode("utf-8"))  # NaN / Infinity are refused by the field they are given for
        except UnicodeDecodeError as exc:
            raise RequestError(f"body is not UTF-8 (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise RequestError(f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise RequestError("body is JSON nested too deeply") from None

    def do_GET(self) -> None:
        if self.path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/models":
            if self._authorized():
                self._send(200, {"object": "list", "data": [{
                    "id": self.server.served_name, "object": "model", "created": self.server.created,
                    "owned_by": "babeltune", "fingerprint": self.server.backend.fingerprint,
                }]})
        else:
            self._error(404, f"no route {self.path}", "not_found")

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._error(404, f"no route {self.path}", "not_found")
            return
        if not self._authorized():
            return
        try:
            body = self._read_json_body()
            model = body.get("model") if isinstance(body, dict) else None
            if model not in (None, "", self.server.served_name):
                raise RequestError(f"unknown model {model!r}; this server serves {self.server.served_name!r}")
            messages, settings, seed = parse_chat_request(body, self.server.default_max_tokens,
                                                          self.server.max_tokens_limit)
        except RequestError as exc:
            if exc.status == 408:
                self.close_connection = True
            self._error(exc.status, str(exc), "invalid_request_error" if exc.status == 400 else "timeout")
            return
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        request = GenerationRequest(request_id, tuple(messages), seed=seed)
        try:
            result = self.server.worker.submit(request, settings).result()
        except Exception as exc:  # reported to the client as a server error, which it may retry
            self._error(500, f"generation failed: {exc}", "server_error")
            return
        if result.error is not None:
            self._error(400, result.error, "invalid_request_error")
            return
        prompt_tokens, completion_tokens = result.prompt_tokens or 0, result.completion_tokens or 0
        self._send(200, {
            "id": request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.server.served_name,
            "system_fingerprint": self.server.backend.fingerprint[:32],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "finish_reason": result.finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


def check_bindable(host: str, port: int) -> None:
    """BindError now, before a model is loaded, if `host:port` cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def start_server(backend: LocalBackend, *, host: str = "127.0.0.1", port: int = 0, served_name: str = "",
                 token: str | None = None, default_max_tokens: int = 512,
                 read_timeout: float = 30.0) -> tuple[ChatServer, threading.Thread]:
    """Start serving in a background thread (port 0 picks a free port); stop with `server.shutdown()`
    then `server.server_close()`. BindError if the address cannot be listened on."""
    server = ChatServer((host, port), backend, served_name=served_name or backend.model_name, token=token,
                        default_max_tokens=default_max_tokens, read_timeout=read_timeout)
    thread = threading.Thread(target=server.serve_forever, name="babeltune-serve", daemon=True)
    thread.start()
    return server, thread
