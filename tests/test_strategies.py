"""The loop's strategies for real on a tiny random BERT, the stop rules, and AdaptConfig.

Each loop test checks the mechanism itself (where an attempt stopped, which tensors a run started
from, which head a model has), so that it fails when the mechanism breaks, not only when the
outcome changes.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from adapterpool import AdaptConfig, adapt, load_task
from adapterpool.errors import UsageError
from adapterpool.loop.strategies import (
    STRATEGIES,
    CutoffRule,
    PassRule,
    SettleRule,
    Strategy,
    first_reason,
    parse_strategies,
    register_strategy,
)
from adapterpool.pool import AdapterPool
from adapterpool.training.trainer import TrainConfig

# batch 8 on 64 examples: 8 steps an epoch, so evaluations can fall inside an epoch
FALLBACK = TrainConfig(epochs=1, max_length=32, batch_size=8, evals_per_epoch=1)
BASE = AdaptConfig(metric="logme", subset=3, max_tries=1, transfer_epochs=1, fallback=FALLBACK,
                   max_samples=48, strategy="plain")  # each test adds the strategies it tests


@pytest.fixture(scope="module")
def target():
    return load_task("builtin:movie-sentiment", max_train=64, max_eval=32, seed=0)


def _adapt(task, pool, config: AdaptConfig, **changes):
    return adapt(task, pool, replace(config, **changes), show_progress=False,
                 measure_energy=False)


def _state(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def _scores(history: list[dict]) -> list[tuple]:
    return [(h["step"], h["accuracy"], h["f1_macro"]) for h in history]


# -- stop rules (no model) -----------------------------------------------------------------------

def _entry(step: int, epoch: float, accuracy: float) -> dict:
    return {"step": step, "epoch": epoch, "seconds": 0.0, "accuracy": accuracy}


def test_pass_rule_looks_at_the_latest_evaluation_only():
    rule, config = PassRule(0.8, "accuracy"), TrainConfig(epochs=2)
    assert rule([_entry(2, 0.5, 0.79)], config) is None
    assert rule([_entry(2, 0.5, 0.9), _entry(4, 1.0, 0.7)], config) is None
    assert rule([_entry(2, 0.5, 0.7), _entry(4, 1.0, 0.8)], config) == "passed"
    at_start = PassRule(0.8, "accuracy", at_start_only=True)
    assert at_start([_entry(0, 0.0, 0.9)], config) == "passed"
    assert at_start([_entry(0, 0.0, 0.1), _entry(2, 0.5, 0.9)], config) is None


def test_settle_rule_waits_for_the_threshold_then_for_patience_without_a_new_best():
    rule, config = SettleRule(0.8, "accuracy", patience=0.5), TrainConfig(epochs=2)
    curve = [0.7, 0.82, 0.85, 0.84, 0.85, 0.83]
    history = [_entry(i + 1, (i + 1) / 4, a) for i, a in enumerate(curve)]
    # below the threshold: never stops (patience before passing is the trainer's business)
    assert rule(history[:1], config) is None
    assert rule(history[:2], config) is None  # passed, but still at its best
    assert rule(history[:3], config) is None  # a new best
    assert rule(history[:4], config) is None  # one evaluation without a new best
    # 0.85 again is a tie, not a new best: half an epoch after the earliest best
    assert rule(history[:5], config) == "passed"
    # patience counts epochs: evaluated once an epoch (a fallback), one evaluation is enough
    per_epoch = [_entry(10, 1.0, 0.85), _entry(20, 2.0, 0.84)]
    assert rule(per_epoch[:1], config) is None and rule(per_epoch, config) == "passed"
    falling = [_entry(1, 0.25, 0.9), _entry(2, 0.5, 0.95), _entry(3, 0.75, 0.6)]
    # before the threshold is met, a higher value does not count as the best to beat
    assert SettleRule(0.92, "accuracy", patience=0.25)(falling, config) == "passed"
    assert SettleRule(0.99, "accuracy", patience=0.25)(falling, config) is None


def test_cutoff_rule_waits_min_epochs_then_projects_the_best_so_far():
    rule = CutoffRule(0.9, "accuracy", min_epochs=0.5, max_gain_per_epoch=0.2)
    config = TrainConfig(epochs=2)
    assert rule([_entry(1, 0.25, 0.1)], config) is None  # too early to judge
    # best 0.55 + 0.2 * 1.5 remaining = 0.85 < 0.9
    assert rule([_entry(2, 0.5, 0.55)], config) == "cutoff"
    # best 0.65 + 0.2 * 1.5 = 0.95 >= 0.9; the best, not the latest, counts
    assert rule([_entry(2, 0.5, 0.65), _entry(3, 0.75, 0.5)], config) is None
    both = first_reason(PassRule(0.5, "accuracy"), rule)
    assert both([_entry(2, 0.5, 0.55)], config) == "passed"
    assert first_reason(None, None) is None


def test_strategy_names_are_checked_with_a_suggestion():
    assert parse_strategies("cutoff,early_pass") == ("early-pass", "cutoff")
    assert parse_strategies(["racing", "warm-fallback"]) == ("warm-fallback", "racing")
    assert parse_strategies("") == ("plain",)
    with pytest.raises(UsageError, match="did you mean 'early-pass'"):
        parse_strategies("early-pas")
    with pytest.raises(UsageError, match="combines with nothing"):
        parse_strategies("plain,cutoff")


# -- AdaptConfig ---------------------------------------------------------------------------------

def test_adapt_config_round_trips_through_json():
    config = AdaptConfig(metric="leep", strategy="racing,cutoff,early-pass", min_score=-3.5,
                         fallback=TrainConfig(epochs=10, evals_per_epoch=1), max_samples=None,
                         race_size=2, probe_epochs=0.5, threshold=0.8)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["strategy"] == ["early-pass", "cutoff", "racing"]
    assert AdaptConfig.from_dict(data) == config
    assert AdaptConfig.from_dict(AdaptConfig().to_dict()) == AdaptConfig()


def test_adapt_config_refuses_unknown_and_inconsistent_settings():
    with pytest.raises(UsageError, match="did you mean 'max_tries'"):
        AdaptConfig.from_dict({"max_trys": 1})
    with pytest.raises(UsageError, match="did you mean 'patience'"):
        AdaptConfig.from_dict({"fallback": {"patiense": 2}})
    with pytest.raises(UsageError, match="needs the 'cutoff' strategy"):
        AdaptConfig(strategy="plain", min_score=0.5)
    with pytest.raises(UsageError, match="probe_epochs"):
        AdaptConfig(strategy="racing", transfer_epochs=1, probe_epochs=1)
    with pytest.raises(UsageError, match="did you mean 'epochs'"):
        AdaptConfig().with_overrides({"epoch": 1})


def test_fallback_seed_and_selection_metric_follow_the_loop_visibly():
    config = AdaptConfig(seed=3, threshold_metric="f1_macro", fallback=TrainConfig(epochs=5),
                         threshold=0.5)
    assert config.fallback.seed == 0  # the given config is left as it was ...
    run = config.resolved_fallback()  # ... and what runs is derived, in plain sight
    assert (run.seed, run.selection_metric, run.epochs) == (3, "f1_macro", 5)
    assert config.transfer_config().epochs == config.transfer_epochs
    assert config.transfer_config().seed == 3
    with pytest.warns(UserWarning, match="not used"):
        AdaptConfig(seed=1, fallback=TrainConfig(seed=7))


def test_old_keyword_arguments_map_onto_fields():
    config = AdaptConfig().with_overrides({"epochs": 1, "train_config": FALLBACK, "seed": 2})
    assert (config.transfer_epochs, config.fallback, config.seed) == (1, FALLBACK, 2)
    assert AdaptConfig().with_overrides({"train_config": None}).fallback == TrainConfig()


# -- the strategies in the loop ------------------------------------------------------------------

def test_early_pass_stops_at_the_first_evaluation_meeting_the_threshold(target, tiny_pool):
    patient = replace(FALLBACK, patience=100)  # no early stopping: the whole curve
    config = replace(BASE, transfer_epochs=2, threshold=1.01, fallback=patient)
    # the same schedule of evaluations without early passing: the curve to compare with
    curve = _adapt(target, tiny_pool, config,
                   fallback=replace(patient, evals_per_epoch=4)).attempts[0].result.history
    assert len(curve) == 8 and curve[0]["step"] == 2
    threshold = max(h["accuracy"] for h in curve[1:])
    first = next(i for i, h in enumerate(curve) if h["accuracy"] >= threshold)
    result = _adapt(target, tiny_pool, config, strategy="early-pass", threshold=threshold)
    attempt = result.attempts[0]
    assert attempt.result.stop_reason == "passed" and attempt.passed
    assert _scores(attempt.result.history) == _scores(curve[: first + 1])
    assert result.outcome == "transfer" and len(result.attempts) == 1
    assert result.report["attempts"][0]["stop_reason"] == "passed"
    assert result.report["strategy"] == ["early-pass"]

    zero = _adapt(target, tiny_pool, config, strategy="early-pass", threshold=0.0)
    history = zero.attempts[0].result.history
    assert len(history) == 1 and history[0]["step"] == 2  # 1/4 epoch of 8 steps
    assert zero.attempts[0].result.stop_reason == "passed"
    assert zero.attempts[0].result.epochs_run == pytest.approx(0.25)


def test_settle_goes_on_past_the_pass_until_validation_stops_improving(target, tiny_pool):
    patient = replace(FALLBACK, patience=100, evals_per_epoch=4)
    config = replace(BASE, transfer_epochs=2, threshold=1.01, fallback=patient)
    curve = _adapt(target, tiny_pool, config).attempts[0].result.history
    values = [h["accuracy"] for h in curve]
    threshold = min(values)  # met at the first evaluation
    expected = SettleRule(threshold, "accuracy", patience=0.25)
    stop = next((i for i in range(len(curve)) if expected(curve[: i + 1], patient)), None)
    result = _adapt(target, tiny_pool, config, strategy="settle", threshold=threshold,
                    settle_patience=0.25)
    attempt = result.attempts[0]
    assert attempt.passed and result.outcome == "transfer"
    if stop is None:  # improved to the end: the whole budget
        assert attempt.result.stop_reason == "budget"
        assert _scores(attempt.result.history) == _scores(curve)
    else:
        assert attempt.result.stop_reason == "passed"
        assert _scores(attempt.result.history) == _scores(curve[: stop + 1])
    # the weights kept are the best evaluation's, not the one the pass was first seen at
    best = max(h["accuracy"] for h in attempt.result.history)
    assert attempt.result.validation["accuracy"] == best


def test_cutoff_stops_a_hopeless_attempt_before_its_budget(target, tiny_pool):
    config = replace(BASE, transfer_epochs=2, threshold=1.01)
    plain = _adapt(target, tiny_pool, config).attempts
    cut = _adapt(target, tiny_pool, config, strategy="cutoff").attempts
    assert plain[0].result.stop_reason == "budget" and plain[0].result.epochs_run == 2
    assert cut[0].result.stop_reason == "cutoff"
    assert config.cutoff_min_epochs <= cut[0].result.epochs_run < 2
    assert cut[0].result.history[-1]["step"] < plain[0].result.history[-1]["step"]
    # the fallback is not cut off unless asked (cutoff_fallback)
    assert [a.kind for a in cut] == ["transfer", "standard_lora"]
    assert cut[1].result.stop_reason != "cutoff"


def test_cutoff_skips_transfer_when_the_top_score_is_too_low(target, tiny_pool):
    result = _adapt(target, tiny_pool, BASE, strategy="cutoff", min_score=math.inf,
                    threshold=0.0)
    assert [a.kind for a in result.attempts] == ["standard_lora"]
    skipped = result.report["skipped"]
    assert skipped["adapter_id"] == result.report["scores"][0]["adapter_id"]
    assert skipped["score"] == result.report["scores"][0]["score"]
    assert result.outcome == "standard_lora"
    kept = _adapt(target, tiny_pool, BASE, strategy="cutoff", min_score=-math.inf,
                  threshold=0.0)
    assert kept.report["skipped"] is None and kept.attempts[0].kind == "transfer"


class _Recorder:
    """Stands in for the loop's ``train``: records the model's tensors on entry and at every
    evaluation (through a spying stop rule), and can replace a call's validation scores.
    """

    def __init__(self, monkeypatch, fake_validation: dict[int, float] | None = None) -> None:
        from adapterpool.loop import attempts as loop

        self.real_train = loop.train
        self.fake_validation = fake_validation or {}
        self.calls: list[dict] = []
        monkeypatch.setattr(loop, "train", self)

    def __call__(self, model, *args, stop_rule=None, **kwargs):
        call = {"entry": _state(model), "at_step": {}}

        def spy(history, config):
            call["at_step"][history[-1]["step"]] = _state(model)
            return stop_rule(history, config) if stop_rule is not None else None

        result = self.real_train(model, *args, stop_rule=spy, **kwargs)
        call["result"], call["real_validation"] = result, dict(result.validation)
        if len(self.calls) in self.fake_validation:
            result.validation = dict.fromkeys(result.validation,
                                              self.fake_validation[len(self.calls)])
        self.calls.append(call)
        return result

    def best_state(self, index: int) -> dict[str, torch.Tensor]:
        call = self.calls[index]
        return call["at_step"][call["result"].best_step]


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_warm_fallback_continues_the_best_attempts_restored_weights(
    target, tiny_pool, monkeypatch
):
    recorder = _Recorder(monkeypatch)
    fallback_config = replace(FALLBACK, evals_per_epoch=4, patience=100)  # transfers too
    result = _adapt(target, tiny_pool, BASE, strategy="warm-fallback", threshold=1.01,
                    max_tries=2, fallback=fallback_config, warm_fallback_max_shortfall=None,
                    warm_fallback_at_once=False)
    assert [a.kind for a in result.attempts] == ["transfer", "transfer", "warm_fallback"]
    transfers, fallback = result.attempts[:2], result.attempts[2]
    best = max(range(2), key=lambda i: transfers[i].result.validation["accuracy"])
    assert fallback.adapter_id == transfers[best].adapter_id
    # its tensors on entry are those of the best attempt's best evaluation (not its last step)
    entry = recorder.calls[2]["entry"]
    assert _equal(entry, recorder.best_state(best))
    assert not _equal(entry, recorder.best_state(1 - best))
    # evaluated before its first step: the best attempt's validation, exactly
    first = fallback.result.history[0]
    assert first["step"] == 0
    assert {k: first[k] for k in transfers[best].result.validation} == (
        transfers[best].result.validation)
    assert fallback.result.validation["accuracy"] >= transfers[best].result.validation["accuracy"]
    assert fallback.result.epochs_run == fallback_config.epochs  # the whole standard budget
    assert result.outcome == "failed"
    assert result.report["attempts"][2]["kind"] == "warm_fallback"
    # the source's numbers no longer describe its model (the fallback trained it on), so the
    # result is the fallback's or (earliest on ties) another attempt's with its own weights
    finals = [a["final"] for a in result.report["attempts"]]
    assert sum(finals) == 1 and not finals[best]
    final = result.attempts[finals.index(True)]
    assert final.result.validation["accuracy"] == fallback.result.validation["accuracy"]
    trained = {n: q for n, q in result.model.named_parameters() if q.requires_grad}
    assert all(torch.equal(trained[n], v) for n, v in final.state["params"].items())


def test_warm_fallback_that_passes_is_its_own_outcome(target, tiny_pool):
    config = replace(BASE, strategy="warm-fallback", transfer_epochs=0.5,
                     fallback=replace(FALLBACK, epochs=3, evals_per_epoch=2),
                     warm_fallback_max_shortfall=None)
    first = _adapt(target, tiny_pool, config, threshold=1.01)
    transfer, fallback = first.attempts
    gained = fallback.result.validation["accuracy"]
    assert gained > transfer.result.validation["accuracy"], "the tiny setup must learn here"
    again = _adapt(target, tiny_pool, config, threshold=gained)
    assert [a.kind for a in again.attempts] == ["transfer", "warm_fallback"]
    assert again.outcome == "warm_fallback" and again.report["outcome"] == "warm_fallback"


def test_warm_fallback_starts_from_scratch_when_the_best_attempt_is_far_below(target, tiny_pool):
    probe = _adapt(target, tiny_pool, BASE, threshold=1.01)
    best = probe.attempts[0].result.validation["accuracy"]
    # 5% short of the threshold (the default tolerates 10%): the attempt is continued
    near = _adapt(target, tiny_pool, BASE, strategy="warm-fallback", threshold=best / 0.95)
    assert [a.kind for a in near.attempts] == ["transfer", "warm_fallback"]
    assert near.report["warm_fallback"] == {
        "adapter_id": near.attempts[0].adapter_id, "validation": best,
        "shortfall": pytest.approx(0.05), "max_shortfall": 0.1, "continued": True}
    # 20% short: the source looks unrelated, standard LoRA starts from scratch
    far = _adapt(target, tiny_pool, BASE, strategy="warm-fallback", threshold=best / 0.8)
    assert [a.kind for a in far.attempts] == ["transfer", "standard_lora"]
    assert far.report["warm_fallback"]["continued"] is False
    assert far.report["warm_fallback"]["shortfall"] == pytest.approx(0.2)
    assert far.attempts[1].result.history[0]["step"] > 0  # no evaluation of a carried model
    assert far.attempts[1].adapter_id is None
    assert _adapt(target, tiny_pool, BASE, threshold=1.01).report["warm_fallback"] is None


def test_a_near_miss_ends_the_tries_and_is_continued_at_once(target, tiny_pool):
    """With two tries allowed, a first try within the shortfall is continued at once (no second
    candidate); further below, the second candidate is tried; without at_once, both are."""
    probe = _adapt(target, tiny_pool, BASE, threshold=1.01)
    best = probe.attempts[0].result.validation["accuracy"]
    config = replace(BASE, strategy="warm-fallback", max_tries=2)
    near = _adapt(target, tiny_pool, config, threshold=best / 0.95)
    assert [a.kind for a in near.attempts] == ["transfer", "warm_fallback"]
    first = probe.attempts[0].adapter_id
    assert near.attempts[1].adapter_id == near.attempts[0].adapter_id == first
    both = _adapt(target, tiny_pool, config, threshold=best / 0.95, warm_fallback_at_once=False)
    assert [a.kind for a in both.attempts] == ["transfer", "transfer", "warm_fallback"]
    assert both.attempts[1].adapter_id != both.attempts[0].adapter_id
    far = _adapt(target, tiny_pool, config, threshold=best / 0.8)  # 20% short: unrelated
    assert [a.kind for a in far.attempts][:2] == ["transfer", "transfer"]
    # with no threshold the first try is kept as it is: nothing to end
    kept = _adapt(target, tiny_pool, config, threshold=None)
    assert [a.kind for a in kept.attempts] == ["transfer"]


@pytest.fixture()
def subjectivity_pool(tiny_pool, tmp_path) -> AdapterPool:
    """A pool holding only the tiny pool's subjectivity adapter (labels: subjective, objective)."""
    pool = AdapterPool.init(tmp_path / "single", base_model=tiny_pool.base_model)
    (record,) = [r for r in tiny_pool.list() if r.task_name == "subjectivity"]
    pool.add(tiny_pool.adapter_dir(record.id))
    return pool


