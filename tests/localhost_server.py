"""A tiny HTTP server on 127.0.0.1 for the data-script tests.

It serves bytes from a dict (path -> content), answers ``Range: bytes=N-``
requests with 206, can drop the connection halfway through a response, and
records every request so a test can see that a download was resumed.
"""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        state = self.server.state
        state.requests.append((self.path, self.headers.get("Range")))
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404, "not found")
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and state.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range",
                             f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        drops = state.drops.get(self.path, 0)
        if drops:
            # Promise the whole body, send half of it, hang up.
            state.drops[self.path] = drops - 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class _State:
    def __init__(self):
        self.files: dict[str, bytes] = {}  # URL path -> content
        self.drops: dict[str, int] = {}  # URL path -> responses still to cut
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.ranges = True  # False: ignore Range headers like a plain server

    def add(self, path: str, data: bytes) -> None:
        self.files[path] = data


@contextmanager
def serve():
    """Run the server in a thread; yields ``(base_url, state)``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.state = _State()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
