"""Tiny random-weight models with the bundled model's tokenizer: real architectures, seconds to export."""

import shutil
from pathlib import Path

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 49152,
    "max_position_embeddings": 512,
}


def tiny_model(architecture: str, folder: Path, tokenizer_from: Path, seed: int = 0, **overrides) -> Path:
    """Save a random `architecture` model (TINY sizes, `overrides` on top) with a working tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.for_model(architecture, **{**TINY, **overrides})
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, folder / name)
    return folder
