"""How long a personalize job trains: steps planned from the data, and threads that leave the
serving backend its share of the CPU."""

from __future__ import annotations

from specgen_backend.training.train import TrainConfig, planned_steps, train_adapter, training_threads

from .conftest import generic_examples


def test_planned_steps_scale_with_the_data():
    """With steps=0, a run makes max_epochs passes over the data, between min_steps and max_steps."""
    auto = TrainConfig(steps=0, batch_size=8)
    assert planned_steps(auto, 1) == 20  # one tiny notebook: a few updates, not 100
    assert planned_steps(auto, 2) == 20
    assert planned_steps(auto, 24) == 60  # 3 batches a pass, 20 passes
    assert planned_steps(auto, 40) == 100
    assert planned_steps(auto, 4000) == 100  # capped
    assert planned_steps(TrainConfig(steps=7), 4000) == 7  # an explicit count is kept as given


def test_training_threads_leave_half_the_cores():
    """A training process takes half the cores (at least one), never all of them."""
    assert training_threads(1) == 1
    assert training_threads(2) == 1
    assert training_threads(16) == 8


def test_a_run_on_two_examples_takes_the_planned_steps(tiny_base, tmp_path):
    """Two examples train 20 steps (not 100), and progress reports that total."""
    seen = []
    result = train_adapter(tiny_base, generic_examples(2), tmp_path / "adapter", config=TrainConfig(steps=0),
                           progress=lambda step, total, loss: seen.append((step, total)))
    assert result.steps == 20 and len(result.losses) == 20
    assert seen[-1] == (20, 20) and {total for _, total in seen} == {20}
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
