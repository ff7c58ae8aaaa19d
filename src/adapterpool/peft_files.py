"""File names of PEFT's own adapter format, and the sidecar adapterpool adds."""

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTERPOOL_META = "adapterpool.json"
