"""The vLLM engine (``engines/``): a real ``vllm serve`` (vLLM's CPU build, in its own venv), the
backend in front of it, two users with their own PEFT adapters.

vLLM is started once for the module (a start takes a minute or more); the kill test, which
restarts it, runs last. Without the venv (``bash scripts/vllm_env.sh`` builds it; scripts/test.sh
does) the module is skipped locally and fails in CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time

import pytest
import pytest_asyncio
from specgen_backend.engine import EngineConfig
from specgen_backend.server import Backend, BackendConfig

from .test_serving import TOKEN, connect_ready, final, frame, generate, load, make_adapter, request

pytestmark = [pytest.mark.slow]  # the async tests carry their own asyncio mark (one test is plain)

START_TIMEOUT_S = 900  # a first start compiles and profiles; minutes on a loaded CPU
PROMPTS = ["def add(a, b):\n    return", "import numpy as np\nx = np.", "print(", "for i in range("]
MAX_TOKENS = 10
# Prompts of the syntax masks' test: with alice's adapter the random model's greedy completion of the
# first writes a run of "=" that the masks refuse (the others it leaves alone).
MASKED_PROMPTS = ["total = 0\nfor i in range(10):\n    total", "x = np.array([1, 2,", "result = compute("]
MASKED_TOKENS = 24
# The cancel test's uncancelled request (prompt + this within MAX_MODEL_LEN). Long, so that the
# cancel has time to land: with 1536 the whole request once ran out before it did in a full run.
LONG_TOKENS = 3584
MAX_MODEL_LEN = 4096


def _vllm_python() -> str:
    from specgen_backend.engines.vllm_client import VllmUnavailable, vllm_python

    try:
        python = vllm_python()
    except VllmUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must build vLLM's venv first (scripts/test.sh runs scripts/vllm_env.sh): {exc}")
        pytest.skip(f"vLLM's CPU build is not installed: run `bash scripts/vllm_env.sh` ({exc})")
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """The suite's tiny random Llama with 2 heads of 32 instead of 4 of 16: vLLM's CPU attention has no
    kernel for head_dim 16 ("Unsupported CPU attention configuration: head_dim=16")."""
    from specgen_backend.tiny import TinyModelConfig, build_tiny_model

    config = TinyModelConfig(num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=MAX_MODEL_LEN)
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model-32"), config))


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model, tmp_path_factory):
    """<root>/alice/v1, <root>/bob/v1 (two distinct PEFT LoRA adapters), <root>/bob/flora (an fLoRA one)."""
    root = tmp_path_factory.mktemp("vllm-adapters")
    make_adapter(tiny_model, root / "alice" / "v1", 1)
    make_adapter(tiny_model, root / "bob" / "v1", 2)
    flora = root / "bob" / "flora"
    flora.mkdir(parents=True)
    config = json.loads((root / "bob" / "v1" / "adapter_config.json").read_text())
    (flora / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "FLORA"}))
    (flora / "adapter_model.safetensors").write_bytes((root / "bob" / "v1" / "adapter_model.safetensors").read_bytes())
    return root


def _start_vllm(tiny_model, tmp_path_factory):
    """``vllm serve`` of the tiny model as an operator would start it: fp32, LoRA on, runtime loading on."""
    from specgen_backend.engines.vllm_client import VllmServer, VllmServerConfig, VllmUnavailable

    log_path = tmp_path_factory.mktemp("vllm-log") / "vllm.log"
    server = VllmServer(VllmServerConfig(model=tiny_model, port=_free_port(), python=_vllm_python(), max_loras=4, max_lora_rank=8,
                                         max_model_len=MAX_MODEL_LEN, dtype="float32", log_path=str(log_path)))  # fmt: skip
    server.start()
    try:
        server.wait_ready(START_TIMEOUT_S)
    except VllmUnavailable as exc:
        server.stop()
        pytest.fail(f"{exc}\n--- vLLM log (tail) ---\n{log_path.read_text()[-6000:]}")
    return server


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    server = _start_vllm(tiny_model, tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def second_vllm_server(tiny_model, tmp_path_factory):
    """A second replica of the same model (the routing test's)."""
    server = _start_vllm(tiny_model, tmp_path_factory)
    yield server
    server.stop()


def _config(tiny_model, root, **kw) -> BackendConfig:
    # max_new_tokens 1536: the cancel test needs a request that runs long enough to be caught running,
    # with room for the tokens vLLM writes while a cancel reaches it on a loaded machine.
    return BackendConfig(model=tiny_model, token=TOKEN, adapter_root=str(root), dtype="float32",
                         engine=EngineConfig(max_new_tokens=LONG_TOKENS), **kw)  # fmt: skip


@pytest_asyncio.fixture
async def backend(tiny_model, adapter_dirs, vllm_server):
    server = Backend(_config(tiny_model, adapter_dirs, serving_engine="vllm", vllm_url=vllm_server.url))
    await server.start()
    yield server
    await server.close()


async def _completions(backend, adapters: dict[str, str], prompts=PROMPTS, max_tokens=MAX_TOKENS) -> dict:
    """{(user, adapter, prompt): (text, logprob, finish reason)} of greedy completions of ``prompts``."""
    ws = await connect_ready(backend)
    for user, path in adapters.items():
        assert (await load(ws, user, "v1", path))["type"] == "adapters"
    out = {}
    for k, prefix in enumerate(prompts):
        for user in adapters:
            for adapter in ("v1", None):
                kw = {"adapters": [adapter]} if adapter else {}
                id = f"{user}-{k}-{adapter}"
                reply = await request(ws, generate(id, user=user, prefix=prefix, max_tokens=max_tokens, **kw), id)
                assert reply["type"] == "result", reply
                candidate = reply["candidates"][0]
                out[(user, adapter, prefix)] = (candidate["text"], candidate["logprob"], candidate["finish_reason"])
    await ws.close()
    return out


@pytest.mark.asyncio
async def test_greedy_completions_equal_the_native_engines(tiny_model, adapter_dirs, backend):
    """fp32, greedy: the vLLM engine completes each prompt with each user's adapter as the native engine does."""
    adapters = {"alice": "v1", "bob": "v1"}
    through_vllm = await _completions(backend, adapters)
    native = Backend(_config(tiny_model, adapter_dirs))
    await native.start()
    try:
        expected = await _completions(native, adapters)
    finally:
        await native.close()
    # A completion cut by max_tokens in the middle of a UTF-8 character: the native engine keeps the
    # U+FFFD of the half character at the end, vLLM's detokenizer holds the half back.
    assert {k: v[0] for k, v in through_vllm.items()} == {k: v[0].rstrip("\ufffd") for k, v in expected.items()}
    for key, (text, logprob, reason) in through_vllm.items():
        assert reason == expected[key][2], key
        # The native engine's logprob is under its masked distribution (renormalised over the tokens
        # the syntax rules allow), vLLM's under the whole vocabulary: close, not equal.
        assert logprob == pytest.approx(expected[key][1], rel=0.1, abs=1e-3), key
    # The adapters matter: otherwise equal texts would prove nothing about which adapter ran.
    assert any(through_vllm[("alice", "v1", p)][0] != through_vllm[("bob", "v1", p)][0] for p in PROMPTS)


@pytest.mark.asyncio
async def test_the_syntax_masks_hold_in_vllm_as_in_the_native_engine(tiny_model, adapter_dirs, backend, vllm_server):
    """Where the native engine's syntax masks change greedy completions, the vLLM engine's are the same
    (the masks run inside vLLM, ``vllm_syntax``); vLLM asked without them writes what they refuse."""
    from specgen_backend.engine import Engine
    from specgen_backend.engines.vllm_client import SYNTAX_ARG, VllmClient
    from specgen_backend.loading import load_model
    from specgen_backend.protocol import CompletionContext, Generate

    through_vllm = await _completions(backend, {"alice": "v1"}, MASKED_PROMPTS, MASKED_TOKENS)
    native = Backend(_config(tiny_model, adapter_dirs))
    await native.start()
    try:
        expected = await _completions(native, {"alice": "v1"}, MASKED_PROMPTS, MASKED_TOKENS)
    finally:
        await native.close()
    assert {k: v[0] for k, v in through_vllm.items()} == {k: v[0].rstrip("\ufffd") for k, v in expected.items()}

    # The same prompts straight to vLLM (alice's adapter, under a name of this test's), with the
    # masks' argument and without it.
    client, engine = VllmClient(vllm_server.url), Engine(load_model(tiny_model, device="cpu", dtype="float32"))
    client.call("POST", "/v1/load_lora_adapter", {"lora_name": "masks-test", "lora_path": str(adapter_dirs / "alice" / "v1")})

    def raw(prefix: str, masked: bool) -> str:
        ids = engine.prepare(Generate(id="r", user="alice", context=CompletionContext(prefix=prefix))).ids
        body = {"model": "masks-test", "prompt": ids, "max_tokens": MASKED_TOKENS, "temperature": 0.0,
                "stop_token_ids": sorted(engine.eos_ids)}
        if masked:
            body["vllm_xargs"] = {SYNTAX_ARG: prefix}
        return json.loads(client.call("POST", "/v1/completions", body))["choices"][0]["text"]

    unmasked = {p: raw(p, False) for p in MASKED_PROMPTS}
    masked = {p: raw(p, True) for p in MASKED_PROMPTS}
    client.call("POST", "/v1/unload_lora_adapter", {"lora_name": "masks-test"})
    changed = [p for p in MASKED_PROMPTS if unmasked[p] != masked[p]]
    assert MASKED_PROMPTS[0] in changed, f"the masks changed {changed} only: the test would prove little ({unmasked})"
    assert "====" in unmasked[MASKED_PROMPTS[0]] and "====" not in masked[MASKED_PROMPTS[0]], unmasked
    # What the masks let through is the native engine's text up to where the backend stops a row
    # (the cell's stops, the statement's end).
    for p in MASKED_PROMPTS:
        want = expected[("alice", "v1", p)][0].rstrip("\ufffd")
        assert want and masked[p].startswith(want), (p, masked[p], want)


@pytest.mark.asyncio
async def test_a_published_version_is_served_by_vllm_at_the_next_completion(tiny_model, adapter_dirs, vllm_server, tmp_path):
    """Personalization on vLLM: each publish (and a rollback) of alice's adapter is what her next
    ``personal`` completion runs, and the version it replaced is unregistered from vLLM."""
    from specgen_backend.engines.vllm_client import VllmClient
    from specgen_backend.training.store import AdapterStore

    client = VllmClient(vllm_server.url)
    # What each adapter writes, each through a backend of its own on the same vLLM: alice's and bob's
    # differ on some prompt (the parity test shows it), unless the second backend's registration were
    # taken for the first one's (names that were counted from 1 in every backend did that).
    by_adapter = {}
    for owner in ("alice", "bob"):
        solo = Backend(_config(tiny_model, adapter_dirs, serving_engine="vllm", vllm_url=vllm_server.url))
        await solo.start()
        try:
            by_adapter[owner] = await _completions(solo, {owner: "v1"})
        finally:
            await solo.close()
    prompt = next((p for p in PROMPTS if by_adapter["alice"][("alice", "v1", p)][0] != by_adapter["bob"][("bob", "v1", p)][0]),
                  None)  # fmt: skip
    assert prompt is not None, f"bob's backend served alice's adapter: {by_adapter}"
    wants = {owner: by_adapter[owner][(owner, "v1", prompt)][0] for owner in ("alice", "bob")}

    store = AdapterStore(tmp_path / "store")
    server = Backend(_config(tiny_model, tmp_path / "store", serving_engine="vllm", vllm_url=vllm_server.url))
    await server.start()
    ws = await connect_ready(server)
    try:
        async def personal(id):
            reply = await request(ws, generate(id, user="alice", prefix=prompt, max_tokens=MAX_TOKENS, personal=True), id)
            assert reply["type"] == "result", reply
            return reply["candidates"][0]["text"], set(client.models())

        before = set(client.models())
        store.publish("alice", "personal", adapter_dirs / "alice" / "v1")
        first, models_first = await personal("p1")
        store.publish("alice", "personal", adapter_dirs / "bob" / "v1")  # v2: other weights
        second, models_second = await personal("p2")
        store.rollback("alice", "personal")
        third, _ = await personal("p3")
    finally:
        await ws.close()
        await server.close()
    assert (first, second, third) == (wants["alice"], wants["bob"], wants["alice"])
    v1_names = models_first - before
    assert v1_names and models_second - models_first, (before, models_first, models_second)
    assert not v1_names & models_second, "the replaced version stayed registered in vLLM"


@pytest.mark.asyncio
async def test_ownership_refusals_as_on_the_native_engine(backend, vllm_server):
    """A user sees and uses only their own adapters; deleting one unloads it from vLLM; fLoRA is refused."""
    from specgen_backend.engines.vllm_client import VllmClient

    client = VllmClient(vllm_server.url)
    ws = await connect_ready(backend)
    await ws.send(frame("status_request", "s"))
    status = json.loads(await ws.recv())
    while status.get("reply_to") != "s":
        status = json.loads(await ws.recv())
    assert status["device"] == f"vllm at {vllm_server.url}", status  # the status bar names the server
    assert (await load(ws, "alice", "v1", "v1"))["adapters"] == ["v1"]
    assert (await load(ws, "bob", "mine", "v1"))["adapters"] == ["mine"]
    refused = await request(ws, generate(1, user="bob", adapters=["v1"]), 1)
    assert refused["type"] == "error" and refused["error"]["type"] == "unknown_adapter"
    assert "mine" in refused["error"]["message"]
    refused = await request(ws, generate(2, user="bob", adapters=["../alice/v1"]), 2)
    assert refused["error"]["type"] == "unknown_adapter"
    escape = await load(ws, "bob", "stolen", "../alice/v1")
    assert escape["type"] == "error" and "leaves your folder" in escape["error"]["message"]
    deleted = await request(ws, frame("adapter_delete", 3, user="bob", name="v1"), 3)
    assert deleted["type"] == "error" and deleted["error"]["type"] == "unknown_adapter"
    flora = await load(ws, "bob", "f", "flora")
    assert flora["type"] == "error" and "native engine" in flora["error"]["message"], flora
    registered = len(client.models())
    assert (await request(ws, frame("adapter_delete", 4, user="bob", name="mine"), 4))["adapters"] == []
    assert len(client.models()) == registered - 1  # gone from vLLM too
    ok = await request(ws, generate(5, user="alice", adapters=["v1"], n=2, max_tokens=3), 5)
    assert ok["type"] == "result" and [c["adapter"] for c in ok["candidates"]] == ["v1", "v1"]
    await ws.close()


def _running(client) -> float:
    return client.metrics().get("vllm:num_requests_running", 0.0)


def _generated(client) -> float:
    return client.metrics().get("vllm:generation_tokens_total", 0.0)


async def _first_token(ws, id, timeout=60):
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg.get("reply_to") == id:
            assert msg["type"] == "token", msg
            return


async def _wait_freed(client, timeout=30.0) -> None:
    end = time.monotonic() + timeout
    while _running(client) > 0:
        assert time.monotonic() < end, f"vLLM still runs {_running(client)} requests"
        await asyncio.sleep(0.1)


@pytest.mark.asyncio
async def test_cancel_and_disconnect_free_the_request_in_vllm(backend, vllm_server):
    """A cancel, and a closed connection, abort the request in vLLM: it stops running there long before
    the tokens it would have generated uncancelled."""
    from specgen_backend.engines.vllm_client import VllmClient

    client = VllmClient(vllm_server.url)
    ws = await connect_ready(backend)
    assert (await load(ws, "alice", "v1", "v1"))["type"] == "adapters"
    # A request that runs long uncancelled: the random model stops early on most prompts.
    whole, long = 0.0, {}
    for prefix in ['text = """\n', *PROMPTS]:
        for kw in ({"adapters": ["v1"]}, {}):
            candidate = dict(user="alice", max_tokens=LONG_TOKENS, prefix=prefix, **kw)
            before = _generated(client)
            await request(ws, generate("full", **candidate), "full")
            tokens = _generated(client) - before
            if tokens > whole:
                whole, long = tokens, candidate
            if whole >= LONG_TOKENS / 2:
                break
        if whole >= LONG_TOKENS / 2:
            break
    assert whole >= 200, f"no prompt runs long ({whole} tokens): the test would prove nothing"

    before = _generated(client)
    await ws.send(generate("long", **long))
    await _first_token(ws, "long")
    await ws.send(frame("cancel", "long"))
    reply = await final(ws, "long")
    assert reply["type"] == "error" and reply["error"]["type"] == "cancelled", reply
    await _wait_freed(client)
    assert _generated(client) - before < whole / 2, "vLLM went on generating the cancelled request"

    before = _generated(client)
    await ws.send(generate("gone", **long))
    await _first_token(ws, "gone")
    await ws.close()
    await _wait_freed(client)
    assert _generated(client) - before < whole / 2, "vLLM went on generating the request of a closed connection"


def test_constraint_regex_holds_the_first_identifier_to_the_heads():
    """The regex given to vLLM: a head (whole, not a longer identifier), then anything; optional ones also
    allow what begins with no identifier."""
    import re

    from specgen_backend.engines.vllm_structured import constraint_regex
    from specgen_backend.protocol import Constraint

    required = constraint_regex(Constraint(kind="attribute", names=["groupby", "group", "mean"], typed="gr"))
    assert [bool(re.fullmatch(required, t)) for t in ["oupby(x)", "oup", "oup.x", "oupx", "mean", ""]] == [
        True, True, True, False, False, False]  # fmt: skip
    column = constraint_regex(Constraint(kind="column", names=["'a.b'"], typed="'"))
    assert re.fullmatch(column, "a.b']") and not re.fullmatch(column, "axb']")
    optional = constraint_regex(Constraint(kind="name", names=["df"], required=False))
    assert [bool(re.fullmatch(optional, t)) for t in ["", " df.x", " 1 + 2", " dx", "(df)"]] == [True, True, True, False, True]
    assert constraint_regex(Constraint(kind="attribute", names=["mean"], typed="gr")) is None
    labels = constraint_regex(Constraint(kind="parameter", names=["by=", "'country'"], required=False))
    assert [bool(re.fullmatch(labels, t)) for t in ["'country')", "'bar')", '"bar")', "by='x')", "[1])"]] == [
        True, False, True, True, True]  # fmt: skip  (a string is a label when a head is one with that quote)


@pytest.mark.asyncio
async def test_the_live_state_constraint_holds_in_vllm(backend):
    """A generate with a constraint completes with one of its heads first, through vLLM's structured outputs."""
    ws = await connect_ready(backend)
    constraint = {"kind": "attribute", "names": ["groupby", "merge"], "typed": ""}
    reply = await request(ws, generate("c", user="alice", prefix="df.", max_tokens=6, n=2, temperature=1.0,
                                       constraint=constraint), "c")  # fmt: skip
    assert reply["type"] == "result", reply
    for candidate in reply["candidates"]:
        assert candidate["text"].startswith(("groupby", "merge")), reply
    await ws.close()


def test_each_user_has_one_home_replica_and_few_move_when_one_is_added():
    """``home_of``: stable, spread, and adding a replica moves only the users the new one takes."""
    from specgen_backend.engines.vllm_bank import home_of

    users = [f"user{i}" for i in range(300)]
    assert [home_of(u, 3) for u in users] == [home_of(u, 3) for u in users]
    counts = [sum(home_of(u, 3) == r for u in users) for r in range(3)]
    assert min(counts) > 60, counts  # 100 each on average
    moved = [u for u in users if home_of(u, 3) != home_of(u, 4)]
    assert all(home_of(u, 4) == 3 for u in moved) and len(moved) < 120, len(moved)
    assert {home_of(u, 1) for u in users} == {0}


@pytest.mark.asyncio
async def test_each_users_requests_and_adapters_go_to_their_home_replica(tiny_model, vllm_server, second_vllm_server,
                                                                        tmp_path):
    """One backend over two replicas: a user's adapter is registered on their home replica alone, their
    completions run there alone, and a shared adapter is registered on both."""
    from specgen_backend.engines.vllm_bank import home_of
    from specgen_backend.engines.vllm_client import VllmClient

    servers = [vllm_server, second_vllm_server]
    users = [f"user{i}" for i in range(50)]
    chosen = [next(u for u in users if home_of(u, 2) == r) for r in (0, 1)]
    root = tmp_path / "adapters"
    for seed, user in enumerate(chosen, 3):
        make_adapter(tiny_model, root / user / "v1", seed)
    make_adapter(tiny_model, tmp_path / "shared" / "common", 5)
    clients = [VllmClient(s.url) for s in servers]
    models = [set(c.models()) for c in clients]
    backend = Backend(_config(tiny_model, root, serving_engine="vllm", vllm_url=",".join(s.url for s in servers),
                              shared_adapters=str(tmp_path / "shared")))  # fmt: skip
    await backend.start()
    ws = await connect_ready(backend)
    try:
        shared = [set(c.models()) - m for c, m in zip(clients, models)]
        assert shared[0] and shared[0] == shared[1], shared  # shared/common, under one vLLM name on both
        for home, user in enumerate(chosen):
            models, tokens = [set(c.models()) for c in clients], [_generated(c) for c in clients]
            assert (await load(ws, user, "v1", "v1"))["type"] == "adapters"
            reply = await request(ws, generate(f"g-{user}", user=user, max_tokens=MAX_TOKENS, adapters=["v1"]), f"g-{user}")
            assert reply["type"] == "result", reply
            new = [set(c.models()) - m for c, m in zip(clients, models)]
            ran = [_generated(c) - t for c, t in zip(clients, tokens)]
            assert new[home] and not new[1 - home], (user, home, new)
            assert ran[home] > 0 and ran[1 - home] == 0, (user, home, ran)
    finally:
        await ws.close()
        await backend.close()


@pytest.mark.asyncio
async def test_killed_vllm_gives_a_clear_error_and_recovers(backend, vllm_server):
    """With vLLM killed a request is answered model_unavailable saying so; once vLLM is back the user's
    adapter is registered again and the same completion comes back."""
    ws = await connect_ready(backend)
    assert (await load(ws, "alice", "v1", "v1"))["type"] == "adapters"
    before = await request(ws, generate(1, user="alice", adapters=["v1"], max_tokens=8), 1)
    assert before["type"] == "result"
    os.killpg(vllm_server.process.pid, signal.SIGKILL)
    vllm_server.process.wait()
    down = await request(ws, generate(2, user="alice", adapters=["v1"], max_tokens=8), 2)
    assert down["type"] == "error" and down["error"]["type"] == "model_unavailable", down
    assert vllm_server.url in down["error"]["message"] and "does not answer" in down["error"]["message"]
    vllm_server.start()  # as the operator's supervisor would
    vllm_server.wait_ready(START_TIMEOUT_S)
    await ws.send(generate(3, user="alice", adapters=["v1"], max_tokens=8))
    after = await final(ws, 3, timeout=120)
    assert after["type"] == "result", after
    assert after["candidates"][0]["text"] == before["candidates"][0]["text"]
    await ws.close()
