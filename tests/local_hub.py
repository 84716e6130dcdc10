"""A Hugging Face Hub stand-in on 127.0.0.1: serves ``ROOT/owner/name/<files>`` as ``huggingface_hub`` expects.

Enough of the Hub's file protocol for ``hf_hub_download``: ``HEAD``/``GET /owner/name/resolve/REVISION/PATH``
answer with ``X-Repo-Commit`` and ``ETag`` headers, and a missing repository or file answers 404 with the
``X-Error-Code`` the client turns into ``RepositoryNotFoundError`` or ``EntryNotFoundError``. Every request is
logged, so a test can prove the second load came from the cache.

    with serve_hub(root) as hub:   # sets nothing; pass hub.endpoint as HF_ENDPOINT
        ...
        hub.requests               # [(method, path, status), ...]
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from local_http import loopback


class LocalHub:
    def __init__(self, httpd: ThreadingHTTPServer, root: Path) -> None:
        self.httpd, self.root = httpd, root
        self.requests: list[tuple[str, str, int]] = []

    @property
    def endpoint(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @staticmethod
    def commit(repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()  # one fixed commit per repository


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, send_body: bool) -> None:
            parts = self.path.split("?")[0].lstrip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._fail(404, "RepoNotFound")
            repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            folder = hub.root / repo
            if not folder.is_dir():
                return self._fail(404, "RepoNotFound")
            if revision not in ("main", hub.commit(repo)):
                return self._fail(404, "RevisionNotFound", repo)
            path = folder / name
            if not path.is_file():
                return self._fail(404, "EntryNotFound", repo)
            data = path.read_bytes()
            hub.requests.append((self.command, self.path, 200))
            self.send_response(200)
            self.send_header("X-Repo-Commit", hub.commit(repo))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if send_body:
                self.wfile.write(data)

        def _fail(self, status: int, code: str, repo: str | None = None) -> None:
            hub.requests.append((self.command, self.path, status))
            body = f'{{"error": "{code}"}}'.encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            if repo is not None:
                self.send_header("X-Repo-Commit", hub.commit(repo))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(send_body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(send_body=True)

    return Handler


@contextlib.contextmanager
def serve_hub(root: str | Path) -> Iterator[LocalHub]:
    """Serve the repositories under ``root`` (``root/owner/name/...``) on a free port of 127.0.0.1."""
    with loopback() as httpd:
        hub = LocalHub(httpd, Path(root))
        httpd.RequestHandlerClass = _handler(hub)
        yield hub
