"""Many users on one backend: adapter isolation, continuous batching equals serving alone, metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
import pytest_asyncio
from specgen_backend.protocol import PROTOCOL_VERSION
from specgen_backend.server import Backend, BackendConfig
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

TOKEN = "serving-token"

pytestmark = pytest.mark.asyncio


def make_adapter(base_folder: str, folder, seed: int) -> None:
    """A PEFT LoRA adapter for the tiny model whose weights move the logits visibly.

    The load takes the backend's LOAD_LOCK: a test often makes adapters while a backend it has just
    started loads the model in a worker thread, and two unlocked loads in one process can leave the
    other's weights on the meta device (transformers builds under process-wide context managers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from specgen_backend.loading import LOAD_LOCK

    torch.manual_seed(seed)
    with LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(base_folder)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(30.0)
    peft_model.save_pretrained(str(folder))


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model, tmp_path_factory):
    """<root>/alice/{v1,v2}, <root>/bob/v1, <shared>/common: four distinct adapters."""
    root = tmp_path_factory.mktemp("adapters")
    shared = tmp_path_factory.mktemp("shared")
    for seed, folder in enumerate([root / "alice" / "v1", root / "alice" / "v2", root / "bob" / "v1", shared / "common"]):
        make_adapter(tiny_model, folder, seed + 1)
    return root, shared


@pytest_asyncio.fixture
async def backend(tiny_model, adapter_dirs):
    root, shared = adapter_dirs
    server = Backend(BackendConfig(model=tiny_model, token=TOKEN, adapter_root=str(root), shared_adapters=str(shared), max_batch=16))
    await server.start()
    yield server
    await server.close()


async def connect_ready(backend, token=TOKEN):
    ws = await connect(backend.url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None)
    status = json.loads(await ws.recv())
    while status["state"] == "loading":
        status = json.loads(await asyncio.wait_for(ws.recv(), 60))
    assert status["state"] == "ready", status
    return ws


def frame(type, id, **kw):
    return json.dumps({"type": type, "version": PROTOCOL_VERSION, "id": id, **kw})


PREFIXES = ["def add(a, b):\n    return", "import numpy as np\nx = np.", "for i in range(", "df = pd.read_csv(", "print(", "class Foo:\n    def"]


def generate(id, user="alice", prefix=PREFIXES[0], **kw):
    return frame("generate", id, user=user, context={"prefix": prefix}, **kw)


async def final(ws, id, timeout=60):
    """The final answer to ``id`` (skipping tokens and other requests' frames)."""
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg.get("reply_to") == id and msg["type"] not in ("token", "candidate_end", "status"):
            return msg


async def request(ws, raw, id):
    await ws.send(raw)
    return await final(ws, id)


async def load(ws, user, name, path, id="load"):
    return await request(ws, frame("adapter_load", id, user=user, name=name, path=path), id)


async def test_users_see_and_use_only_their_own_adapters(backend):
    """Each user lists only their adapters plus shared ones; using or deleting another's is refused."""
    ws = await connect_ready(backend)
    assert (await load(ws, "alice", "v1", "v1"))["adapters"] == ["v1"]
    reply = await load(ws, "bob", "mine", "v1")
    assert reply["adapters"] == ["mine"] and reply["shared"] == ["shared/common"]
    listing = await request(ws, frame("adapters_list", 1, user="alice"), 1)
    assert listing["adapters"] == ["v1"] and listing["shared"] == ["shared/common"]
    refused = await request(ws, generate(2, user="bob", adapters=["v1"]), 2)
    assert refused["type"] == "error" and refused["error"]["type"] == "unknown_adapter"
    assert "'v1'" in refused["error"]["message"] and "mine" in refused["error"]["message"]
    refused = await request(ws, generate(3, user="bob", adapters=["../alice/v1"]), 3)
    assert refused["error"]["type"] == "unknown_adapter"
    deleted = await request(ws, frame("adapter_delete", 4, user="bob", name="v1"), 4)
    assert deleted["type"] == "error" and deleted["error"]["type"] == "unknown_adapter"
    assert (await request(ws, frame("adapters_list", 5, user="alice"), 5))["adapters"] == ["v1"]
    shared = await request(ws, frame("adapter_delete", 6, user="bob", name="shared/common"), 6)
    assert shared["error"]["type"] == "unknown_adapter" and "operator" in shared["error"]["message"]
    ok = await request(ws, generate(7, user="bob", adapters=["mine", "shared/common"], n=2, max_tokens=3), 7)
    assert ok["type"] == "result" and [c["adapter"] for c in ok["candidates"]] == ["mine", "shared/common"]
    assert (await request(ws, frame("adapter_delete", 8, user="bob", name="mine"), 8))["adapters"] == []
    await ws.close()


async def test_loading_outside_the_users_folder_is_refused(backend):
    """Adapter paths may not leave <adapter-root>/<user>/; user names cannot impersonate 'shared'."""
    ws = await connect_ready(backend)
    escape = await load(ws, "bob", "stolen", "../alice/v1")
    assert escape["type"] == "error" and "leaves your folder" in escape["error"]["message"]
    absolute = await load(ws, "bob", "stolen", "/etc")
    assert absolute["type"] == "error"
    missing = await load(ws, "bob", "none", "does-not-exist")
    assert missing["type"] == "error" and missing["error"]["type"] == "unknown_adapter"
    fake = await load(ws, "shared", "x", "v1")
    assert fake["type"] == "error" and fake["error"]["type"] == "malformed"
    bad_name = await load(ws, "bob", "a/b", "v1")
    assert bad_name["type"] == "error" and bad_name["error"]["type"] == "malformed"
    await ws.close()


