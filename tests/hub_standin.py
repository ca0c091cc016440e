"""A stand-in for the Hugging Face Hub HTTP API on 127.0.0.1, for offline tests of the real ``huggingface_hub`` code.

It implements only what ``huggingface_hub`` calls for ``whoami``, ``create_repo``, ``create_commit`` (preupload
answers "regular" for every file, so no LFS/Xet; the commit carries base64 contents in ndjson; a README.md's
YAML metadata is checked by ``/api/validate-yaml``) and
``snapshot_download`` (repo info at a revision, the recursive tree, and HEAD/GET on ``/{repo}/resolve/{rev}/{path}``
with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``). Errors carry the ``X-Error-Code`` headers that
``huggingface_hub`` turns into ``RepositoryNotFoundError``, ``RevisionNotFoundError`` and ``EntryNotFoundError``.

Point a subprocess at it with ``HF_ENDPOINT=hub.endpoint``; ``hub.requests`` records ``(method, path)`` of every call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN = "fake-write-token"
USER = "user"
MAX_BODY = 256 * 1024 * 1024


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class Repo:
    def __init__(self, repo_type: str = "model", private: bool | None = None):
        self.repo_type, self.private = repo_type, private
        self.commits: dict[str, dict[str, bytes]] = {}  # sha -> files
        self.branches: dict[str, str] = {}  # branch -> sha
        self.commit({}, "initial commit")

    def commit(self, files: dict[str, bytes], message: str, branch: str = "main") -> str:
        parent = self.branches.get(branch, "")
        digest = hashlib.sha1(parent.encode() + message.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha(files[path]).encode())
        sha = digest.hexdigest()
        self.commits[sha] = dict(files)
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        revision = unquote(revision)
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class FakeHub:
    """``with FakeHub() as hub:`` serves on ``hub.endpoint`` until the block ends."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(_Handler):
            owner = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(revision)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FakeHub

    def log_message(self, *args) -> None:  # quiet
        pass

    # ---------------------------------------------------------------- plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            for _ in range(1_000_000):
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length)

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, *, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict | None = None, *, head: bool = False) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})},
                   head=head)

    def _error(self, status: int, code: str | None, message: str, *, head: bool = False) -> None:
        self._json(status, {"error": message}, {"X-Error-Code": code} if code else None, head=head)

    def _authorised(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {TOKEN}"

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        with self.owner.lock:
            self.owner.requests.append((method, path))
        body = self._body() if method == "POST" else b""
        parts = path.strip("/").split("/")
        head = method == "HEAD"
        if path == "/api/whoami-v2" and method == "GET":
            if not self._authorised():
                return self._error(401, None, "Invalid credentials in Authorization header")
            return self._json(200, {"type": "user", "name": USER, "auth": {"accessToken": {"role": "write"}}})
        if path == "/api/repos/create" and method == "POST":
            return self._create(json.loads(body))
        if path == "/api/validate-yaml" and method == "POST":  # create_commit checks a README.md's metadata
            return self._validate_yaml(json.loads(body)["content"])
        if len(parts) >= 6 and parts[0] == "api" and parts[1] in ("models", "datasets"):
            repo_id, action, rest = f"{parts[2]}/{parts[3]}", parts[4], parts[5:]
            return self._api(method, repo_id, action, rest, body, parse_qs(url.query))
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head=head)
        return self._error(404, None, f"the stand-in does not implement {method} {path}", head=head)

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    # ---------------------------------------------------------------- endpoints
    def _create(self, payload: dict) -> None:
        if not self._authorised():
            return self._error(401, None, "Invalid credentials in Authorization header")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = f"{self.owner.endpoint}/{repo_id}"
        with self.owner.lock:
            if repo_id in self.owner.repos:
                return self._json(409, {"error": "You already created this model repo", "url": url})
            private = payload.get("private", None if "visibility" not in payload else payload["visibility"] == "private")
            self.owner.repos[repo_id] = Repo(payload.get("type") or "model", private)
        return self._json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, content: str) -> None:
        import yaml

        head, sep, _ = content.removeprefix("---\n").partition("\n---\n")
        try:
            metadata = yaml.safe_load(head) if content.startswith("---\n") and sep else None
        except yaml.YAMLError as err:
            return self._json(400, {"errors": [{"message": str(err)}]})
        if not isinstance(metadata, dict):
            return self._json(400, {"errors": [{"message": "README.md has no YAML metadata block"}]})
        return self._json(200, {"warnings": []})

    def _api(self, method: str, repo_id: str, action: str, rest: list[str], body: bytes, query: dict) -> None:
        repo = self.owner.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if method == "POST" and action in ("preupload", "commit") and not self._authorised():
            return self._error(401, None, "Invalid credentials in Authorization header")
        if method == "POST" and action == "preupload":
            files = json.loads(body)["files"]
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                               "oid": None} for f in files]})
        if method == "POST" and action == "commit":
            return self._commit(repo, repo_id, unquote(rest[0]), body)
        sha = repo.resolve(rest[0])
        if sha is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        files = repo.commits[sha]
        if method == "GET" and action == "revision":
            return self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                                    "siblings": [{"rfilename": name} for name in sorted(files)]})
        if method == "GET" and action == "tree":
            prefix = "/".join(rest[1:])
            entries = [{"type": "file", "path": name, "size": len(data), "oid": git_blob_sha(data)}
                       for name, data in sorted(files.items()) if name.startswith(prefix)]
            return self._json(200, entries)
        return self._error(404, None, f"the stand-in does not implement {method} {action}")

    def _commit(self, repo: Repo, repo_id: str, branch: str, body: bytes) -> None:
        files = dict(repo.commits[repo.branches[branch]]) if branch in repo.branches else {}
        summary = ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value["summary"]
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"]) if value.get("encoding") == "base64" \
                    else value["content"].encode()
            elif key == "deletedFile":
                files.pop(value["path"], None)
            else:
                return self._error(400, None, f"the stand-in does not accept {key} operations")
        with self.owner.lock:
            sha = repo.commit(files, summary, branch)
        return self._json(200, {"commitUrl": f"{self.owner.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha,
                                "pullRequestUrl": None})

    def _resolve(self, repo_id: str, revision: str, filename: str, *, head: bool) -> None:
        repo = self.owner.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found", head=head)
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id", head=head)
        files = repo.commits[sha]
        if filename not in files:
            return self._error(404, "EntryNotFound", "Entry not found", head=head)
        data = files[filename]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(data)}"', "Content-Type": "application/octet-stream"}
        self._send(200, data, headers, head=head)
