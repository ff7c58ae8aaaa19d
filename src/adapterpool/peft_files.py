"""File names of PEFT's own adapter format, and the sidecars adapterpool adds."""

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTERPOOL_META = "adapterpool.json"
TASK_EMBEDDING = "task_embedding.safetensors"  # the task summary (adapterpool.ranking.summarize)