def _logits(model, task, base_model: str) -> torch.Tensor:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    batch = tokenizer(list(task.validation.text[:16]), padding=True, truncation=True,
                      max_length=32, return_tensors="pt")
    device = next(model.parameters()).device  # train() moves a model to CUDA when present
    model.eval()
    with torch.no_grad():
        return model(**{k: v.to(device) for k, v in batch.items()}).logits.cpu()


def test_same_labels_evaluates_the_source_as_it_is_with_its_head(subjectivity_pool):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    pool = subjectivity_pool
    task = load_task("builtin:subjectivity", max_train=64, max_eval=32, seed=1)
    (record,) = pool.list()
    assert list(task.label_names) == record.label_names
    result = _adapt(task, pool, BASE, strategy="same-labels", threshold=0.0)
    (attempt,) = result.attempts
    assert attempt.head_kept and attempt.passed
    assert attempt.result.stop_reason == "passed" and attempt.result.epochs_run == 0
    assert [h["step"] for h in attempt.result.history] == [0]
    assert result.report["attempts"][0]["epochs"] == 0

    base = AutoModelForSequenceClassification.from_pretrained(pool.base_model, num_labels=2)
    source = PeftModel.from_pretrained(base, str(pool.adapter_dir(record.id)))
    expected = _logits(source, task, pool.base_model)
    assert torch.allclose(_logits(result.model, task, pool.base_model), expected, atol=1e-5)

    # without the strategy the head is fresh (and the attempt trains)
    plain_run = _adapt(task, pool, BASE, threshold=0.0)
    plain = plain_run.attempts[0]
    assert not plain.head_kept and plain.result.epochs_run == 1
    assert not torch.allclose(_logits(plain_run.model, task, pool.base_model), expected,
                              atol=1e-3)


