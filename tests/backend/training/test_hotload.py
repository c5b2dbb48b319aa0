"""The serving bank runs the version in service: after publish, after a second publish, after rollback."""

from __future__ import annotations

import copy

import pytest

from specgen_backend.lora.bank import AdapterBank
from specgen_backend.training.hotload import adapters_in_service, sync_bank
from specgen_backend.training.jobs import PersonalizeConfig, personalize
from specgen_backend.training.store import AdapterStore
from specgen_backend.training.train import TrainConfig


def _peft_logits(base, path, ids):
    import torch
    from peft import PeftModel

    model = PeftModel.from_pretrained(copy.deepcopy(base.model), str(path))
    with torch.no_grad():
        return model(input_ids=ids).logits  # (B, T, V)


def test_bank_serves_the_published_version_and_follows_rollback(tiny_base, alice_examples, tmp_path):
    """The next forward pass after sync_bank uses the version in service; other users' rows are unaffected."""
    import torch

    train, _ = alice_examples
    store = AdapterStore(tmp_path / "store")
    config = PersonalizeConfig(train=TrainConfig(steps=4, batch_size=4, learning_rate=5e-2), variants=2,
                               variant_train=TrainConfig(steps=2, batch_size=4, learning_rate=5e-2))
    personalize(tiny_base, store, "alice", train[:12], [], config=config)
    assert set(adapters_in_service(store, "alice")) == {"alice/personal", "alice/variant-0", "alice/variant-1"}
    model = copy.deepcopy(tiny_base.model)
    bank = AdapterBank.attach(model)
    loaded: dict[str, str] = {}
    assert sorted(sync_bank(bank, store, "alice", loaded)) == ["alice/personal", "alice/variant-0", "alice/variant-1"]
    assert sync_bank(bank, store, "alice", loaded) == []  # nothing changed, nothing reloaded
    ids = torch.tensor([[5, 17, 42, 99, 7]] * 2)  # (B=2, T)

    def served():
        with torch.no_grad(), bank.rows(["alice/personal", None]):
            return model(input_ids=ids).logits  # (B, T, V)

    v1 = _peft_logits(tiny_base, store.current("alice", "personal").path, ids)
    out = served()
    torch.testing.assert_close(out[0], v1[0], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        plain = tiny_base.model(input_ids=ids).logits
    torch.testing.assert_close(out[1], plain[1], rtol=1e-4, atol=1e-4)

    personalize(tiny_base, store, "alice", train[12:24], [], config=PersonalizeConfig(
        train=TrainConfig(steps=4, batch_size=4, learning_rate=5e-2, seed=1)))
    assert sync_bank(bank, store, "alice", loaded) == ["alice/personal"]
    v2 = _peft_logits(tiny_base, store.current("alice", "personal").path, ids)
    assert not torch.allclose(v1[0], v2[0], atol=1e-4)
    torch.testing.assert_close(served()[0], v2[0], rtol=1e-4, atol=1e-4)

    store.rollback("alice", "personal")
    assert sync_bank(bank, store, "alice", loaded) == ["alice/personal"]
    torch.testing.assert_close(served()[0], v1[0], rtol=1e-4, atol=1e-4)
    assert adapters_in_service(store, "bob") == {}
    with pytest.raises(Exception, match="not loaded"):
        with bank.rows(["bob/personal"]):
            pass
