"""File names of PEFT's own adapter format, and the sidecars adapterpool adds."""

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTERPOOL_META = "adapterpool.json"
TASK_EMBEDDING = "task_embedding.safetensors"  # the task summary (adapterpool.ranking.summarize)
# init_lora_weights values (or their prefixes: "pissa_niter_16") whose trained factors apply to
# a base model the initialisation rewrote, not to the shared one (adapterpool.models.rewritten_base
# saves them converted, with init_lora_weights true; a pool refuses them unconverted).
REWRITING_INITS = ("pissa", "olora", "corda", "lora_ga")
