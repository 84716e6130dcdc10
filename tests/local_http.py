"""A real HTTP server on 127.0.0.1 for tests: serves a folder, honours ``Range: bytes=N-``, logs every request.

    with serve(folder) as server:
        url = server.url("file.tar")          # http://127.0.0.1:PORT/file.tar
        ...
        server.requests                        # [Request(path, range, status, sent), ...]

``ranges=False`` answers every request whole (200), like servers without Range support; ``cut_after=N`` sends
a full Content-Length but closes the connection after N body bytes, like a dropped download.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Request:
    path: str
    range: str | None
    status: int
    sent: int


class LocalServer:
    def __init__(self, httpd: ThreadingHTTPServer) -> None:
        self.httpd = httpd
        self.requests: list[Request] = []
        self.ranges = True
        self.cut_after: int | None = None

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


def _handler(folder: Path, server: LocalServer) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = folder / self.path.lstrip("/").split("?")[0]
            wanted = self.headers.get("Range")
            if not path.is_file():
                server.requests.append(Request(self.path, wanted, 404, 0))
                self.send_error(404, "File not found")
                return
            data = path.read_bytes()
            start = 0
            if wanted and server.ranges and wanted.startswith("bytes=") and wanted.endswith("-"):
                start = int(wanted[len("bytes="):-1])
                if start >= len(data):
                    server.requests.append(Request(self.path, wanted, 416, 0))
                    self.send_error(416, "Range Not Satisfiable")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if server.cut_after is not None:
                body = body[: server.cut_after]
                self.close_connection = True
            # Recorded before the body goes out: the client may assert on it as soon as it has read the bytes.
            server.requests.append(Request(self.path, wanted, 206 if start else 200, len(body)))
            self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def loopback() -> Iterator[ThreadingHTTPServer]:
    """A threaded HTTP server on a free port of 127.0.0.1 for the duration of the block; the caller sets its
    ``RequestHandlerClass`` (no request can arrive before the port is handed out)."""
    for key in ("no_proxy", "NO_PROXY"):  # urllib would send 127.0.0.1 through a configured proxy
        os.environ[key] = ",".join(filter(None, [os.environ.get(key), "127.0.0.1", "localhost"]))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serve(folder: str | Path) -> Iterator[LocalServer]:
    """Serve ``folder`` on a free port of 127.0.0.1 for the duration of the block."""
    with loopback() as httpd:
        server = LocalServer(httpd)
        httpd.RequestHandlerClass = _handler(Path(folder), server)
        yield server
