"""Benchmarks: ranking quality of the metrics and the loop against standard LoRA."""