def test_same_labels_leaves_other_label_sets_with_a_fresh_head(target, tiny_pool):
    result = _adapt(target, tiny_pool, BASE, strategy="same-labels", threshold=0.0)
    assert not result.attempts[0].head_kept
    assert result.attempts[0].result.history[0]["step"] > 0


def test_racing_probes_the_top_candidates_and_continues_only_the_best(
    target, tiny_pool, monkeypatch
):
    # probe validations set to 0.1, 0.3, 0.2: the best probe is the second-ranked candidate
    recorder = _Recorder(monkeypatch, fake_validation={0: 0.1, 1: 0.3, 2: 0.2})
    result = _adapt(target, tiny_pool, BASE, strategy="racing", threshold=1.01,
                    race_size=3, probe_epochs=0.25, transfer_epochs=1)
    kinds = [a.kind for a in result.attempts]
    assert kinds == ["probe", "probe", "probe", "transfer", "standard_lora"]
    probes, continued = result.attempts[:3], result.attempts[3]
    ranked = [s["adapter_id"] for s in result.report["scores"]]
    assert [p.adapter_id for p in probes] == ranked[:3]
    assert all(p.result.epochs_run == pytest.approx(0.25) for p in probes)
    winner = probes[1]
    assert continued.adapter_id == winner.adapter_id
    assert continued.start.continues is winner  # its trained state, not a restart
    assert _equal(recorder.calls[3]["entry"], recorder.best_state(1))
    assert continued.result.history[0]["step"] == 0
    assert continued.result.history[0]["accuracy"] == recorder.calls[1]["real_validation"][
        "accuracy"]
    assert continued.result.epochs_run == pytest.approx(0.75)
    assert result.report["attempts"][0]["kind"] == "probe"


