"""Per-row adapters served in one batched forward pass (additive LoRA and multiplicative fLoRA).

``AdapterBank.attach(model, AdapterBankConfig(...))`` wraps the model's linear layers; adapters
are then loaded into slots and ``with bank.rows([...]):`` gives every batch row its own adapter.
"""

from .bank import AdapterBank, AdapterBankConfig, AdapterError

__all__ = ["AdapterBank", "AdapterBankConfig", "AdapterError"]
