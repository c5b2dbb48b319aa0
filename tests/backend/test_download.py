"""Downloading a model: against a local stand-in for the Hugging Face hub (HF_ENDPOINT), with progress in
order, cancel and resume, verification, the hot switch of a running backend, and the offline answer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import pytest_asyncio
from specgen_backend.download import DownloadError, download_model
from specgen_backend.model_choice import find_cached
from specgen_backend.protocol import PROTOCOL_VERSION
from specgen_backend.server import Backend, BackendConfig
from websockets.asyncio.client import connect

from ..hub_stand_in import COMMIT, REPO, StandInHub

TOKEN = "test-token"


@pytest.fixture(scope="module")
def second_model(tmp_path_factory) -> str:
    """Another tiny model (other weights) to download: the one a switched backend must serve."""
    from specgen_backend.tiny import TinyModelConfig, build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("download-model"), TinyModelConfig(seed=1)))


@pytest.fixture
def hub(second_model, tmp_path, monkeypatch):
    stand_in = StandInHub(second_model)
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield stand_in
    stand_in.close()


def test_download_fills_the_hub_cache_verified(hub, second_model):
    """A download lays the model out as the hub cache (found by "auto"), reports progress in order, and says what it verified."""
    events = []
    done = download_model(REPO, on_progress=events.append)
    total = sum(len(d) for d in hub.files.values())
    assert done.total == total and done.transferred == total and done.commit == COMMIT
    assert find_cached(REPO) == Path(done.path)
    for name, data in hub.files.items():
        assert (Path(done.path) / name).read_bytes() == data
    assert "sha256" in done.verified and "sha1" in done.verified
    dones = [e.done for e in events]
    assert dones == sorted(dones) and dones[-1] == total and events[-1].eta_s == 0.0
    assert len(events) >= 3 and all(e.total == total for e in events)
    assert any(e.rate > 0 and e.eta_s and 0 < e.done < total for e in events)
    again = download_model(REPO)
    assert again.transferred == 0  # all there: nothing is fetched twice


def test_cancel_keeps_the_partial_and_resume_goes_on(hub):
    """A cancelled download keeps what came; the next one asks for the rest (Range) and transfers fewer bytes."""
    from specgen_backend.download import Cancelled

    cancel = threading.Event()
    seen = []

    def progress(p):
        seen.append(p)
        if p.transferred > 64 << 10:
            cancel.set()

    with pytest.raises(Cancelled, match="kept, the next download goes on"):
        download_model(REPO, on_progress=progress, cancel=cancel)
    first = seen[-1].transferred
    total = seen[-1].total
    assert 0 < first < total
    done = download_model(REPO)
    assert done.transferred < total and done.transferred + first >= total
    assert any(r.startswith("bytes=") for r in hub.ranges)  # the partial file went on, not from zero
    assert find_cached(REPO) is not None


def test_a_corrupt_file_is_refused(second_model, tmp_path, monkeypatch):
    """A file whose content does not match the hub's sha256 is deleted and the download fails, saying so."""
    stand_in = StandInHub(second_model, corrupt="model.safetensors")
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    try:
        with pytest.raises(DownloadError, match="model.safetensors failed verification"):
            download_model(REPO)
        assert find_cached(REPO) is None
        assert not list((tmp_path / "hub").rglob("*.incomplete"))
    finally:
        stand_in.close()


def test_cli_download_shows_a_bar_and_resumes_after_ctrl_c(hub):
    """``specgen-backend download``: a tqdm bar; Ctrl+C exits 130 keeping the partial; run again, it finishes with less."""
    env = {**os.environ}
    cmd = [sys.executable, "-m", "specgen_backend", "download", REPO]
    # A terminal's Ctrl+C: the child must not inherit an ignored SIGINT. A test run started in the
    # background of a shell (``bash .ci/run &``) ignores it, an ignored signal stays ignored across
    # exec, and Python then never raises KeyboardInterrupt: the download ran to its end.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 60
    while hub.sent < 64 << 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; what came is kept" in err
    sent_before = hub.sent
    again = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    total = sum(len(d) for d in hub.files.values())
    assert hub.sent - sent_before < total
    assert "B/s" in again.stderr and "100%" in again.stderr and "verified" in again.stderr


# -- over the backend's websocket ----------------------------------------------------------------


@pytest_asyncio.fixture
async def backend(tiny_model, hub):
    server = Backend(BackendConfig(model=tiny_model, token=TOKEN, device="cpu"))
    await server.start()
    yield server
    await server.close()