def test_racing_probe_that_passes_ends_the_race(target, tiny_pool):
    result = _adapt(target, tiny_pool, BASE, strategy="racing", threshold=0.0, race_size=3)
    assert [a.kind for a in result.attempts] == ["probe"]
    assert result.outcome == "transfer"


def test_racing_with_settle_continues_a_passing_probe_instead_of_probing_on(target, tiny_pool):
    result = _adapt(target, tiny_pool, BASE, strategy="racing,settle", threshold=0.0, race_size=3,
                    probe_epochs=0.25, transfer_epochs=1, settle_patience=0.25)
    assert [a.kind for a in result.attempts] == ["probe", "transfer"]
    probe, continued = result.attempts
    assert continued.adapter_id == probe.adapter_id
    assert continued.start.continues is probe  # settled on, not restarted
    assert continued.result.history[0]["step"] == 0  # evaluated first: never worse than the probe
    # it stops exactly where the settle rule says on its own curve (or runs out of budget)
    curve, rule = continued.result.history, SettleRule(0.0, "accuracy", patience=0.25)
    stop = next((i for i in range(len(curve)) if rule(curve[: i + 1], FALLBACK)), None)
    assert continued.result.stop_reason == ("budget" if stop is None else "passed")
    assert stop is None or stop == len(curve) - 1
    assert result.outcome == "transfer"