async def test_wrong_token_is_refused(backend):
    """A websocket upgrade without the right token gets HTTP 401."""
    with pytest.raises(InvalidStatus) as info:
        await connect(backend.url, additional_headers={"Authorization": "Bearer nope"})
    assert info.value.response.status_code == 401


async def test_mixed_batch_equals_each_request_alone(backend):
    """Greedy results of requests on different adapters served together equal each served alone."""
    ws = await connect_ready(backend)
    await load(ws, "alice", "v1", "v1")
    await load(ws, "alice", "v2", "v2")
    await load(ws, "bob", "v1", "v1")
    specs = [
        dict(user="alice", prefix=PREFIXES[0], adapters=["v1", "v2"], n=3),
        dict(user="bob", prefix=PREFIXES[1], adapters=["v1"], n=1),
        dict(user="carol", prefix=PREFIXES[2], n=2),
        dict(user="alice", prefix=PREFIXES[3], adapters=["v2", "shared/common"], n=2),
        dict(user="bob", prefix=PREFIXES[4], adapters=["shared/common"], n=1, max_tokens=4),
    ]
    alone = []
    for i, spec in enumerate(specs):
        spec.setdefault("max_tokens", 10)
        alone.append(await request(ws, generate(f"alone{i}", **spec), f"alone{i}"))
    for i, spec in enumerate(specs):
        await ws.send(generate(f"together{i}", **spec))
    together = {}
    while len(together) < len(specs):
        msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if msg["type"] in ("result", "error"):
            together[msg["reply_to"]] = msg
    for i in range(len(specs)):
        assert alone[i]["type"] == "result", alone[i]
        got, want = together[f"together{i}"]["candidates"], alone[i]["candidates"]
        assert [(c["text"], c["finish_reason"], c["adapter"]) for c in got] == [(c["text"], c["finish_reason"], c["adapter"]) for c in want], i
        assert [c["logprob"] for c in got] == pytest.approx([c["logprob"] for c in want], abs=1e-3), i  # padding changes float sums
    assert backend._scheduler.peak_rows >= 6  # they really shared decode steps
    texts = {c["text"] for r in alone for c in r["candidates"]}
    assert len(texts) > 3  # adapters and prompts really differ, so equality above means something
    await ws.close()


async def test_adapter_changes_the_output(backend):
    """The same prompt on the base model and on an adapter gives different greedy text."""
    ws = await connect_ready(backend)
    await load(ws, "alice", "v1", "v1")
    reply = await request(ws, generate(1, adapters=["v1"], n=2, max_tokens=12), 1)
    base = await request(ws, generate(2, n=1, max_tokens=12), 2)
    assert reply["candidates"][0]["logprob"] != base["candidates"][0]["logprob"]
    await ws.close()


async def test_cancel_in_a_batch_ends_only_that_request(backend):
    """Cancelling one request of a running batch answers it 'cancelled'; the others finish."""
    ws = await connect_ready(backend)
    await ws.send(generate("long", max_tokens=120, stop=["\u2603"]))
    await ws.send(generate("other", user="bob", prefix=PREFIXES[1], max_tokens=20))
    await ws.send(frame("cancel", "long"))
    answers = {}
    while len(answers) < 2:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if msg["type"] in ("result", "error"):
            answers[msg["reply_to"]] = msg
    assert answers["long"]["type"] == "error" and answers["long"]["error"]["type"] == "cancelled"
    assert answers["other"]["type"] == "result"
    await ws.close()


async def test_deadline_in_the_past_is_answered(backend):
    """A request whose deadline passes while queued or decoding still gets exactly one final answer."""
    ws = await connect_ready(backend)
    reply = await request(ws, generate(1, max_tokens=100, deadline_ms=0), 1)
    assert reply["type"] == "error" and reply["error"]["type"] == "overloaded" or reply["candidates"][0]["finish_reason"] == "length"
    await ws.close()


async def test_metrics_are_prometheus_text(backend):
    """/metrics serves queue depth, batch size, tokens, TTFT and latency histograms, adapters resident."""
    ws = await connect_ready(backend)
    await request(ws, generate(1, max_tokens=4), 1)
    port = backend.url.rsplit(":", 1)[1]
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
    for name in ("specgen_queue_depth", "specgen_batch_rows", "specgen_generated_tokens_total", "specgen_time_to_first_token_seconds_bucket",
                 "specgen_request_seconds_count", "specgen_adapters_resident"):  # fmt: skip
        assert name in body, name
    assert 'specgen_requests_total{outcome="result"} 1.0' in body
    await ws.close()


async def test_request_wider_than_max_batch_runs_alone(tiny_model):
    """A request with more candidates than max_batch rows is served (alone) instead of waiting forever."""
    server = Backend(BackendConfig(model=tiny_model, token=TOKEN, max_batch=1))
    await server.start()
    try:
        ws = await connect_ready(server)
        reply = await request(ws, generate(1, n=3, max_tokens=3), 1)
        assert reply["type"] == "result" and len(reply["candidates"]) == 3
        await ws.close()
    finally:
        await server.close()
