"""``racing``: probe the top candidates briefly, then continue only the best."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .base import Strategy, option, overrides

if TYPE_CHECKING:
    from ...config import AdaptConfig
    from ..attempts import Attempt, LoopRun


@dataclass
class RacingOptions:
    race_size: int = option(3, "racing: top candidates probed (M)", "--race-size")
    probe_epochs: float = option(0.25, "racing: epochs of each probe", "--probe-epochs")


class Racing(Strategy):
    name = "racing"
    help = ("probe the top race_size candidates for probe_epochs each; continue only the best by "
            "validation")
    options = RacingOptions

    @classmethod
    def check_config(cls, config: AdaptConfig, selected: bool) -> str | None:
        if config.race_size < 1:
            return f"race_size must be >= 1, got {config.race_size}"
        if selected and not 0 < config.probe_epochs < config.transfer_epochs:
            return (f"racing: probe_epochs must be > 0 and < transfer_epochs "
                    f"({config.transfer_epochs}), got {config.probe_epochs}")
        return None

    def check_combination(self, others: Sequence[Strategy]) -> str | None:
        # The race is the transfer phase: another that runs it, or adds a try of its own before
        # the tries (composition), would be skipped silently.
        rival = next((o.name for o in others
                      if overrides(o, "transfer") or overrides(o, "first_try")), None)
        if rival is not None:
            return f"{rival} and racing both decide the first tries; choose one"
        return None

    def transfer(self, run: LoopRun, scores: Sequence[Any]) -> Attempt | None:
        """Probe the top ``race_size`` for ``probe_epochs`` each, continue only the best.

        A probe runs the first ``probe_epochs`` of a full transfer's learning-rate schedule; the
        winner (highest probe validation, the better-ranked on ties) continues for the rest of
        the transfer budget with the probe's optimiser state and from its step of the schedule
        (probe + continuation = one transfer), evaluated first so it never comes out worse. Only
        the leading probe's optimiser state is kept (memory stays O(1) in ``race_size``). A probe
        that passes ends the race; when a selected strategy continues passing attempts (settle),
        it is continued too, until it stops improving (a probe is too short to have settled).
        """
        c = self.config
        transfer = run.transfer_config()
        probe_config = replace(transfer, epochs=c.probe_epochs, schedule_epochs=c.transfer_epochs)
        goes_on = any(s.continues_after_pass for s in run.strategies)
        probes: list[Attempt] = []
        leader: Attempt | None = None
        for candidate in scores[: c.race_size]:
            probe = run.attempt("probe", run.candidate(candidate.adapter_id), probe_config,
                                keep_optimizer=True)
            probes.append(probe)
            if leader is None or run.value(probe) > run.value(leader):
                if leader is not None:
                    leader.result.resume = None
                leader = probe
            else:
                probe.result.resume = None
            if probe.passed:
                if not goes_on:
                    return probe
                break
        winner = max(probes, key=run.value)  # max keeps the first (better-ranked) on ties
        rest = replace(transfer, epochs=c.transfer_epochs - c.probe_epochs,
                       schedule_epochs=c.transfer_epochs)
        attempt = run.attempt("transfer", run.continued(winner), rest, eval_at_start=True,
                              resume=winner.result.resume)
        return attempt if attempt.passed else None
