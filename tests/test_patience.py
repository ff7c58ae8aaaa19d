"""Early stopping's patience is counted in epochs, whatever the evaluation cadence: a loop that
evaluates 4 times an epoch (early-pass, settle) waits as long as one that evaluates once."""

from __future__ import annotations

import pytest

from adapterpool import load_task
from adapterpool.errors import UsageError
from adapterpool.models.build import load_tokenizer
from adapterpool.training.standard import standard_lora_model
from adapterpool.training.trainer import TrainConfig, train


@pytest.mark.parametrize("evals_per_epoch", [1, 4])
def test_patience_waits_the_same_epochs_at_any_cadence(tiny_base_model, evals_per_epoch):
    # 64 examples, batch 8: 8 steps an epoch. A vanishing learning rate keeps validation where it
    # is, so the first evaluation stays the best and every later one is without gain.
    task = load_task("builtin:subjectivity", max_train=64, max_eval=16)
    config = TrainConfig(epochs=5, batch_size=8, max_length=32, learning_rate=1e-12,
                         evals_per_epoch=evals_per_epoch, patience=1)
    model = standard_lora_model(tiny_base_model, task.label_names, seed=0)
    result = train(model, task, load_tokenizer(tiny_base_model), config, show_progress=False,
                   measure_energy=False)
    first = 1 / evals_per_epoch
    assert result.stop_reason == "early_stopping"
    assert result.history[0]["epoch"] == pytest.approx(first)  # the best
    # one whole epoch without gain after it, at either cadence
    assert result.epochs_run == pytest.approx(first + 1)
    assert len(result.history) == evals_per_epoch + 1


def test_patience_must_be_positive():
    with pytest.raises(UsageError, match="patience must be > 0 epochs"):
        TrainConfig(patience=0)
