"""The endpoint backend: any OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp server, hosted APIs,
`babeltune serve`).

Requests run concurrently (a thread pool; the work is waiting on the network). A request is retried
with exponential backoff (honouring `Retry-After`) on 429, 5xx, timeouts, dropped connections and
replies that break the API's promise (a 200 whose body is not UTF-8 JSON, or lacks `choices`: see
`parse_json_reply`); any other HTTP error, or running out of retries, is a recorded failure for that
prompt (naming the endpoint, the status, the content type and the start of the body), never an
exception that stops the run. An endpoint that cannot be reached at all is an error before anything is sent.
The API key is read from an environment variable, never from the command line or a config file.

Decoding settings map onto the request: `max_tokens`, `temperature` (0 = greedy), `top_p`, a per-prompt
`seed`; `top_k` and `repetition_penalty` are sent only when they are not neutral, as the extensions
vLLM, TGI's OpenAI route and `babeltune serve` accept (hosted OpenAI rejects them: set
repetition_penalty=1 there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babeltune.generate.backends import FinishReason, GenerationRequest, GenerationResult
from babeltune.generate.settings import DecodingSettings

log = logging.getLogger(__name__)

RETRY_STATUS: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to reach an OpenAI-compatible chat endpoint."""

    url: str = "http://127.0.0.1:8000/v1"
    """Base URL of the API, up to and including `/v1`."""
    model: str = ""
    """Model name to request; empty asks the endpoint (`GET /models`) and uses the first it lists."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (sent as a bearer token when set and non-empty)."""
    concurrency: int = 4
    """Requests in flight at once (one client thread each; hundreds are fine: a server such as vLLM
    batches them, and `babeltune serve` accepts as many connections)."""
    timeout: float = 120.0
    """Seconds to wait for one response before retrying."""
    max_retries: int = 5
    """Retries per request after the first attempt (on 429, 5xx, timeouts, dropped connections)."""
    backoff: float = 1.0
    """First retry waits this many seconds (plus jitter); each further retry waits twice as long."""
    max_backoff: float = 30.0
    """Longest wait between two attempts."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint url must start with http:// or https://, got {self.url!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.max_retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("max_retries, backoff and max_backoff must be >= 0")


class EndpointError(RuntimeError):
    """A request that failed for good (after retries, or with a status that retrying cannot fix)."""

    def __init__(self, message: str, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class BadReply(ValueError):
    """A reply that is not what the API promises: not UTF-8, not JSON, not an object, or missing fields."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


BODY_START_CHARS = 200
"""How much of a bad reply's body an error message quotes."""


