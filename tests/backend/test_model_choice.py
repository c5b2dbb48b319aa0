"""The model choice "auto": a real code model found on the machine beats the embedded one; why is said."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from specgen_backend.cli import default_model
from specgen_backend.model_choice import CATALOG, Memory, choose_model, fits, probe_memory
from specgen_backend.server import Backend, BackendConfig
from websockets.asyncio.client import connect

CPU_24GB = Memory(device="cpu", free=20 << 30, total=24 << 30)
GPU_80GB = Memory(device="cuda:0", free=70 << 30, total=80 << 30)
QWEN_05B, QWEN_3B = "Qwen/Qwen2.5-Coder-0.5B", "Qwen/Qwen2.5-Coder-3B"


def hub_cache_entry(cache: Path, repo_id: str, model_folder: str, commit: str = "a" * 40) -> Path:
    """Lay ``model_folder`` out in ``cache`` as the Hugging Face cache does; return the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(Path(model_folder).iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache, offline: nothing may come from the network."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_cached_model_of_the_list_beats_the_embedded_one(hub_cache, tiny_model):
    """A listed code model in the hub cache is chosen over the embedded model, and the reason says where it was."""
    snapshot = hub_cache_entry(hub_cache, QWEN_05B, tiny_model)
    choice = choose_model("auto", memory=CPU_24GB)
    assert choice.source == "hf_cache" and choice.name == QWEN_05B
    assert Path(choice.model) == snapshot and choice.offer is None
    assert "Qwen2.5-Coder-0.5B found in the Hugging Face cache" in choice.reason
    assert "24 GB of RAM on CPU" in choice.reason


def test_nothing_cached_gives_the_embedded_model_and_an_offer(hub_cache):
    """With an empty cache the embedded model serves, and the 0.5B model is offered for download on a CPU."""
    choice = choose_model("auto", memory=CPU_24GB)
    assert choice.source == "embedded" and choice.model == default_model()
    assert choice.offer is not None and choice.offer.repo_id == QWEN_05B
    assert "no code model of the list" in choice.reason and "embedded model" in choice.reason


def test_an_incomplete_cache_entry_is_not_chosen(hub_cache, tiny_model):
    """A cache entry without its weights (a download that broke off) is passed over."""
    snapshot = hub_cache_entry(hub_cache, QWEN_05B, tiny_model)
    (snapshot / "model.safetensors").unlink()
    assert choose_model("auto", memory=CPU_24GB).source == "embedded"


def test_the_largest_that_fits_the_device(hub_cache, tiny_model):
    """With 0.5B and 3B cached: a CPU keeps to the 0.5B class, a large GPU takes the 3B, a small GPU the 0.5B."""
    hub_cache_entry(hub_cache, QWEN_05B, tiny_model)
    hub_cache_entry(hub_cache, QWEN_3B, tiny_model)
    assert choose_model("auto", memory=CPU_24GB).name == QWEN_05B
    on_gpu = choose_model("auto", memory=GPU_80GB)
    assert on_gpu.name == QWEN_3B and "the largest of the list that fits 70 GB free of GPU memory" in on_gpu.reason
    assert choose_model("auto", memory=Memory(device="cuda:0", free=4 << 30, total=8 << 30)).name == QWEN_05B


def test_a_cached_model_too_large_for_the_device_is_said(hub_cache, tiny_model):
    """Only a 3B model cached on a CPU: the embedded model serves and the reason names the 3B as too large."""
    hub_cache_entry(hub_cache, QWEN_3B, tiny_model)
    choice = choose_model("auto", memory=CPU_24GB)
    assert choice.source == "embedded" and "Qwen2.5-Coder-3B found but too large" in choice.reason


def test_model_dir_setting(hub_cache, tiny_model, tmp_path):
    """A model folder copied by hand into a folder of the model_dirs setting is found by its name."""
    models = tmp_path / "models"
    shutil.copytree(tiny_model, models / "Qwen2.5-Coder-0.5B")
    choice = choose_model("auto", model_dirs=[str(models)], memory=CPU_24GB)
    assert choice.source == "model_dir" and choice.name == QWEN_05B
    assert Path(choice.model) == models / "Qwen2.5-Coder-0.5B" and f"found in {models}" in choice.reason


def test_configured_model_wins(hub_cache, tiny_model):
    """An explicit model is used as it is, whatever is cached."""
    hub_cache_entry(hub_cache, QWEN_05B, tiny_model)
    choice = choose_model(tiny_model, memory=CPU_24GB)
    assert choice.source == "configured" and choice.model == tiny_model
    assert "set by SpecgenExtension.model" in choice.reason


def test_fits_keeps_cpu_to_the_small_class():
    """On a CPU with plenty of RAM only the 0.5B class fits the latency budget; on a large GPU all of them do."""
    assert [m.repo_id for m in CATALOG if fits(m, CPU_24GB)] == [QWEN_05B]
    assert all(fits(m, GPU_80GB) for m in CATALOG)


@pytest.mark.asyncio
async def test_backend_auto_serves_the_cached_model_and_says_why(hub_cache, tiny_model):
    """A backend started with model "auto" serves the cached model and names it and the reason in its status."""
    if not fits(CATALOG[0], probe_memory("cpu")):
        pytest.skip("this machine has too little free RAM for the 0.5B class, so auto rightly passes it over")
    hub_cache_entry(hub_cache, QWEN_05B, tiny_model)
    backend = Backend(BackendConfig(model="auto", token="t", device="cpu"))
    await backend.start()
    try:
        async with connect(backend.url, additional_headers={"Authorization": "Bearer t"}) as ws:
            status = json.loads(await ws.recv())
            while status["state"] == "loading":
                status = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert status["state"] == "ready", status
            assert status["model"] == QWEN_05B and "found in the Hugging Face cache" in status["reason"]
            assert status["offer"] is None
    finally:
        await backend.close()
