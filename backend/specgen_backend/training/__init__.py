"""Training of per-user adapters and influence-partitioned variants, on the backend host.

Examples arrive as JSON lines written by ``jupyter_specgen.personalize`` (see ``examples``);
``train`` fits a PEFT LoRA adapter, ``evaluate`` compares adapters on a held-out split,
``store`` keeps versioned adapters per user with atomic publication and rollback, ``influence``
and ``variants`` build SPA-style variant sets, ``jobs`` runs it all in the background with one
job per user at a time.
"""
