"""Loopback HTTP for the tests: a standard-library server on 127.0.0.1 (an ephemeral port) serving a
scripted handler in a thread, a base for fake OpenAI-compatible handlers, and `babeltune serve`'s
server held open for the length of a `with` block."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from babeltune.generate.server import ChatServer, start_server


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers with a sized body."""

    def log_message(self, *args: Any) -> None:
        pass

    def send_body(self, status: int, data: bytes | str, content_type: str | None = "application/json",
                  headers: Mapping[str, str] | None = None) -> None:
        """Send `data` (text is UTF-8 encoded) with its length, `content_type` (None: no such header) and
        `headers`; a client that has given up (a timeout test) is not an error."""
        body = data.encode("utf-8") if isinstance(data, str) else data
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


@contextlib.contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler], path: str = "") -> Iterator[str]:
    """Serve `handler` on 127.0.0.1 in a thread; yields the base URL http://127.0.0.1:PORT + `path`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serving(backend: Any, **options: Any) -> Iterator[ChatServer]:
    """`babeltune serve`'s server for `backend` on a free loopback port (`options` go to `start_server`),
    shut down and closed when the block ends."""
    server, _ = start_server(backend, **options)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
