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
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
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
    """Requests in flight at once."""
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
