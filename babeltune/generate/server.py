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

With adapters enabled (`babeltune serve --enable-lora`, off by default as vLLM keeps them off unless
VLLM_ALLOW_RUNTIME_LORA_UPDATING is set), vLLM's dynamic LoRA routes: `POST /v1/load_lora_adapter`
`{"lora_name": NAME, "lora_path": FOLDER}` and `POST /v1/unload_lora_adapter` `{"lora_name": NAME}`,
answered 200 with a plain-text success line, or vLLM's error object and status (see
`babeltune.generate.adapters`). A loaded adapter is listed by `/v1/models` (with `parent` the base) and
answers requests whose `model` names it; the base weights stay loaded once, and a batch never mixes
adapters. Loads and unloads run on the worker thread, between batches.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from babeltune.data.records import Message, RecordError, parse_messages
from babeltune.generate.adapters import AdapterError, AdapterSet
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
    model: str = ""
    """The served name or a loaded adapter's; "" = the backend as it is (no adapters)."""


@dataclass
class _Task:
    """Work on the model itself (load or unload an adapter), run by the worker between batches."""

    fn: Callable[[], Any]
    future: Future[Any]


class BatchingWorker:
    """Owns the backend; answers queued jobs in batches grouped by model (adapter) and decoding
    settings, and runs queued tasks on the model between batches."""

    def __init__(self, backend: LocalBackend, max_batch: int, wait_s: float = 0.01,
                 adapters: AdapterSet | None = None) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.adapters = adapters
        self.jobs: queue.Queue[_Job | _Task | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="babeltune-serve-worker", daemon=True)
        self.thread.start()

    def submit(self, request: GenerationRequest, settings: DecodingSettings,
               model: str = "") -> Future[GenerationResult]:
        future: Future[GenerationResult] = Future()
        self.jobs.put(_Job(request, settings, future, model))
        return future

    def run_task(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run `fn` on the worker thread (no batch is being generated meanwhile); its result or error
        comes back through the future."""
        future: Future[Any] = Future()
        self.jobs.put(_Task(fn, future))
        return future

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=30)

    def _collect(self, first: _Job | _Task) -> tuple[list[_Job | _Task], bool]:
        """The first item plus whatever arrives within `wait_s`, up to `max_batch`; (items, stop asked)."""
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
            groups: dict[tuple[str, DecodingSettings], list[_Job]] = {}
            for item in batch:
                if isinstance(item, _Job):
                    groups.setdefault((item.model, item.settings), []).append(item)
            for (model, settings), jobs in groups.items():
                self._answer(jobs, settings, model)
            for item in batch:  # after the batch: a request that came before an unload still gets its adapter
                if isinstance(item, _Task):
                    _run_task(item)
            if stop:
                return

    def _answer(self, jobs: list[_Job], settings: DecodingSettings, model: str = "") -> None:
        by_id = {job.request.id: job for job in jobs}
        try:
            with contextlib.ExitStack() as stack:
                backend = self.backend
                if self.adapters is not None and model:
                    backend = stack.enter_context(self.adapters.active(model))
                for result in backend.generate([job.request for job in jobs], settings):
                    by_id.pop(result.id).future.set_result(result)
        except Exception as exc:  # a model error fails these requests, not the server
            log.exception("generation failed")
            for job in by_id.values():
                job.future.set_exception(exc)
            return
        for job in by_id.values():
            job.future.set_exception(RuntimeError("the backend returned no result"))


def _run_task(task: _Task) -> None:
    try:
        task.future.set_result(task.fn())
    except Exception as exc:  # reported to the caller through the future
        task.future.set_exception(exc)


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
    request_queue_size = 1024
    """Connections waiting to be accepted: clients with hundreds of requests in flight connect at once."""

    def __init__(self, address: tuple[str, int], backend: LocalBackend, *, served_name: str, token: str | None,
                 default_max_tokens: int = 512, max_tokens_limit: int = 4096, wait_s: float = 0.01,
                 read_timeout: float = 30.0, lora_base: str | None = None) -> None:
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
        self.adapters = AdapterSet(backend, lora_base, served_name) if lora_base is not None else None
        """Run-time LoRA adapters on the served base (None: --enable-lora is off, the routes answer 404)."""
        self.worker = BatchingWorker(backend, max_batch=backend.batch_size, wait_s=wait_s, adapters=self.adapters)
        self.created = int(time.time())

    def resolve_model(self, model: Any) -> str:
        """The served name or loaded adapter a request's `model` names; RequestError for any other."""
        if model in (None, "", self.served_name):
            return self.served_name
        if self.adapters is not None and isinstance(model, str) and self.adapters.get(model) is not None:
            return model
        known = [self.served_name]
        if self.adapters is not None:
            known += [adapter.name for adapter in self.adapters.listed()]
        raise RequestError(f"unknown model {model!r}; this server serves {', '.join(map(repr, known))}")

    def fingerprint(self, model: str) -> str:
        return self.adapters.fingerprint(model) if self.adapters is not None else self.backend.fingerprint

    def model_cards(self) -> list[dict[str, Any]]:
        """/v1/models' entries: the base, then every loaded adapter (with its parent, as vLLM lists them)."""
        cards = [{"id": self.served_name, "object": "model", "created": self.created, "owned_by": "babeltune",
                  "root": self.served_name, "parent": None, "fingerprint": self.backend.fingerprint}]
        for adapter in self.adapters.listed() if self.adapters is not None else []:
            cards.append({"id": adapter.name, "object": "model", "created": self.created, "owned_by": "babeltune",
                          "root": adapter.path, "parent": self.served_name, "fingerprint": adapter.fingerprint})
        return cards

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
                self._send(200, {"object": "list", "data": self.server.model_cards()})
        else:
            self._error(404, f"no route {self.path}", "not_found")

    def do_POST(self) -> None:
        route = _POST_ROUTES.get(self.path)
        lora_off = self.path in _LORA_ROUTES and self.server.adapters is None
        if route is None or lora_off:  # vLLM too has no such routes unless run-time LoRA updating is on
            self._error(404, f"no route {self.path}" + (" (start the server with --enable-lora)" if lora_off else ""),
                        "not_found")
            return
        if not self._authorized():
            return
        try:
            body = self._read_json_body()
        except RequestError as exc:
            if exc.status == 408:
                self.close_connection = True
            self._error(exc.status, str(exc), "invalid_request_error" if exc.status == 400 else "timeout")
            return
        route(self, body)

    def _send_text(self, status: int, text: str) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _adapter_route(self, body: Any, unload: bool) -> None:
        """POST /v1/load_lora_adapter and /v1/unload_lora_adapter, answered as vLLM answers them."""
        adapters = self.server.adapters
        assert adapters is not None  # do_POST routes here only with adapters enabled
        if not isinstance(body, dict):
            self._error(400, "the request body must be a JSON object", "InvalidUserInput")
            return
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or (not unload and not isinstance(path, str)):
            field = "'lora_name'" if unload else "Both 'lora_name' and 'lora_path'"
            self._error(400, f"{field} must be provided (as strings).", "InvalidUserInput")
            return
        try:
            if unload:
                self.server.worker.run_task(lambda: adapters.unload(name)).result()
                log.info("unloaded LoRA adapter %r", name)
                self._send_text(200, f"Success: LoRA adapter '{name}' removed successfully.")
            else:
                adapters.check_new(name, str(path))  # the cheap refusals, without waiting for the worker
                loaded = self.server.worker.run_task(lambda: adapters.load(name, str(path))).result()
                log.info("loaded LoRA adapter %r from %s", name, loaded.path)
                self._send_text(200, f"Success: LoRA adapter '{name}' added successfully.")
        except AdapterError as exc:
            self._error(exc.status, str(exc), exc.kind)

    def _load_lora_adapter(self, body: Any) -> None:
        self._adapter_route(body, unload=False)

    def _unload_lora_adapter(self, body: Any) -> None:
        self._adapter_route(body, unload=True)

    def _chat_completions(self, body: Any) -> None:
        try:
            model = self.server.resolve_model(body.get("model") if isinstance(body, dict) else None)
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
            result = self.server.worker.submit(request, settings, model).result()
        except AdapterError as exc:  # the adapter was unloaded while the request waited
            self._error(exc.status, str(exc), exc.kind)
            return
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
            "model": model,
            "system_fingerprint": self.server.fingerprint(model)[:32],
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


_POST_ROUTES: dict[str, Callable[[_Handler, Any], None]] = {
    "/v1/chat/completions": _Handler._chat_completions,
    "/v1/load_lora_adapter": _Handler._load_lora_adapter,
    "/v1/unload_lora_adapter": _Handler._unload_lora_adapter,
}
_LORA_ROUTES = frozenset({"/v1/load_lora_adapter", "/v1/unload_lora_adapter"})


def start_server(backend: LocalBackend, *, host: str = "127.0.0.1", port: int = 0, served_name: str = "",
                 token: str | None = None, default_max_tokens: int = 512,
                 read_timeout: float = 30.0, lora_base: str | None = None) -> tuple[ChatServer, threading.Thread]:
    """Start serving in a background thread (port 0 picks a free port); stop with `server.shutdown()`
    then `server.server_close()`. BindError if the address cannot be listened on. `lora_base` (the
    folder or hub id the backend's base model was loaded from) turns on the dynamic LoRA routes:
    adapters of that base only."""
    server = ChatServer((host, port), backend, served_name=served_name or backend.model_name, token=token,
                        default_max_tokens=default_max_tokens, read_timeout=read_timeout, lora_base=lora_base)
    thread = threading.Thread(target=server.serve_forever, name="babeltune-serve", daemon=True)
    thread.start()
    return server, thread
