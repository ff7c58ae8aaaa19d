"""Ranking pool adapters on a target task without training.

- :mod:`.rank`: :func:`~adapterpool.ranking.rank.rank`, the entry point;
- :mod:`.scoring`: one forward pass per candidate, every transferability metric from it;
- :mod:`.shared_base`: one base model per ranking, each candidate merged in and taken out;
- :mod:`.prefilter`: stage 1 for large pools, by task-summary similarity;
- :mod:`.task_summary`: what a *task summary* is (the statistics of a task's sentence embeddings,
  saved with each adapter as ``task_embedding.safetensors``) and how two are compared;
- :mod:`.summarize`: computing task summaries, from a task's texts or from probe texts;
- :mod:`.reindex`: probe summaries for pool adapters that lack one.

"Summary" means a task summary everywhere in adapterpool; the command line's tables are
:mod:`adapterpool.cli.display`. Importing this package loads nothing heavy.
"""
