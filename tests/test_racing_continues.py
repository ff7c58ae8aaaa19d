"""A racing probe and its continuation are one transfer: the winner goes on with the probe's
optimiser state (AdamW's moments and step count) and from its step of the learning-rate
schedule, instead of a fresh optimiser and a schedule that warms up again."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adapterpool import AdaptConfig, adapt, load_task
from adapterpool.loop import attempts as attempts_module
from adapterpool.models.build import load_tokenizer
from adapterpool.training.standard import standard_lora_model
from adapterpool.training.trainer import TrainConfig, train

# 64 examples, batch 8: 8 steps an epoch
CONFIG = TrainConfig(epochs=1, batch_size=8, max_length=32, evals_per_epoch=1, warmup_ratio=0.0)


def _steps(resume) -> set[int]:
    return {int(s["step"]) for s in resume.optimizer_state["state"].values()}


def test_a_resumed_run_goes_on_with_the_optimiser_and_the_schedule(tiny_base_model):
    task = load_task("builtin:subjectivity", max_train=64, max_eval=16)
    tokenizer = load_tokenizer(tiny_base_model)
    model = standard_lora_model(tiny_base_model, task.label_names, seed=0)
    first = train(model, task, tokenizer, replace(CONFIG, epochs=0.25, schedule_epochs=1),
                  show_progress=False, measure_energy=False, keep_optimizer=True)
    assert first.resume.schedule_step == 2 and _steps(first.resume) == {2}
    base_lr = first.learning_rate
    # 3 more steps of the same 8-step schedule: from step 2 to 5, lr = base * (8 - 5) / 8
    going_on = train(first.model, task, tokenizer,
                     replace(CONFIG, epochs=3 / 8, schedule_epochs=1), resume=first.resume,
                     show_progress=False, measure_energy=False, keep_optimizer=True)
    assert going_on.resume.schedule_step == 5 and _steps(going_on.resume) == {5}
    lrs = [g["lr"] for g in going_on.resume.optimizer_state["param_groups"]]
    assert lrs == [pytest.approx(base_lr * 3 / 8)] * len(lrs)
    # without resume the same run starts its own optimiser and the schedule from its start
    fresh = train(first.model, task, tokenizer, replace(CONFIG, epochs=3 / 8, schedule_epochs=1),
                  show_progress=False, measure_energy=False, keep_optimizer=True)
    assert _steps(fresh.resume) == {3}
    lrs = [g["lr"] for g in fresh.resume.optimizer_state["param_groups"]]
    assert lrs == [pytest.approx(base_lr * 5 / 8)] * len(lrs)


def test_racing_continues_the_winning_probes_optimiser(tiny_pool, monkeypatch):
    calls = []
    real_train = attempts_module.train

    def recording(*args, **kwargs):
        result = real_train(*args, **kwargs)
        calls.append((kwargs, result))
        return result

    monkeypatch.setattr(attempts_module, "train", recording)
    target = load_task("builtin:movie-sentiment", max_train=64, max_eval=32, seed=0)
    config = AdaptConfig(metric="logme", subset=3, max_tries=1, transfer_epochs=1,
                         fallback=CONFIG, max_samples=48, strategy="racing", race_size=2,
                         probe_epochs=0.25, threshold=1.01)
    result = adapt(target, tiny_pool, config, show_progress=False, measure_energy=False)
    kinds = [a.kind for a in result.attempts]
    assert kinds == ["probe", "probe", "transfer", "standard_lora"]
    (probe_a, a), (probe_b, b), (continued, _), _ = calls
    assert probe_a["keep_optimizer"] and probe_b["keep_optimizer"]
    winner = result.attempts[2].adapter_id
    winning = a if result.attempts[0].adapter_id == winner else b
    assert continued["resume"] is not None
    assert continued["resume"].schedule_step == 2  # 0.25 of an 8-step epoch
    assert continued["resume"] is winning.resume  # the winner's own state
    # only the leading probe kept its optimiser state (memory O(1) in race_size)
    assert sum(r.resume is not None for r in (a, b)) == 1
