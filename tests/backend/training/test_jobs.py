"""Personalize jobs: one per user at a time, a crash or cancel leaves the adapter in service intact."""

from __future__ import annotations

import hashlib
import threading

import pytest

from specgen_backend.training.jobs import JobConflict, JobManager, PersonalizeConfig, personalize
from specgen_backend.training.store import AdapterStore
from specgen_backend.training.train import TrainConfig

FAST = PersonalizeConfig(train=TrainConfig(steps=6, batch_size=4))


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_second_job_for_same_user_is_refused_not_interleaved():
    """While alice's job runs, another for alice is refused with a clear error; bob's may start."""
    manager = JobManager()
    release = threading.Event()
    order = []

    def work(progress, cancel):
        order.append("start")
        release.wait(10)
        order.append("end")
        return {"ok": True}

    first = manager.start("alice", work)
    with pytest.raises(JobConflict, match="already running"):
        manager.start("alice", work)
    other = manager.start("bob", lambda progress, cancel: {"ok": "bob"})
    assert other.wait(10) and other.result == {"ok": "bob"}
    release.set()
    assert first.wait(10) and first.state == "done"
    assert order == ["start", "end"]
    again = manager.start("alice", lambda progress, cancel: {"ok": 2})
    assert again.wait(10) and again.result == {"ok": 2}


def test_crash_mid_training_keeps_previous_adapter(tiny_base, alice_examples, tmp_path):
    """An exception injected mid-training fails the job; the published adapter stays current and byte-identical."""
    train, heldout = alice_examples
    store = AdapterStore(tmp_path / "store")
    first = personalize(tiny_base, store, "alice", train, [], config=FAST)
    assert first["published"] and store.current("alice", "personal").version == "v1"
    before = _digest(store.current("alice", "personal").path)

    def crash_at_step_3(phase, step, total, loss):
        if phase == "train" and step == 3:
            raise RuntimeError("injected crash")

    manager = JobManager()
    updates = []
    job = manager.start("alice", lambda progress, cancel: personalize(
        tiny_base, store, "alice", train, heldout[:2], config=FAST,
        progress=lambda *a: (progress(*a), crash_at_step_3(*a)), cancel=cancel), listener=updates.append)
    assert job.wait(120)
    assert job.state == "failed" and "injected crash" in job.error
    assert updates and updates[-1]["state"] == "failed"
    current = store.current("alice", "personal")
    assert current.version == "v1" and _digest(current.path) == before
    assert store.versions("alice", "personal") == ["v1"]
    assert not any((tmp_path / "store" / "alice" / ".staging").glob("*"))


def test_cancel_stops_the_job_and_publishes_nothing(tiny_base, alice_examples, tmp_path):
    """Cancelling a running job ends it as cancelled with nothing published."""
    train, heldout = alice_examples
    store = AdapterStore(tmp_path / "store")
    manager = JobManager()
    started = threading.Event()

    def work(progress, cancel):
        def on_progress(phase, step, total, loss):
            progress(phase, step, total, loss)
            started.set()
            cancel.wait(5)  # hold the job at step 1 until the test cancels it
        return personalize(tiny_base, store, "alice", train, heldout, config=FAST, progress=on_progress, cancel=cancel)

    job = manager.start("alice", work)
    assert started.wait(60)
    assert manager.cancel("alice")
    assert job.wait(60) and job.state == "cancelled"
    assert store.list("alice") == {}
