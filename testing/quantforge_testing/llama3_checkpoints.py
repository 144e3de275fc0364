"""Random-weight bf16 checkpoints in Llama-3 shapes (1 B, 3 B, 8 B), written shard by shard.

The 8 B one is 16 GB of safetensors: building it with `from_config` would hold the whole model in RAM
first, so the tensors are drawn and written one shard at a time (at most `SHARD_BYTES` in memory), with
the index file transformers reads. Weights are N(0, 0.02) like `from_config`'s initialisation, norms 1.
"""

import json
import shutil
from pathlib import Path

from quantforge.core.atomic import atomic_dir

SHAPES = {
    # Llama-3.2-1B, Llama-3.2-3B and Llama-3-8B: vocabulary 128 256, 8 key-value heads.
    "1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "head_dim": 64,
        "tie_word_embeddings": True,
    },
    "3b": {
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "head_dim": 128,
        "tie_word_embeddings": True,
    },
    "8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "head_dim": 128,
        "tie_word_embeddings": False,
    },
}
COMMON = {
    "vocab_size": 128256,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
SHARD_BYTES = 2 * 10**9


def tensor_shapes(shape: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint, by its transformers name, in file order."""
    hidden, inter, heads = shape["hidden_size"], shape["intermediate_size"], shape["num_attention_heads"]
    head_dim, kv = shape["head_dim"], COMMON["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (COMMON["vocab_size"], hidden)}
    for layer in range(shape["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        shapes |= {
            prefix + "input_layernorm.weight": (hidden,),
            prefix + "self_attn.q_proj.weight": (heads * head_dim, hidden),
            prefix + "self_attn.k_proj.weight": (kv * head_dim, hidden),
            prefix + "self_attn.v_proj.weight": (kv * head_dim, hidden),
            prefix + "self_attn.o_proj.weight": (hidden, heads * head_dim),
            prefix + "post_attention_layernorm.weight": (hidden,),
            prefix + "mlp.gate_proj.weight": (inter, hidden),
            prefix + "mlp.up_proj.weight": (inter, hidden),
            prefix + "mlp.down_proj.weight": (hidden, inter),
        }
    shapes["model.norm.weight"] = (hidden,)
    if not shape["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (COMMON["vocab_size"], hidden)
    return shapes


def llama3_checkpoint(size: str, folder: Path, tokenizer_from: Path, seed: int = 0) -> Path:
    """Write a random bf16 Llama-3-shaped model of `size` (a key of SHAPES) at `folder`, atomically; an
    existing complete one is kept."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    if (folder / "model.safetensors.index.json").exists():
        return folder
    shape = SHAPES[size]
    shapes = tensor_shapes(shape)
    total = sum(2 * _numel(s) for s in shapes.values())
    generator = torch.Generator().manual_seed(seed)
    with atomic_dir(folder, total + 2**20) as tmp:
        shards: list[list[str]] = [[]]  # names per file; a shard's tensors are drawn when it is written
        held = 0
        for name, tensor_shape in shapes.items():
            if held and held + 2 * _numel(tensor_shape) > SHARD_BYTES:
                shards.append([])
                held = 0
            shards[-1].append(name)
            held += 2 * _numel(tensor_shape)
        weight_map = {}
        for index, names in enumerate(shards, start=1):
            file = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
            tensors = {name: _draw(shapes[name], name, generator) for name in names}
            save_file(tensors, tmp / file, metadata={"format": "pt"})
            weight_map |= dict.fromkeys(names, file)
            del tensors
        (tmp / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
        config = LlamaConfig(**COMMON, **shape, dtype="bfloat16", architectures=["LlamaForCausalLM"])
        config.save_pretrained(tmp)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tokenizer_from / name, tmp / name)
    return folder


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _draw(shape: tuple[int, ...], name: str, generator):
    import torch

    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16)
    return torch.empty(shape, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=generator)
