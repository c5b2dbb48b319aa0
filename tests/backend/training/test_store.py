"""The adapter store: versions published atomically, rollback, names that cannot escape, per-user listing."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from specgen_backend.training.store import AdapterStore, BrokenVersion, StoreError


def _adapter(folder, text):
    """A folder with a readable config and real safetensors weights whose metadata says ``text``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(folder / "adapter_model.safetensors"), metadata={"text": text})
    (folder / "adapter_config.json").write_text("{}")
    return folder


def _text(version):
    from safetensors import safe_open

    with safe_open(str(version.path / "adapter_model.safetensors"), framework="pt") as f:
        return f.metadata()["text"]


def test_publish_versions_and_rollback(tmp_path):
    """Each publish adds a version and puts it in service; rollback returns to the one before."""
    store = AdapterStore(tmp_path / "store")
    v1 = store.publish("alice", "personal", _adapter(tmp_path / "a1", "one"), metrics={"edit_similarity": 0.5})
    v2 = store.publish("alice", "personal", _adapter(tmp_path / "a2", "two"))
    assert (v1.version, v2.version) == ("v1", "v2")
    assert store.current("alice", "personal").version == "v2"
    assert _text(store.current("alice", "personal")) == "two"
    back = store.rollback("alice", "personal")
    assert back.version == "v1" and back.metrics == {"edit_similarity": 0.5}
    assert store.current("alice", "personal").version == "v1"
    with pytest.raises(StoreError, match="first version"):
        store.rollback("alice", "personal")
    assert store.versions("alice", "personal") == ["v1", "v2"]


def test_failed_copy_publishes_nothing(tmp_path):
    """A publish that fails midway leaves no version folder and the current pointer unchanged."""
    store = AdapterStore(tmp_path / "store")
    store.publish("alice", "personal", _adapter(tmp_path / "a1", "one"))
    with pytest.raises(FileNotFoundError):
        store.publish("alice", "personal", tmp_path / "does-not-exist")
    assert store.versions("alice", "personal") == ["v1"]
    assert store.current("alice", "personal").version == "v1"
    assert [p.name for p in (tmp_path / "store" / "alice" / "personal").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("name", ["../bob", "a/b", "..", ".hidden", "", "a\\b", "x" * 65, "alice\n", "alice\x00"])
def test_bad_names_are_refused(tmp_path, name):
    """User and adapter names that could leave the user's folder are refused with a message."""
    store = AdapterStore(tmp_path / "store")
    with pytest.raises(StoreError, match="invalid"):
        store.publish(name, "personal", _adapter(tmp_path / "a", "x"))
    with pytest.raises(StoreError, match="invalid"):
        store.current("alice", name)


def test_listing_is_per_user(tmp_path):
    """A user's listing shows their adapters only; another user with none sees nothing."""
    store = AdapterStore(tmp_path / "store")
    store.publish("alice", "personal", _adapter(tmp_path / "a", "alice-secret"))
    assert store.list("alice") == {"personal": {"current": "v1", "versions": ["v1"]}}
    assert store.list("bob") == {}
    assert store.current("bob", "personal") is None
    with pytest.raises(StoreError, match="no published adapter"):
        store.rollback("bob", "personal")


def test_a_corrupt_version_is_never_put_in_service(tmp_path):
    """Rollback to a version with truncated weights or an unreadable config is refused; current stays."""
    store = AdapterStore(tmp_path / "store")
    v1 = store.publish("alice", "personal", _adapter(tmp_path / "a1", "one"))
    store.publish("alice", "personal", _adapter(tmp_path / "a2", "two"))
    weights = v1.path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3])
    with pytest.raises(BrokenVersion, match="corrupt.*v2 stays in service"):
        store.rollback("alice", "personal")
    assert store.current("alice", "personal").version == "v2"
    (v1.path / "adapter_model.safetensors").unlink()
    _adapter(v1.path, "one")
    (v1.path / "adapter_config.json").write_text("[1")
    with pytest.raises(BrokenVersion, match="adapter_config.json"):
        store.rollback("alice", "personal", to="v1")
    assert store.current("alice", "personal").version == "v2"
    bad = _adapter(tmp_path / "a3", "three")
    (bad / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(BrokenVersion):
        store.publish("alice", "personal", bad)
    assert store.versions("alice", "personal") == ["v1", "v2"]
    assert store.current("alice", "personal").version == "v2"


def test_links_in_a_users_folder_never_lead_to_another_users_adapters(tmp_path):
    """An adapter, version or pointer that is a symbolic link into bob's folder (or out of the store) is refused."""
    store = AdapterStore(tmp_path / "store")
    bob = store.publish("bob", "personal", _adapter(tmp_path / "b", "bob-secret"))
    alice = tmp_path / "store" / "alice"
    alice.mkdir()
    os.symlink(bob.path.parent, alice / "personal")  # the whole adapter folder
    with pytest.raises(StoreError, match="leads out"):
        store.current("alice", "personal")
    assert store.list("alice") == {}
    (alice / "personal").unlink()
    store.publish("alice", "personal", _adapter(tmp_path / "a", "alice"))
    os.symlink(bob.path, alice / "personal" / "v7")  # one version
    assert store.versions("alice", "personal") == ["v1"]
    with pytest.raises(StoreError):
        store.rollback("alice", "personal", to="v7")
    pointer = alice / "personal" / "current"
    pointer.unlink()
    os.symlink(bob.path.parent / "current", pointer)  # the pointer
    with pytest.raises(StoreError, match="current"):
        store.current("alice", "personal")
    pointer.unlink()
    outside = tmp_path / "victim"
    outside.write_text("keep")
    os.symlink(outside, alice / "personal" / f".current-{os.getpid()}")  # a planted temp file of _point
    store.publish("alice", "personal", _adapter(tmp_path / "a2", "alice2"))
    assert outside.read_text() == "keep" and store.current("alice", "personal").version == "v2"
    (tmp_path / "store" / "mallory").symlink_to(tmp_path / "store" / "bob")  # a user folder that is a link
    with pytest.raises(StoreError, match="outside"):
        store.list("mallory")
    assert load_file(str(bob.path / "adapter_model.safetensors"))["w"].shape == (2,)
