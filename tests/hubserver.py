"""A fake Hugging Face Hub on 127.0.0.1: just the HTTP API huggingface_hub uses to check a token, create a repo,
commit small files and download them again, so pushes and `run=<Hub id>` are tested without the network.

It records every request and the files each commit carries, and can be told to fail: the first N commits with
a status (e.g. 503), or every request with one (401: a bad token). Its `fake_hub` fixture is registered for
every test module by conftest.py (pytest_plugins).
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

import pytest

REPO = r"/api/models/(?P<repo>[^/]+/[^/]+)"
COMMIT_OID = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Request:
    method: str
    path: str
    authorization: Optional[str]
    body: bytes


@dataclass
class FakeHub:
    url: str = ""
    requests: List[Request] = field(default_factory=list)
    repos: Dict[str, dict] = field(default_factory=dict)  # repo id -> {"private": bool}
    commits: List[Dict[str, bytes]] = field(default_factory=list)  # each commit's files: path -> bytes
    fail_commits: int = 0  # fail this many commit requests ...
    fail_status: int = 503  # ... with this status
    reject_all: Optional[int] = None  # answer every request with this status (401: bad token, 403: no access)
    token_role: str = "write"  # what whoami says the token may do
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self, method: Optional[str] = None) -> List[str]:
        return [r.path for r in self.requests if method in (None, r.method)]

    def count(self, pattern: str) -> int:
        return sum(bool(re.search(pattern, r.path)) for r in self.requests)

    @property
    def files(self) -> Dict[str, bytes]:
        """Every file committed so far, latest version of each."""
        return {k: v for commit in self.commits for k, v in commit.items()}


def json_body(handler: BaseHTTPRequestHandler, status: int, payload) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            chunk = handler.rfile.read(size + 2)[:size]  # each chunk ends with CRLF
            if size == 0:
                return b"".join(chunks)
            chunks.append(chunk)
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def route(hub: FakeHub, method: str, path: str, body: bytes):
    """(status, JSON payload) for one request."""
    if hub.reject_all:
        return hub.reject_all, {"error": "Invalid credentials in Authorization header"}
    if method == "GET" and path == "/api/whoami-v2":
        return 200, {
            "type": "user",
            "name": "me",
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": hub.token_role}},
        }
    if method == "POST" and path == "/api/repos/create":
        return create_repo(hub, json.loads(body))
    if method == "POST" and path == "/api/validate-yaml":  # the README.md's front matter
        return 200, {"errors": [], "warnings": []}
    if method == "POST" and (m := re.fullmatch(REPO + r"/preupload/[^/]+", path)):
        # "regular" for every file: its bytes travel inside the commit, so no LFS or Xet upload is needed
        files = json.loads(body)["files"]
        return 200, {
            "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]
        }
    if method == "POST" and (m := re.fullmatch(REPO + r"/commit/[^/]+", path)):
        return commit(hub, m["repo"], body)
    if method == "GET" and (m := re.fullmatch(REPO + r"/tree/[^/]+", path)):  # snapshot_download's file list
        if m["repo"] not in hub.repos:
            return 404, {"error": "Repository not found"}
        return 200, [
            {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
            for name, data in sorted(hub.files.items())
        ]
    if method == "GET" and (m := re.fullmatch(REPO + r"(/revision/[^/]+)?", path)):
        if m["repo"] not in hub.repos:
            return 404, {"error": "Repository not found"}
        return 200, {
            "id": m["repo"],
            "sha": COMMIT_OID,
            "private": hub.repos[m["repo"]]["private"],
            "siblings": [{"rfilename": name} for name in sorted(hub.files)],
        }
    return 404, {"error": f"fake hub: no route for {method} {path}"}


def create_repo(hub: FakeHub, payload: dict):
    repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
    url = f"{hub.url}/{repo_id}"
    if repo_id in hub.repos:
        return 409, {"error": "You already created this model repo", "url": url}
    hub.repos[repo_id] = {"private": payload.get("visibility") == "private" or payload.get("private") is True}
    return 200, {"url": url, "name": repo_id, "id": repo_id}


def commit(hub: FakeHub, repo_id: str, body: bytes):
    if hub.fail_commits > 0:
        hub.fail_commits -= 1
        return hub.fail_status, {"error": "fake hub: failing on purpose"}
    if repo_id not in hub.repos:
        return 404, {"error": "Repository not found"}
    files = {}
    for line in body.splitlines():
        item = json.loads(line)
        if item["key"] == "file":
            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        elif item["key"] != "header":  # lfsFile etc.: the fake hub stores no LFS objects
            return 400, {"error": f"fake hub: unsupported commit operation {item['key']}"}
    hub.commits.append(files)
    return 200, {
        "commitUrl": f"{hub.url}/{repo_id}/commit/{COMMIT_OID}",
        "commitOid": COMMIT_OID,
        "pullRequestUrl": None,
    }


def send_file(handler: BaseHTTPRequestHandler, hub: FakeHub, repo_id: str, name: str) -> None:
    """A file download (`/{repo}/resolve/{revision}/{path}`), with the headers huggingface_hub's cache keys on."""
    data = hub.files.get(name) if repo_id in hub.repos else None
    if data is None:
        handler.send_response(404)
        handler.send_header("X-Error-Code", "EntryNotFound" if repo_id in hub.repos else "RepositoryNotFound")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return
    handler.send_response(200)
    handler.send_header("X-Repo-Commit", COMMIT_OID)
    handler.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if handler.command == "GET":
        handler.wfile.write(data)


def make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def handle_any(self):
            body = read_body(self)
            path = self.path.split("?", 1)[0]
            with hub.lock:
                hub.requests.append(Request(self.command, path, self.headers.get("Authorization"), body))
                download = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/[^/]+/(?P<name>.+)", path)
                if download and not hub.reject_all:
                    return send_file(self, hub, download["repo"], download["name"])
                status, payload = route(hub, self.command, path, body)
            json_body(self, status, payload)

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = handle_any

        def log_message(self, *args):  # keep pytest output clean
            pass

    return Handler


class serve:
    """Run a FakeHub on a free port in a thread: `with serve() as hub: ... hub.url ...`."""

    def __enter__(self) -> FakeHub:
        self.hub = FakeHub()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.hub))
        self.hub.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # a short poll, so shutdown() at teardown takes milliseconds rather than the default half second
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self.hub

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub(monkeypatch):
    """A running FakeHub that huggingface_hub in this process (and subprocesses given os.environ) talks to."""
    from huggingface_hub import constants

    with serve() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        # huggingface_hub reads these at import, before this fixture runs, so the env alone is not enough here:
        # conftest's HF_HUB_OFFLINE=1 is frozen in constants, and its request hook would refuse every request
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        # building request headers fetches an "agent harnesses" registry from constants.ENDPOINT (telemetry);
        # off, in-process and in subprocesses
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        # the import-time endpoint is huggingface.co: point it at a closed local port, so a request that ignored
        # HfApi(endpoint=...) fails here instead of reaching the network
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
        yield hub
