"""A local stand-in for the Hugging Face hub (pointed at by HF_ENDPOINT): one model's files in the
hub's layout, served slowly, with the metadata and headers the hub gives (tests of model downloads)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["REPO", "COMMIT", "CHUNK", "PAUSE_S", "StandInHub"]

REPO = "Qwen/Qwen2.5-Coder-0.5B"
COMMIT = "c0ffee" * 6 + "abcd"
CHUNK = 8 << 10  # the stand-in sends this much, then pauses (so a cancel lands mid-download)
PAUSE_S = 0.015


class StandInHub:
    """Serves one model folder in the hub's layout over HTTP, as huggingface.co does, slowly.

    ``GET /api/models/{repo}/revision/{rev}``: commit and files (size, blob id, LFS sha256);
    ``GET|HEAD /{repo}/resolve/{rev}/{file}``: the file, with X-Repo-Commit, ETag, Content-Length and Range.
    """

    def __init__(self, folder: str, *, corrupt: str = "", pause_s: float = PAUSE_S):
        self.pause_s = pause_s  # after each CHUNK: slow enough for a cancel to land mid-download
        self.files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        self.corrupt = corrupt  # a file served with one byte changed (its metadata stays right)
        self.sent = 0  # body bytes sent, all requests together
        self.ranges: list[str] = []  # the Range headers of file requests ("" for none)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _meta(self, name: str, data: bytes) -> dict:
        entry = {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
        if name.endswith(".safetensors"):
            entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def _serve(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = handler.path.split("?", 1)[0]
        prefix_api, prefix_file = f"/api/models/{REPO}/revision/", f"/{REPO}/resolve/"
        if path.startswith(prefix_api):
            payload = json.dumps({"id": REPO, "sha": COMMIT,
                                  "siblings": [self._meta(n, d) for n, d in self.files.items()]}).encode()  # fmt: skip
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            if body:
                handler.wfile.write(payload)
            return
        if not path.startswith(prefix_file) or path[len(prefix_file):].split("/", 1)[-1] not in self.files:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        name = path[len(prefix_file):].split("/", 1)[1]
        data = self.files[name]
        if name == self.corrupt:
            data = bytes([data[0] ^ 1]) + data[1:]
        meta = self._meta(name, self.files[name])
        start = 0
        wanted = handler.headers.get("Range", "")
        self.ranges.append(wanted)
        if wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[6:-1])
        handler.send_response(206 if start else 200)
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.send_header("ETag", f'"{meta.get("lfs", {}).get("sha256") or meta["blobId"]}"')
        handler.send_header("Content-Length", str(len(data) - start))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if not body:
            return
        try:
            for i in range(start, len(data), CHUNK):
                piece = data[i:i + CHUNK]
                handler.wfile.write(piece)
                handler.wfile.flush()
                self.sent += len(piece)
                time.sleep(self.pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client cancelled
