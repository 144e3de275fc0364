"""Generation agreement: greedy continuations of fixed prompts, a variant's against its baseline's.

Closer to what a serving user sees than perplexity: the same prompts through the model's chat template
(where it has one), a fixed number of new tokens (EOS ignored, so every continuation has that length),
greedy. The baseline's token ids are kept beside its next-token distributions; a variant's are compared
with them position by position."""

import json
from pathlib import Path
from typing import Any

import numpy as np

from quantforge.core.atomic import write_json
from quantforge.core.records import GenerationAgreement

# Short and varied (facts, arithmetic, code, instructions, translation, story, list, reasoning): a variant
# that drifts on one kind of text and not another shows in the per-prompt first divergence.
PROMPTS = (
    "What is the capital of France?",
    "What is 17 times 23?",
    "Write a Python function that reverses a string.",
    "Give three tips for staying focused while studying.",
    "Translate 'good morning, how are you?' into Spanish.",
    "Tell me a short story about a robot who learns to paint.",
    "List the planets of the solar system in order.",
    "If all cats are animals and some animals are black, are some cats black? Explain.",
)
NEW_TOKENS = 32  # enough for the first divergence of a good INT4 variant to show; ~8 s on a 135 M model
CONTINUATIONS = "continuations.json"  # in the baseline's kept folder, beside its distributions
GENERATION_FORM = f"greedy {len(PROMPTS)}x{NEW_TOKENS}"  # in the metrics cache keys: another set, new keys


def continuations(pipe: Any, new_tokens: int = NEW_TOKENS) -> list[list[int]]:
    """The greedy continuation (token ids, exactly `new_tokens`) of every prompt by an
    `openvino_genai.LLMPipeline`, each through the model's chat template when its tokenizer has one."""
    import openvino_genai

    tokenizer = pipe.get_tokenizer()
    config = openvino_genai.GenerationConfig()
    config.max_new_tokens = new_tokens
    config.min_new_tokens = new_tokens
    config.ignore_eos = True
    config.do_sample = False
    tokens = []
    for prompt in PROMPTS:
        if tokenizer.chat_template:  # the template writes the special tokens itself
            messages = [{"role": "user", "content": prompt}]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            inputs = tokenizer.encode(text, add_special_tokens=False)
        else:
            inputs = tokenizer.encode(prompt)
        tokens.append([int(t) for t in pipe.generate(inputs, config).tokens[0]])
    return tokens


def agreement(baseline: list[list[int]], variant: list[list[int]]) -> GenerationAgreement:
    """Share of identical tokens position by position, and where each prompt's continuation first differs
    (its length when it never does)."""
    base, var = np.asarray(baseline), np.asarray(variant)
    if base.shape != var.shape:
        raise ValueError(f"`variant`: continuations of shape {var.shape}, not the baseline's {base.shape}")
    same = base == var  # [prompts, new_tokens]
    first = np.where(same.all(axis=1), same.shape[1], same.argmin(axis=1))  # argmin: the first False
    return GenerationAgreement(
        prompts=same.shape[0],
        new_tokens=same.shape[1],
        token_agreement=float(same.mean()),
        mean_first_divergence=float(first.mean()),
        first_divergence=first.tolist(),
    )


def generation_against(pipe: Any, against: Path | None, keep: Path | None) -> GenerationAgreement | None:
    """With `keep`, keep the continuations of `pipe`'s model there; `against` a baseline's kept ones, the
    agreement."""
    if against is None and keep is None:
        return None
    tokens = continuations(pipe)
    if keep is not None:
        write_json(keep / CONTINUATIONS, {"prompts": list(PROMPTS), "tokens": tokens})
    if against is None:
        return None
    return agreement(json.loads((against / CONTINUATIONS).read_text())["tokens"], tokens)
