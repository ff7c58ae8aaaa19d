"""The loop's time-saving strategies, as plugins: a registry by name (as peft registers its
tuners), one module per strategy, each owning its options and its hooks.

A strategy is a subclass of :class:`Strategy` registered with :func:`register_strategy`; the
loop (:mod:`adapterpool.loop.attempts`) asks every selected strategy's hooks and knows none of
them by name. The command line's ``--strategy`` choices and help, the strategy options and the
report's strategy fields all come from :data:`STRATEGIES`. Adding a strategy is one module and
its registration (``tests/test_strategies.py`` registers one defined in the test file).

This package imports nothing heavy: the command line and :mod:`adapterpool.config` read it.
"""

from __future__ import annotations

from ...training.stopping import STOP_REASONS, StopRule, first_reason
from .base import (
    PLAIN,
    STRATEGIES,
    Strategy,
    applicable_strategies,
    check_strategies,
    parse_strategies,
    register_strategy,
)
from .composition import Composition, CompositionOptions
from .cutoff import Cutoff, CutoffOptions, CutoffRule
from .early_pass import EarlyPass, EarlyPassOptions, PassRule
from .plain import Plain
from .racing import Racing, RacingOptions
from .same_labels import SameLabels
from .settle import Settle, SettleOptions, SettleRule
from .skip_unrelated import SkipUnrelated, SkipUnrelatedOptions
from .warm_fallback import WarmFallback, WarmFallbackOptions

# The built-in strategies, in the canonical order of a selection (reports, the command line's
# help) and the order their hooks are asked in: a pass rule from early-pass or settle comes
# before same-labels' accept-as-it-is rule.
for _builtin in (Plain, EarlyPass, Settle, Cutoff, SkipUnrelated, WarmFallback, SameLabels, Racing,
                 Composition):
    register_strategy(_builtin)

__all__ = [
    "PLAIN", "STOP_REASONS", "STRATEGIES", "Composition", "CompositionOptions", "Cutoff",
    "CutoffOptions", "CutoffRule", "EarlyPass", "EarlyPassOptions", "PassRule", "Plain", "Racing",
    "RacingOptions", "SameLabels", "Settle", "SettleOptions", "SettleRule", "SkipUnrelated",
    "SkipUnrelatedOptions", "StopRule", "Strategy",
    "WarmFallback", "WarmFallbackOptions", "applicable_strategies", "check_strategies",
    "first_reason", "parse_strategies",
    "register_strategy",
]
