"""``plain``: no strategy: fixed-budget transfer tries, then standard LoRA from scratch."""

from __future__ import annotations

from .base import PLAIN, Strategy


class Plain(Strategy):
    name = PLAIN
    help = "fixed-budget transfer tries, then standard LoRA from scratch (the original loop)"