def parse_json_reply(
    where: str, status: int | None, content_type: str | None, raw: bytes,
    check: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """The JSON object an HTTP reply carries, or `BadReply` naming `where` (the URL), the status, the
    content type and the start of the body. `check` validates the object's shape (raising KeyError,
    IndexError, TypeError or ValueError with the reason). Every client of an OpenAI-compatible API in
    babeltune (generation, judges) reads replies through this."""

    def bad(reason: str) -> BadReply:
        start = raw[:BODY_START_CHARS].decode("utf-8", "replace")
        more = "..." if len(raw) > BODY_START_CHARS else ""
        return BadReply(f"{where}: HTTP {status}, content type {content_type or 'not given'}: {reason}; "
                        f"body starts {start!r}{more}", status)

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad(f"body is not UTF-8 (byte {exc.start})") from exc
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"body is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    except RecursionError as exc:
        raise bad("body is JSON nested too deeply") from exc
    if not isinstance(body, dict):
        raise bad(f"body is a JSON {type(body).__name__}, not an object")
    if check is not None:
        try:
            check(body)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise bad(f"not a chat completion ({type(exc).__name__}: {exc})") from exc
    return body


def chat_choice(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The first choice of a chat-completion object and its text; KeyError/IndexError/TypeError when the
    object lacks them."""
    choice = body["choices"][0]
    if not isinstance(choice, dict):
        raise TypeError("choices[0] is not an object")
    message = choice["message"]
    if not isinstance(message, dict):
        raise TypeError("choices[0].message is not an object")
    text = message["content"]
    if not isinstance(text, str):
        raise TypeError("choices[0].message.content is not a string")
    return choice, text


class EndpointBackend:
    """Chat completions from an OpenAI-compatible endpoint."""

    name = "endpoint"

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.base_url = config.url.rstrip("/")
        self._model = config.model
        self._lock = threading.Lock()
        self._reached = False

    @property
    def model(self) -> str:
        """The model name sent with each request (asked from the endpoint once, if not configured)."""
        with self._lock:
            if not self._model:
                listed = self.list_models()
                if not listed:
                    raise EndpointError(f"{self.base_url}/models lists no model; give one with --endpoint-model")
                self._model = listed[0]
            return self._model

    def check_reachable(self) -> None:
        """EndpointError, before anything is sent, if nothing answers at the endpoint's address (checked
        once; with a configured model name, any HTTP answer to `GET /models` will do)."""
        if self._reached:
            return
        if not self.config.model:
            _ = self.model  # lists the models, which fails if the endpoint cannot be reached
        else:
            try:
                self._call("GET", "/models", None)
            except (urllib.error.HTTPError, BadReply):
                pass  # an answer, whatever it says
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from exc
        self._reached = True

    def _unreachable(self, exc: BaseException) -> EndpointError:
        return EndpointError(f"cannot reach the endpoint {self.base_url}: {getattr(exc, 'reason', exc)}")

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "url": self.base_url, "model": self.model}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.config.api_key_env, "") if self.config.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _call(self, method: str, path: str, payload: dict[str, Any] | None,
              check: Callable[[dict[str, Any]], object] | None = None) -> dict[str, Any]:
        """One HTTP exchange; raises urllib's errors as they come, and `BadReply` for a reply that is not
        a JSON object (or fails `check`)."""
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        url = self.base_url + path
        req = urllib.request.Request(url, data=data, headers=self._headers(), method=method)
        with urllib.request.urlopen(req, timeout=self.config.timeout) as resp:
            raw = resp.read()
            return parse_json_reply(url, resp.status, resp.headers.get("Content-Type"), raw, check)

    def list_models(self) -> list[str]:
        """Model ids the endpoint serves; fails at once, with the reason, if it cannot be reached."""
        try:
            body = self._call("GET", "/models", None)
        except urllib.error.HTTPError as exc:
            raise EndpointError(f"{self.base_url}/models: HTTP {exc.code}: {_error_message(exc)}", exc.code) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc
        except BadReply as exc:
            raise EndpointError(f"{exc} (is {self.base_url} an OpenAI-compatible API?)", exc.status) from exc
        listed = body.get("data")
        return [str(item.get("id")) for item in listed if isinstance(item, dict)] if isinstance(listed, list) else []

    def request_with_retries(self, payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """POST a chat completion, retrying what can be retried; returns (body, attempts): a body that
        `chat_choice` accepts."""
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._call("POST", "/chat/completions", payload, check=chat_choice), attempts
            except urllib.error.HTTPError as exc:
                message = f"{self.base_url}/chat/completions: HTTP {exc.code}: {_error_message(exc)}"
                if exc.code not in RETRY_STATUS or attempts > self.config.max_retries:
                    raise EndpointError(message, exc.code, attempts) from exc
                wait = self._wait(attempts, exc.headers.get("Retry-After") if exc.headers else None)
            except BadReply as exc:  # broken promise of a working server: retried like a 5xx
                if attempts > self.config.max_retries:
                    raise EndpointError(str(exc), exc.status, attempts) from exc
                message, wait = str(exc), self._wait(attempts, None)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as exc:
                message = f"{self.base_url}: {type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                if attempts > self.config.max_retries:
                    raise EndpointError(message, None, attempts) from exc
                wait = self._wait(attempts, None)
            log.debug("attempt %d failed (%s); retrying in %.1f s", attempts, message, wait)
            time.sleep(wait)

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        """Exponential backoff with jitter; a server's Retry-After (seconds) wins when it is longer."""
        wait = min(self.config.max_backoff, self.config.backoff * 2 ** (attempt - 1))
        wait *= 0.5 + random.random() / 2
        if retry_after:
            with contextlib.suppress(ValueError):  # an HTTP date instead of seconds: keep our own wait
                wait = max(wait, min(float(retry_after), self.config.max_backoff))
        return wait

    def payload(self, request: GenerationRequest, settings: DecodingSettings) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_dict() for m in request.messages],
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": request.sampling_seed(settings),
            "stream": False,
        }
        if settings.top_k:
            body["top_k"] = settings.top_k
        if settings.repetition_penalty != 1.0:
            body["repetition_penalty"] = settings.repetition_penalty
        return body

    def complete(self, request: GenerationRequest, settings: DecodingSettings) -> GenerationResult:
        """One request, start to finish; every failure becomes a recorded failure."""
        try:
            body, attempts = self.request_with_retries(self.payload(request, settings))
        except EndpointError as exc:
            return GenerationResult.failure(request.id, str(exc), attempts=exc.attempts, status=exc.status)
        choice, text = chat_choice(body)
        raw_reason = str(choice.get("finish_reason") or "stop")
        reason: FinishReason = "length" if raw_reason == "length" else "stop"
        usage: dict[str, Any] = body["usage"] if isinstance(body.get("usage"), dict) else {}
        extra: dict[str, Any] = {"attempts": attempts}
        if body.get("system_fingerprint"):
            extra["system_fingerprint"] = body["system_fingerprint"]
        if raw_reason not in ("stop", "length"):
            extra["finish_reason_raw"] = raw_reason
        return GenerationResult(request.id, text, reason, _count(usage.get("prompt_tokens")),
                                _count(usage.get("completion_tokens")), extra=extra)

    def generate(self, requests: Sequence[GenerationRequest], settings: DecodingSettings) -> Iterator[GenerationResult]:
        if not requests:
            return
        self.check_reachable()  # once, before the pool starts: a wrong address is one error, not N failed rows
        with ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="endpoint") as pool:
            futures = [pool.submit(self.complete, req, settings) for req in requests]
            try:
                for future in as_completed(futures):
                    yield future.result()
            finally:
                for future in futures:
                    future.cancel()