def test_strategies_combine(target, tiny_pool):
    combined = "early-pass,cutoff,warm-fallback"
    result = _adapt(target, tiny_pool, BASE, threshold=1.01, max_tries=2, transfer_epochs=2,
                    strategy=combined, warm_fallback_max_shortfall=None,
                    warm_fallback_at_once=False)
    assert [a.kind for a in result.attempts] == ["transfer", "transfer", "warm_fallback"]
    assert [a.result.stop_reason for a in result.attempts[:2]] == ["cutoff", "cutoff"]
    assert all(a.result.epochs_run < 2 for a in result.attempts[:2])
    assert result.report["strategy"] == ["early-pass", "cutoff", "warm-fallback"]
    for attempt in result.report["attempts"]:
        seconds = [h["seconds"] for h in attempt["history"]]
        assert seconds == sorted(seconds) and all(s >= 0 for s in seconds)
    # The same run with the threshold at the best value the first try reached: the cutoff (no
    # earlier than before, the threshold being lower) lets it get there, and early-pass stops it
    # at that very evaluation, short of its budget; nothing else is tried.
    curve = result.attempts[0].result.history
    reachable = max(h["accuracy"] for h in curve)
    reached = next(i for i, h in enumerate(curve) if h["accuracy"] >= reachable)
    passing = _adapt(target, tiny_pool, BASE, threshold=reachable, max_tries=2,
                     transfer_epochs=2, strategy=combined, warm_fallback_max_shortfall=None)
    (attempt,) = passing.attempts
    assert attempt.result.stop_reason == "passed" and passing.outcome == "transfer"
    assert _scores(attempt.result.history) == _scores(curve[: reached + 1])
    assert attempt.result.epochs_run == curve[reached]["epoch"] < 2


