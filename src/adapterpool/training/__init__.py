"""Training: the trainer (:mod:`.trainer`), standard LoRA from scratch (:mod:`.standard`), how
examples become model inputs (:mod:`.encoding`), text2text generation and its metrics
(:mod:`.generation`), and the energy meter every run reports (:mod:`.energy`).

Importing this package loads nothing heavy; :mod:`.trainer` imports torch.
"""