def _count(value: Any) -> int | None:
    """A token count from a reply's `usage`, or None when it is not a non-negative integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The server's own error message (OpenAI shape {"error": {"message": ...}}), or its raw body."""
    try:
        raw = exc.read().decode("utf-8", "replace")
    except Exception:  # the body may already be consumed or the connection gone
        return str(exc.reason)
    try:
        body = json.loads(raw)
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except (json.JSONDecodeError, RecursionError):
        pass
    return raw[:300] or str(exc.reason)


# --------------------------------------------------------------------------- dynamic LoRA adapters
# vLLM's run-time adapter routes (`vllm serve BASE --enable-lora` with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True,
# or `babeltune serve --enable-lora`): an experiment serves each condition's adapter from one server.

_GENERIC_PARTS = frozenset({"final", "merged", "adapter", "train", "checkpoints", "weights", "model", "models"})


def adapter_name(path: str | Path) -> str:
    """A stable name for the adapter folder `path`: its most telling folder name (the condition's, for
    RUN/conditions/NAME/train/final) and the first 12 hex digits of its content fingerprint, so the same
    adapter always gets the same name and a retrained one a new name."""
    from babeltune.models.loading import model_fingerprint

    folder = Path(path).resolve()
    parts = [p for p in reversed(folder.parts) if p and p != "/"]
    label = next((p for p in parts if p.lower() not in _GENERIC_PARTS), parts[0] if parts else "adapter")
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "adapter"
    return f"{label[:48]}-{model_fingerprint(folder)[:12]}"