# -- composition ---------------------------------------------------------------------------------


def _updates(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """Each LoRA module's weight update, scaling x B @ A, keyed by the module."""
    out = {}
    for key, a in state.items():
        if ".lora_A." in key:
            module = key.split(".lora_A.")[0]
            out[module] = scaling * state[key.replace(".lora_A.", ".lora_B.")] @ a
    return out


def test_score_weights_are_a_softmax_of_standardised_scores():
    from adapterpool.models.composition import score_weights

    assert score_weights([0.3, 0.3, 0.3]) == pytest.approx([1 / 3] * 3)
    w = score_weights([-1.0, -2.0, -3.0])
    assert w.sum() == pytest.approx(1.0) and w[0] > w[1] > w[2]
    # standardised: the same order and spread on another scale gives the same weights
    assert score_weights([10.0, 0.0, -10.0]) == pytest.approx(score_weights([1.0, 0.0, -1.0]))
    with pytest.raises(UsageError, match="finite"):
        score_weights([0.1, math.nan])


def test_compose_lora_is_peft_svd_merge_of_the_weighted_updates(tiny_pool, target):
    from adapterpool.models.composition import compose_lora
    from adapterpool.models.warm_start import adapter_state, read_adapter_config

    records = tiny_pool.list()
    folders = [tiny_pool.adapter_dir(r.id) for r in records[:2]]
    config = read_adapter_config(folders[0])
    scaling = config.lora_alpha / config.r
    lora = [{k: v for k, v in adapter_state(f, with_head=False).items() if "lora_" in k}
            for f in folders]
    # all weight on the first: its update exactly (rank r, so the SVD loses nothing)
    merged = compose_lora(tiny_pool.base_model, target.label_names, folders, [1.0, 0.0])
    assert set(merged) == set(lora[0])
    first, got = _updates(lora[0], scaling), _updates(merged, scaling)
    assert all(torch.allclose(got[m], first[m], atol=1e-5) for m in first)
    # the same adapter twice at half weight each is that adapter again
    twice = compose_lora(tiny_pool.base_model, target.label_names, [folders[1]] * 2, [0.5, 0.5])
    second = _updates(lora[1], scaling)
    assert all(torch.allclose(_updates(twice, scaling)[m], second[m], atol=1e-5) for m in second)
    # a real mix is neither input
    mix = _updates(compose_lora(tiny_pool.base_model, target.label_names, folders, [0.5, 0.5]),
                   scaling)
    assert not any(torch.allclose(mix[m], first[m], atol=1e-5) for m in first)


def test_composition_is_the_first_try_then_single_candidates(target, tiny_pool, monkeypatch):
    from adapterpool.models.composition import compose_lora, score_weights

    recorder = _Recorder(monkeypatch)
    result = _adapt(target, tiny_pool, BASE, strategy="composition", threshold=1.01, max_tries=2,
                    composition_size=3)
    assert [a.kind for a in result.attempts] == ["composition", "transfer", "standard_lora"]
    ranked = result.report["scores"]
    members = [s["adapter_id"] for s in ranked[:3]]
    weights = score_weights([s["score"] for s in ranked[:3]])
    assert result.report["composition"] == {"members": members,
                                            "weights": pytest.approx(list(weights))}
    assert result.attempts[0].adapter_id == members[0]
    assert result.attempts[1].adapter_id == members[0]  # then the best single candidate
    # the composed attempt starts from the merge's tensors, exactly
    merged = compose_lora(tiny_pool.base_model, target.label_names,
                          [tiny_pool.adapter_dir(i) for i in members], weights)
    entry = recorder.calls[0]["entry"]
    assert all(torch.equal(entry[k], merged[k]) for k in merged)
    with pytest.raises(UsageError, match="choose one"):
        AdaptConfig(strategy="composition,racing")


def test_composition_refuses_what_peft_cannot_merge(tiny_pool, target, tmp_path):
    from adapterpool.models.build import new_model
    from adapterpool.models.composition import compose_lora
    from adapterpool.models.saving import save_adapter

    dora = save_adapter(new_model(tiny_pool.base_model, target.label_names, "dora"),
                        tmp_path / "dora", {})
    lora = tiny_pool.adapter_dir(tiny_pool.list()[0].id)
    with pytest.raises(UsageError, match="DoRA"):
        compose_lora(tiny_pool.base_model, target.label_names, [lora, dora], [0.5, 0.5])
    ia3 = save_adapter(new_model(tiny_pool.base_model, target.label_names, "ia3"),
                       tmp_path / "ia3", {})
    with pytest.raises(UsageError, match="merges LoRA"):
        compose_lora(tiny_pool.base_model, target.label_names, [lora, ia3], [0.5, 0.5])
    with pytest.raises(UsageError, match=">= 2 adapters"):
        compose_lora(tiny_pool.base_model, target.label_names, [lora], [1.0])


# -- a strategy from outside: one class and its registration ----------------------------------

class WorstFirst(Strategy):
    """Tries the candidates worst-ranked first (a test of the protocol, not a good idea)."""

    name = "worst-first"
    help = "try the candidates worst-ranked first"
    report_key = "worst_first"

    def transfer(self, run, scores):
        self.order = [s.adapter_id for s in reversed(scores)][: self.config.max_tries]
        for adapter_id in self.order:
            attempt = run.attempt("transfer", run.candidate(adapter_id), run.transfer_config())
            if attempt.passed:
                return attempt
        return None

    def report(self) -> dict:
        return {"order": self.order}


@pytest.fixture()
def worst_first():
    register_strategy(WorstFirst)
    yield WorstFirst
    del STRATEGIES[WorstFirst.name]


def test_a_strategy_defined_here_runs_through_adapt_by_registration_alone(
        target, tiny_pool, worst_first, capsys):
    result = _adapt(target, tiny_pool, BASE, strategy="cutoff,worst-first", threshold=1.01,
                    max_tries=2, cutoff_max_gain_per_epoch=10.0)
    ranked = [s.adapter_id for s in result.scores]
    tried = [a.adapter_id for a in result.attempts if a.kind == "transfer"]
    assert tried == ranked[::-1][:2]  # its order, not the ranking's
    assert [a.kind for a in result.attempts] == ["transfer", "transfer", "standard_lora"]
    assert result.report["worst_first"] == {"order": tried}  # its report field
    assert result.report["strategy"] == ["cutoff", "worst-first"]  # registered after cutoff
    # the strategies refuse to share the transfer phase with it, each in its own words
    with pytest.raises(UsageError, match="worst-first and racing both decide the first tries"):
        AdaptConfig(strategy="racing,worst-first")
    with pytest.raises(UsageError, match="composition and worst-first both decide"):
        AdaptConfig(strategy="composition,worst-first")
    # and the command line offers it, with its help
    from adapterpool.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["adapt", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps, even at hyphens
    assert "worst-first:trythecandidatesworst-rankedfirst" in help_text


def test_settle_refuses_early_pass_instead_of_overriding_it():
    with pytest.raises(UsageError, match="settle and early-pass both decide"):
        AdaptConfig(strategy="settle,early-pass")


# -- memory: one model at a time, whatever the number of attempts ------------------------------

def test_attempts_keep_trained_state_and_one_model_is_alive_at_a_time(
        target, tiny_pool, monkeypatch):
    """Racing with 3 probes, the winner's continuation, then the warm fallback: five attempts,
    yet each trains while no other model is alive, and the attempts hold tensors, not models."""
    import gc
    import weakref

    from adapterpool.loop import attempts as loop
    from adapterpool.models import build

    alive: weakref.WeakSet = weakref.WeakSet()
    real_base, real_train = build.base_classifier, loop.train

    def counted_base(*args, **kwargs):
        model = real_base(*args, **kwargs)
        alive.add(model)
        return model

    counts = []

    def counting_train(model, *args, **kwargs):
        gc.collect()
        counts.append(len(alive))
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(build, "base_classifier", counted_base)
    monkeypatch.setattr(loop, "train", counting_train)
    result = _adapt(target, tiny_pool, BASE, strategy="racing,warm-fallback", threshold=1.01,
                    race_size=3, transfer_epochs=0.5, probe_epochs=0.125,
                    warm_fallback_max_shortfall=None)
    assert [a.kind for a in result.attempts] == ["probe"] * 3 + ["transfer", "warm_fallback"]
    assert counts == [1] * 5  # the model being trained, and no other
    for attempt in result.attempts:
        assert attempt.result.model is None
        assert not any(isinstance(v, torch.nn.Module) for v in vars(attempt).values())
        assert attempt.state["params"] and all(
            t.device.type == "cpu" for t in attempt.state["params"].values())
    gc.collect()
    assert len(alive) == 1 and isinstance(result.model, torch.nn.Module)  # the final adapter's
    final = result.attempts[[a["final"] for a in result.report["attempts"]].index(True)]
    trained = {n: p for n, p in result.model.named_parameters() if p.requires_grad}
    assert all(torch.equal(trained[n], v) for n, v in final.state["params"].items())


def test_the_default_strategy_is_the_benchmarks_less_what_cannot_apply():
    """Left at its default, the strategy is adapterpool.DEFAULT_STRATEGY, less a member that
    refuses the rest of the config (skip-unrelated with a threshold in F1), and a kind's own
    default where it has one (text2text: plain); a chosen strategy is never changed, and a bad
    option value is still refused rather than dropped."""
    from adapterpool import DEFAULT_STRATEGY

    assert "skip-unrelated" in DEFAULT_STRATEGY and AdaptConfig().strategy == DEFAULT_STRATEGY
    f1 = AdaptConfig(threshold_metric="f1_macro")
    assert f1.strategy == tuple(s for s in DEFAULT_STRATEGY if s != "skip-unrelated")
    with pytest.raises(UsageError, match="linear probe"):
        AdaptConfig(strategy="skip-unrelated", threshold_metric="f1_macro")
    with pytest.raises(UsageError, match="probe_shortfall must be >= 0"):
        AdaptConfig(probe_shortfall=-0.1)
    assert AdaptConfig().for_kind("text2text").strategy == ("plain",)
    assert AdaptConfig(strategy="early-pass").for_kind("text2text").strategy == ("early-pass",)
    assert AdaptConfig().for_kind("image").strategy == DEFAULT_STRATEGY
    assert AdaptConfig.from_dict(f1.to_dict()) == f1
