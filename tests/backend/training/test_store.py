"""The adapter store: versions published atomically, rollback, names that cannot escape, per-user listing."""

from __future__ import annotations

import pytest

from specgen_backend.training.store import AdapterStore, StoreError


def _adapter(folder, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_text(text)
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_publish_versions_and_rollback(tmp_path):
    """Each publish adds a version and puts it in service; rollback returns to the one before."""
    store = AdapterStore(tmp_path / "store")
    v1 = store.publish("alice", "personal", _adapter(tmp_path / "a1", "one"), metrics={"edit_similarity": 0.5})
    v2 = store.publish("alice", "personal", _adapter(tmp_path / "a2", "two"))
    assert (v1.version, v2.version) == ("v1", "v2")
    assert store.current("alice", "personal").version == "v2"
    assert (store.current("alice", "personal").path / "adapter_model.safetensors").read_text() == "two"
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


@pytest.mark.parametrize("name", ["../bob", "a/b", "..", ".hidden", "", "a\\b", "x" * 65])
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
