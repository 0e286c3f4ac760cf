"""The built-in server: binds ``127.0.0.1:$PORT`` (a thread per connection, standard library
only), turns each ``POST`` into a :class:`~keel.Request` for the handler and its answer into the
contract's response; ``GET`` on any path answers 200 so that ``health_path`` may point anywhere.
SIGTERM (Keel stopping an instance) stops accepting and lets requests in flight finish."""

from __future__ import annotations

import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from .errors import reason
from .handler import Answer, Handler, respond

#: Port used when ``PORT`` is not set (running the function by hand).
DEFAULT_PORT = 8080


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: Handler) -> None:
        self.keel_handler = handler
        self.in_flight = 0
        self.idle = threading.Condition()
        super().__init__(address, _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _answer(self) -> None:
        with self.server.idle:
            self.server.in_flight += 1
        try:
            try:
                body = self._read_body()
            except (OSError, ValueError):
                self.close_connection = True
                return
            response = respond(self.server.keel_handler, self.command, self.path, self.headers.items(), body)
            self._send(response)
        finally:
            with self.server.idle:
                self.server.in_flight -= 1
                self.server.idle.notify_all()

    def _send(self, response: Answer) -> None:
        self.send_response(response.status, reason(response.status))
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_POST = do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def version_string(self) -> str:
        return "keel-python"


def make_server(handler: Handler, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server for ``handler`` bound to ``host:port`` (``0``: a free port, see
    ``server.server_address``), not yet serving: call ``serve_forever()`` (tests run it in a
    thread and stop it with ``shutdown()``)."""
    return _Server((host, port), handler)


def serve(handler: Handler, *, port: int | None = None, host: str = "127.0.0.1", grace: float = 30.0) -> None:
    """Serves ``handler`` on ``host:$PORT`` (8080 when ``PORT`` is not set) until SIGTERM or
    Ctrl-C, then lets requests in flight finish (up to ``grace`` seconds).

    >>> import keel
    >>> def hello(req: keel.Request) -> dict[str, int]:
    ...     return {"attempt": req.ctx.attempt}
    >>> # keel.serve(hello)
    """
    if port is None:
        text = os.environ.get("PORT", str(DEFAULT_PORT))
        if not text.isdigit() or not 0 <= int(text) <= 65535:
            raise SystemExit(f"PORT={text!r} is not a port number")
        port = int(text)
    server = _Server((host, port), handler)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            # shutdown() waits for serve_forever to return: not from its own thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        with server.idle:
            server.idle.wait_for(lambda: server.in_flight == 0, timeout=grace)
        server.server_close()
        sys.stdout.flush()
