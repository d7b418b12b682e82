"""A tiny HTTP server on 127.0.0.1 for the data-script tests.

It serves bytes from a dict (path -> content) with an ``ETag`` and a
``Last-Modified`` that change with the content, answers ``Range: bytes=N-``
with 206 (unless ``If-Range`` names an older version: then the whole new file
with 200, as RFC 9110 says), can drop the connection partway through a
response, and records every request so a test can see that a download was
resumed. Switches make it behave like worse servers: no ``Content-Length``
(the body ends when the connection closes), no validators, ``If-Range``
ignored, ``Range`` ignored.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from contextlib import contextmanager
from email.utils import formatdate


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        state = self.server.state
        state.requests.append((self.path, self.headers.get("Range")))
        state.if_ranges.append(self.headers.get("If-Range"))
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404, "not found")
            return
        etag, modified = state.validators_of(self.path)
        start = 0
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        current = if_range is None or not state.if_range or if_range in (etag,
                                                                         modified)
        if rng and state.ranges and current:
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
        if state.validators:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
        if state.content_length:
            self.send_header("Content-Length", str(len(body)))
        else:  # the body ends when the connection closes
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        drops = state.drops.get(self.path, 0)
        if drops:
            # Promise the whole body, send part of it, hang up.
            state.drops[self.path] = drops - 1
            self.wfile.write(body[: int(len(body) * state.drop_at)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class _State:
    def __init__(self):
        self.files: dict[str, bytes] = {}  # URL path -> content
        self.versions: dict[str, int] = {}  # URL path -> times it was (re)added
        self.drops: dict[str, int] = {}  # URL path -> responses still to cut
        self.drop_at = 0.5  # the fraction of a cut response that is sent
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.if_ranges: list[str | None] = []  # the If-Range header of each
        self.ranges = True  # False: ignore Range headers like a plain server
        self.if_range = True  # False: ignore If-Range (serve any range asked)
        self.validators = True  # False: send neither ETag nor Last-Modified
        self.content_length = True  # False: no Content-Length, close at the end

    def add(self, path: str, data: bytes) -> None:
        self.files[path] = data
        self.versions[path] = self.versions.get(path, 0) + 1

    def validators_of(self, path: str) -> tuple[str, str]:
        digest = hashlib.sha256(self.files[path]).hexdigest()[:16]
        when = formatdate(1_700_000_000 + 60 * self.versions[path], usegmt=True)
        return f'"{digest}"', when


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
