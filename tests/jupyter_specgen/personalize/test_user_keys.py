"""Users behind an identity provider that names them: the mapping from a username to its backend name
is injective (a user named like another's key is a third user), and names no person has are refused."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError

from .test_users import HeaderUsers, _call, _tab


@pytest.fixture
def jp_server_config(tiny_model, tmp_path):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_specgen": True}, "identity_provider_class": HeaderUsers,
                      "disable_check_xsrf": True},
        "SpecgenExtension": {"model": tiny_model, "kernel_specs": False, "adapter_root": str(tmp_path / "adapters")},
    }  # fmt: skip


async def test_a_user_named_like_another_users_key_never_shares_their_folder(jp_fetch, jp_ws_fetch, jp_serverapp, tmp_path):
    """"alice smith", a user named exactly as her backend key, and one named as her old unkeyed slug are three
    backend users: her adapters and feedback are hers alone; names with control characters are refused."""
    import torch
    from safetensors.torch import save_file
    from specgen_backend.training.store import AdapterStore

    from jupyter_specgen.users import backend_name

    service = jp_serverapp.web_app.settings["specgen"]
    tab = await _tab(jp_ws_fetch, "alice smith")  # the backend is ready
    alice = backend_name("alice smith", service.user_key)
    impostors = [alice, "alice-smith-038bd15a1ecf", alice.replace("+", "-")]
    assert len({alice, *(backend_name(n, service.user_key) for n in impostors)}) == 4
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file({"w": torch.zeros(2)}, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text("{}")
    AdapterStore(str(tmp_path / "adapters")).publish(alice, "personal", adapter)
    report = {"path": "analysis_00_sales.ipynb", "prefix": "", "suggestion": "x = 1", "accepted": True}
    assert (await _call(jp_fetch, "alice smith", "POST", "feedback", body=report))[0] == 204

    _, hers = await _call(jp_fetch, "alice smith", "GET", "personalize")
    assert [(a["name"], a["current"]) for a in hers["adapters"]] == [("personal", "v1")]
    for name in impostors:
        _, state = await _call(jp_fetch, name, "GET", "personalize")
        assert state["adapters"] == [], name
        _, data = await _call(jp_fetch, name, "GET", "personalize", "data")
        assert data["feedback_accepted"] == 0, name
        code, error = await _call(jp_fetch, name, "POST", "personalize", "rollback", body={"adapter": "personal"})
        assert code == 400, name
    assert (await _call(jp_fetch, "alice smith", "GET", "personalize"))[1]["adapters"][0]["current"] == "v1"
    with pytest.raises(HTTPClientError) as refused:
        await jp_fetch("specgen", "personalize", headers={"X-Test-User": "alice\x85"})
    assert refused.value.code == 403
    tab.close()


def test_backend_names_are_plain_injective_and_refuse_control_characters():
    """Plain names stay; others become slug+hmac keyed by the server's secret; no two names share one;
    control characters, lone surrogates and line separators are refused."""
    from jupyter_specgen.users import backend_name, load_user_key

    key, other_key = b"k" * 32, b"j" * 32
    assert backend_name("alice", key) == "alice"
    odd = ["Anonymous Ganymede", "Anonymous-Ganymede", "../bob", "a/b", "é", "alice smith", "alice-smith",
           "x" * 65, "a..b"]
    names = [backend_name(n, key) for n in odd]
    names += [backend_name(n, key) for n in names if n not in odd]  # users named like the keys themselves
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}", n) and ".." not in n for n in names)
    assert backend_name("alice smith", key) != backend_name("alice smith", other_key)  # keyed: not computable offline
    for bad in ["alice\n", "alice\x00", "\ud800", "a\u2028b", ""]:
        with pytest.raises(ValueError):
            backend_name(bad, key)
    assert load_user_key(Path(tempfile.mkdtemp()) / "k") != load_user_key(Path(tempfile.mkdtemp()) / "k")
