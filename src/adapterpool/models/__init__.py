"""The model layer: a base model with a PEFT adapter (and a head), built, warm-started, saved.

- :mod:`.base_model`: which base model a name or folder means (and its fingerprint);
- :mod:`.peft_methods`: the table of PEFT methods (LoRA, DoRA, AdaLoRA, IA3, prompt tuning, ...);
- :mod:`.build`: tokenizers, the base classifier, a fresh PEFT model, checks before any work;
- :mod:`.heads`: the classification head and the feature it reads;
- :mod:`.warm_start`: a new model whose adapter starts from a pool adapter's tensors;
- :mod:`.composition`: several LoRA adapters merged into one start;
- :mod:`.saving`: an adapter saved in PEFT format, or loaded for inference;
- :mod:`.shapes`: the tensor shapes an adapter must have on a base model (the pool's check).

Importing this package loads nothing heavy; its modules import torch, transformers and peft.
"""