async def _connect(backend):
    ws = await connect(backend.url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
    status = json.loads(await ws.recv())
    while status["state"] == "loading":
        status = json.loads(await asyncio.wait_for(ws.recv(), 60))
    assert status["state"] == "ready", status
    return ws, status


def _frame(type, id, **body):
    return json.dumps({"type": type, "version": PROTOCOL_VERSION, "id": id, **body})


async def _until_final(ws, id, finals=("model_downloaded", "error", "result"), timeout=90):
    """(frames of request ``id`` up to its final answer, the status frames pushed meanwhile)."""
    frames, statuses = [], []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame["type"] == "status" and frame["reply_to"] is None:
            statuses.append(frame)
        elif frame.get("reply_to") == id:
            frames.append(frame)
            if frame["type"] in finals:
                return frames, statuses


@pytest.mark.asyncio
async def test_backend_download_cancel_resume_and_hot_switch(backend, tiny_model, hub):
    """model_download streams progress in order, a cancel stops it (partial kept), a second one resumes
    with fewer bytes and switches the running backend: its status and the next generate name the new model."""
    ws, status = await _connect(backend)
    assert status["model"] == tiny_model
    total = sum(len(d) for d in hub.files.values())

    await ws.send(_frame("model_download", "d1", model=REPO))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if frame.get("reply_to") == "d1" and frame["type"] == "download_progress" and frame["transferred_bytes"] > 0:
            break
    await ws.send(_frame("cancel", "d1"))
    frames, _ = await _until_final(ws, "d1")
    assert frames[-1]["type"] == "error" and frames[-1]["error"]["type"] == "cancelled", frames[-1]
    assert "kept" in frames[-1]["error"]["message"]
    sent_at_cancel = hub.sent
    assert 0 < sent_at_cancel < total

    await ws.send(_frame("model_download", "d2", model=REPO))
    frames, statuses = await _until_final(ws, "d2")
    final = frames[-1]
    assert final["type"] == "model_downloaded", final
    assert final["switched"] and final["transferred_bytes"] < total and final["total_bytes"] == total
    progress = [f for f in frames if f["type"] == "download_progress"]
    assert len(progress) >= 3
    assert [f["done_bytes"] for f in progress] == sorted(f["done_bytes"] for f in progress)
    assert progress[0]["done_bytes"] > 0  # what the cancelled download left counts from the start
    assert progress[-1]["phase"] == "load" and all(f["phase"] == "download" for f in progress[:-1])
    assert any(f["rate"] > 0 and f["eta_s"] is not None for f in progress)

    while not any(s["model"] == REPO for s in statuses):  # the new model's status is pushed to every connection
        statuses.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    switched = next(s for s in statuses if s["model"] == REPO)
    assert switched["state"] == "ready" and "downloaded on request" in switched["reason"]

    body = {"user": "alice", "context": {"prefix": "def add(a, b):\n    return"}, "max_tokens": 8}
    await ws.send(_frame("generate", "g1", **body))
    frames, _ = await _until_final(ws, "g1")
    assert frames[-1]["type"] == "result" and frames[-1]["model"] == REPO
    await ws.send(_frame("status_request", "s1"))
    frames, _ = await _until_final(ws, "s1", finals=("status",))
    assert frames[-1]["model"] == REPO
    await ws.close()


@pytest.mark.asyncio
async def test_backend_refuses_models_off_the_list(backend, hub):
    """Only the models of the list are downloaded on a client's request; anything else is refused at once."""
    ws, _ = await _connect(backend)
    await ws.send(_frame("model_download", 1, model="someone/anything"))
    frames, _ = await _until_final(ws, 1, timeout=10)
    assert frames[-1]["error"]["type"] == "bad_request" and "Qwen/Qwen2.5-Coder-0.5B" in frames[-1]["error"]["message"]
    assert not frames[:-1] and hub.sent == 0  # no progress, nothing fetched
    await ws.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable"])
async def test_offline_answers_at_once_how_to_copy_a_model_in(tiny_model, tmp_path, monkeypatch, how):
    """Without network a model_download is answered within seconds: no network, and which folder and setting to copy a model into."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        import socket

        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    models = tmp_path / "models"
    server = Backend(BackendConfig(model=tiny_model, token=TOKEN, device="cpu", model_dirs=(str(models),)))
    await server.start()
    try:
        ws, _ = await _connect(server)
        started = time.monotonic()
        await ws.send(_frame("model_download", 7, model=REPO))
        frames, _ = await _until_final(ws, 7, timeout=10)
        assert time.monotonic() - started < 8
        error = frames[-1]["error"]
        assert error["type"] == "offline" and error["message"].startswith("no network")
        assert str(models / "Qwen2.5-Coder-0.5B") in error["message"] and "SpecgenExtension.model_dirs" in error["message"]
        assert not list((tmp_path / "hub").rglob("*"))  # nothing was written
        await ws.close()
    finally:
        await server.close()
