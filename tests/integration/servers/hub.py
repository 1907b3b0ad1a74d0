"""A stand-in for the Hugging Face Hub's HTTP API, enough for huggingface_hub's model_info and
hf_hub_download: repositories are folders of `root` (root/<org>/<name>/<files>), each at one
commit. A token, when set, is required for every request; repositories named `gated-*` answer
as gated ones do. Runs in a thread of the test process."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub:
    def __init__(self, root: Path, token: str | None) -> None:
        self.root, self.token = root, token
        self.requests: list[tuple[str, str]] = []

    def files(self, repo: str) -> dict[str, Path]:
        base = self.root / repo
        return {str(p.relative_to(base)): p for p in sorted(base.rglob("*")) if p.is_file()}


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _error(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _route(self) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                return self._error(401, "RepoNotFound", "Repository not found")
            if path.startswith("/api/models/"):
                repo, _, revision = path.removeprefix("/api/models/").partition("/revision/")
                return self._info(repo, revision or "main")
            repo, sep, rest = path.lstrip("/").partition("/resolve/")
            if not sep:
                return self._error(404, "EntryNotFound", "Not found")
            revision, _, name = rest.partition("/")
            return self._file(repo, revision, name)

        def _repo(self, repo: str, revision: str) -> bool:
            if repo.split("/")[-1].startswith("gated-"):
                self._error(403, "GatedRepo", "Access to model is restricted")
                return False
            if not (hub.root / repo).is_dir():
                self._error(404, "RepoNotFound", "Repository not found")
                return False
            if revision not in ("main", COMMIT):
                self._error(404, "RevisionNotFound", "Invalid rev id")
                return False
            return True

        def _info(self, repo: str, revision: str) -> None:
            if not self._repo(repo, revision):
                return
            siblings = [
                {"rfilename": name, "size": path.stat().st_size}
                for name, path in hub.files(repo).items()
            ]
            body = json.dumps({"id": repo, "sha": COMMIT, "siblings": siblings}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self, repo: str, revision: str, name: str) -> None:
            if not self._repo(repo, revision):
                return
            path = hub.files(repo).get(name)
            if path is None:
                return self._error(404, "EntryNotFound", "Entry not found")
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(data)

        do_GET = do_HEAD = _route

    return Handler


@contextmanager
def serve_hub(root: Path, token: str | None = None) -> Iterator[tuple[str, Hub]]:
    """(endpoint URL, hub) while the server runs."""
    hub = Hub(root, token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hub
    finally:
        server.shutdown()
        server.server_close()