def _post_adapter(config: EndpointConfig, route: str, payload: dict[str, str], what: str) -> None:
    """One POST to a LoRA route (not retried: a load that timed out may still have happened)."""
    client = EndpointBackend(config)
    data = json.dumps(payload).encode("utf-8")
    req = urllib.request.Request(f"{client.base_url}/{route}", data=data, headers=client._headers(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=config.timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        message = _error_message(exc)
        route_missing = exc.code in (404, 405) and not any(
            known in message for known in ("No adapter found", "cannot be found"))
        hint = (" (does the server allow run-time LoRA updates? vllm serve BASE --enable-lora with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or babeltune serve --enable-lora)") if route_missing else ""
        raise EndpointError(f"{client.base_url}: {what}: HTTP {exc.code}: {message}{hint}", exc.code) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise EndpointError(f"{client.base_url}: {what}: {getattr(exc, 'reason', exc)}") from exc


def load_lora_adapter(config: EndpointConfig, name: str, path: str | Path) -> None:
    """`POST /v1/load_lora_adapter {"lora_name": name, "lora_path": path}`; EndpointError (naming the
    endpoint and the adapter) when refused. The path must be readable by the server (same machine or a
    shared file system): it is sent as an absolute path."""
    folder = str(Path(path).resolve())
    _post_adapter(config, "load_lora_adapter", {"lora_name": name, "lora_path": folder},
                  f"cannot load adapter {folder} as {name!r}")


def unload_lora_adapter(config: EndpointConfig, name: str) -> None:
    """`POST /v1/unload_lora_adapter {"lora_name": name}`; EndpointError when refused."""
    _post_adapter(config, "unload_lora_adapter", {"lora_name": name}, f"cannot unload adapter {name!r}")


def is_adapter_folder(model: str | Path) -> bool:
    return (Path(model) / "adapter_config.json").is_file()


@contextlib.contextmanager
def adapter_endpoint(config: EndpointConfig, model: str) -> Iterator[EndpointConfig]:
    """The endpoint config to generate with `model` through the server at `config.url`.

    A PEFT adapter folder is loaded onto the server under `adapter_name(model)`, the yielded config
    names it as its `model`, and it is unloaded when the block ends (errors included). An adapter of
    that name the server already holds (the same folder and content) is used as it is and left loaded:
    another process may be using it. A full model folder must be what the server serves (checked
    against the fingerprint or root path its `/v1/models` lists); anything else (the experiment's base
    model by name) yields `config` unchanged: the server's own model.
    """
    if not is_adapter_folder(model):
        if (Path(model) / "config.json").is_file():
            _check_serves_full_model(config, Path(model))
        yield config
        return
    name = adapter_name(model)
    client = EndpointBackend(config)
    owned = name not in client.list_models()
    if owned:
        try:
            load_lora_adapter(config, name, model)
        except EndpointError as exc:
            if exc.status != 400 or "already been loaded" not in str(exc):
                raise
            owned = False  # loaded meanwhile by another process: theirs to unload
    failed = False
    try:
        yield dataclasses.replace(config, model=name)
    except BaseException:
        failed = True
        raise
    finally:
        if owned:
            try:
                unload_lora_adapter(config, name)
            except EndpointError:
                if not failed:
                    raise
                log.warning("%s: could not unload adapter %r after an error", client.base_url, name, exc_info=True)


def _check_serves_full_model(config: EndpointConfig, folder: Path) -> None:
    """A full model folder can only be generated with by a server that serves it (no run-time loading)."""
    from babeltune.models.loading import model_fingerprint

    client = EndpointBackend(config)
    try:
        body = client._call("GET", "/models", None)
    except (urllib.error.URLError, OSError) as exc:
        raise EndpointError(f"cannot reach the endpoint {client.base_url}: {getattr(exc, 'reason', exc)}") from exc
    cards = [c for c in body.get("data", []) if isinstance(c, dict)]
    fingerprint, resolved = model_fingerprint(folder), str(folder.resolve())
    for card in cards:
        if card.get("fingerprint") == fingerprint or card.get("root") in (resolved, str(folder)):
            return
    served = ", ".join(str(c.get("id")) for c in cards) or "nothing"
    raise EndpointError(f"{client.base_url} serves {served}, not the full model {folder}: a full fine-tune cannot "
                        "be loaded at run time; serve it (vllm serve FOLDER) or train a LoRA adapter")
