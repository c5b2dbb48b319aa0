"""The one-click download through the server extension: the status offers a model while the embedded one serves,
a tab's model_download is relayed to the backend (against a stand-in hub) with its progress, and the
status pushed afterwards names the new model."""

from __future__ import annotations

import asyncio
import json

import pytest

from jupyter_specgen.protocol import PROTOCOL_VERSION
from specgen_backend.model_choice import CATALOG, fits, probe_memory
from ..hub_stand_in import REPO, StandInHub


@pytest.fixture
def stand_in_hub(tmp_path_factory, monkeypatch):
    from specgen_backend.tiny import TinyModelConfig, build_tiny_model

    if not fits(CATALOG[0], probe_memory("cpu")):
        pytest.skip("too little free RAM here for the 0.5B class: nothing would be offered")
    hub = StandInHub(str(build_tiny_model(tmp_path_factory.mktemp("offered"), TinyModelConfig(seed=2))))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)  # the backend child inherits the environment
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hub-cache")))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield hub
    hub.close()


@pytest.fixture
def jp_server_config(stand_in_hub, tmp_path):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}},
        "SpecgenExtension": {"model": "auto", "model_dirs": [str(tmp_path / "models")], "kernel_specs": False,
                             "validate": False, "max_tokens": 8, "candidates": 1},
    }


async def _status(ws, until):
    while True:
        frame = json.loads(await asyncio.wait_for(ws.read_message(), 120))
        if frame["type"] == "status" and until(frame):
            return frame


async def test_offer_click_progress_and_switch(jp_serverapp, jp_ws_fetch, stand_in_hub):
    """Embedded model + offer in the status; model_download relays progress in order, ends once, and the new status names the model."""
    ws = await jp_ws_fetch("specgen", "ws")
    ready = await _status(ws, lambda s: s["state"] != "starting")
    assert ready["state"] == "ready", ready
    assert ready["model"] == "specgen-tiny-code" and "embedded model" in ready["reason"]
    assert ready["offer"]["model"] == REPO and ready["offer"]["bytes"] > 900_000_000

    ws.write_message(json.dumps({"type": "model_download", "version": PROTOCOL_VERSION, "id": 5}))
    progress, statuses = [], []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.read_message(), 120))
        if frame["type"] == "status":
            statuses.append(frame)
            continue
        assert frame["reply_to"] == 5, frame
        if frame["type"] == "download_progress":
            progress.append(frame)
            continue
        final = frame
        break
    assert final["type"] == "model_downloaded" and final["switched"], final
    assert len(progress) >= 2 and [p["done_bytes"] for p in progress] == sorted(p["done_bytes"] for p in progress)
    assert progress[-1]["phase"] == "load"
    switched = next((s for s in statuses if s["model"] == REPO), None) or await _status(ws, lambda s: s["model"] == REPO)
    assert switched["state"] == "ready" and switched["offer"] is None and "downloaded on request" in switched["reason"]
    ws.close()
