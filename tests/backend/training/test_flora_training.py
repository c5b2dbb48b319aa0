"""fLoRA as the personal adapter: trained and judged like LoRA, served by the bank with the
numbers of the module it was trained in, and learning the user's idiom."""

from __future__ import annotations

import copy

import pytest

from specgen_backend.lora.bank import AdapterBank
from specgen_backend.lora.flora import is_flora, load_flora
from specgen_backend.training.evaluate import Metrics, complete, not_worse
from specgen_backend.training.hotload import sync_bank
from specgen_backend.training.jobs import PersonalizeConfig, personalize
from specgen_backend.training.store import AdapterStore
from specgen_backend.training.train import TrainConfig, train_adapter

from .conftest import idiom_rate


def test_flora_adapter_learns_the_idiom_and_the_bank_serves_it_as_trained(pandas_base, alice_examples, tmp_path):
    """A trained fLoRA folder, published: the bank's rows equal the training module's forward pass,
    base rows stay the base, and it writes alice's idiom more often than the base model."""
    import torch

    train, heldout = alice_examples
    trained = train_adapter(pandas_base, train, tmp_path / "flora", config=TrainConfig(kind="flora", steps=120))
    assert is_flora(trained.out_dir)
    store = AdapterStore(tmp_path / "store")
    store.publish("alice", "personal", trained.out_dir, metrics={})

    ids = torch.tensor([[5, 17, 42, 99, 7]] * 2)  # (B=2, T)
    module = copy.deepcopy(pandas_base.model)
    load_flora(module, store.current("alice", "personal").path)
    served_model = copy.deepcopy(pandas_base.model)
    bank = AdapterBank.attach(served_model)
    assert sync_bank(bank, store, "alice", {}) == ["alice/personal"]
    with torch.no_grad():
        expected = module(input_ids=ids).logits  # (B, T, V)
        plain = pandas_base.model(input_ids=ids).logits
        with bank.rows(["alice/personal", None]):
            served = served_model(input_ids=ids).logits
    assert not torch.allclose(expected[0], plain[0], atol=1e-3)  # the adapter changes something
    torch.testing.assert_close(served[0], expected[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(served[1], plain[1], rtol=1e-4, atol=1e-4)

    base_rate = idiom_rate(complete(pandas_base, None, heldout), heldout)
    flora_rate = idiom_rate(complete(pandas_base, trained.out_dir, heldout), heldout)
    # Evaluation wrapped the shared base in place and must have unwrapped it again.
    assert not any(type(m).__name__ == "FLoRALinear" for m in pandas_base.model.modules())
    print(f"\nfLoRA (r=4, 120 steps) on {len(heldout)} held-out cells: idiom rate base {base_rate:.2f}, "
          f"adapter {flora_rate:.2f}")
    assert flora_rate >= base_rate + 0.25


def test_flora_job_is_judged_by_the_publish_rule(pandas_base, alice_examples, tmp_path):
    """A kind="flora" job evaluates against the base and publishes exactly when it is not worse."""
    train, heldout = alice_examples
    store = AdapterStore(tmp_path)
    report = personalize(pandas_base, store, "alice", train, heldout,
                         config=PersonalizeConfig(train=TrainConfig(kind="flora", steps=120)))
    before, after = (Metrics(**{k: v for k, v in report[side].items()}) for side in ("before", "after"))
    print(f"\nfLoRA job: held-out {report['before']} -> {report['after']}; published: {report['published']}")
    assert report["published"] == not_worse(after, before)
    current = store.current("alice", "personal")
    assert (current is not None and is_flora(current.path)) == report["published"]
    with pytest.raises(ValueError, match="variants"):  # variants start from a LoRA adapter
        personalize(pandas_base, store, "alice", train, [],
                    config=PersonalizeConfig(train=TrainConfig(kind="flora"), variants=2))
