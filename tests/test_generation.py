"""Generation agreement: the arithmetic on made-up continuations, and a model against its own."""

import json

import pytest

from quantforge.tasks.generation import CONTINUATIONS, NEW_TOKENS, PROMPTS, agreement, generation_against


def test_identical_continuations_agree_everywhere_and_never_diverge():
    tokens = [[1, 2, 3, 4], [5, 6, 7, 8]]
    result = agreement(tokens, [list(t) for t in tokens])
    assert (result.prompts, result.new_tokens) == (2, 4)
    assert (result.token_agreement, result.mean_first_divergence, result.first_divergence) == (
        1.0,
        4.0,
        [4, 4],
    )


def test_first_divergence_is_the_position_of_the_first_differing_token():
    baseline = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]]
    variant = [[1, 2, 0, 4], [0, 6, 7, 8], [9, 9, 9, 9]]  # diverge at 2, at 0, never
    result = agreement(baseline, variant)
    assert result.first_divergence == [2, 0, 4]
    assert result.mean_first_divergence == 2.0
    assert result.token_agreement == 10 / 12  # position by position, after the divergence too


def test_all_different_continuations_agree_nowhere():
    result = agreement([[1, 2], [3, 4]], [[5, 6], [7, 8]])
    assert (result.token_agreement, result.mean_first_divergence, result.first_divergence) == (
        0.0,
        0.0,
        [0, 0],
    )


def test_continuations_of_other_lengths_are_refused():
    with pytest.raises(ValueError, match="`variant`: continuations of shape \\(1, 3\\)"):
        agreement([[1, 2]], [[1, 2, 3]])


@pytest.mark.model
def test_a_model_against_its_own_continuations_agrees_everywhere(bundled_model, tmp_path):
    """A tiny random Llama's IR keeps its greedy continuations (every prompt, exactly `NEW_TOKENS`) and
    agrees with them entirely."""
    from quantforge.tasks.backends.openvino import export_ir
    from quantforge.tasks.fetch import fetch_source
    from quantforge_testing.tiny_models import tiny_model

    source = fetch_source(str(tiny_model("llama", tmp_path / "tiny-llama", bundled_model, seed=18)))
    import openvino_genai

    pipe = openvino_genai.LLMPipeline(str(export_ir(source, "fp16").path), "CPU")
    assert generation_against(pipe, against=None, keep=tmp_path) is None
    kept = json.loads((tmp_path / CONTINUATIONS).read_text())
    assert kept["prompts"] == list(PROMPTS) and [len(t) for t in kept["tokens"]] == [NEW_TOKENS] * len(
        PROMPTS
    )
    same = generation_against(pipe, against=tmp_path, keep=None)
    assert (same.prompts, same.new_tokens, same.token_agreement) == (len(PROMPTS), NEW_TOKENS, 1.0)
    assert same.first_divergence == [NEW_TOKENS] * len(PROMPTS) and same.mean_first_divergence == NEW_TOKENS


def test_the_table_and_the_card_show_the_agreement_and_a_dash_where_not_measured():
    """An int4 variant's row and card with its continuations' agreement (3 of 4 prompts never diverge, one
    at 2: 15 of 16 tokens), and without (a PyTorch runtime's)."""
    from quantforge.tasks.model_card import model_card
    from quantforge.tasks.report import quality_cells
    from tests.test_model_card import card_for, manifest

    result, _ = card_for(None, "wikitext2", {})
    generation = agreement([[1, 2, 3, 4]] * 4, [[1, 2, 0, 4], *[[1, 2, 3, 4]] * 3])
    measured = result.model_copy(
        update={"metrics": result.metrics.model_copy(update={"generation": generation})}
    )
    assert quality_cells(measured)["greedy"] == "93.8 %, 1st diff 3.5/4"
    assert quality_cells(result)["greedy"] == "-"
    baseline, context = _card_inputs()
    card = model_card(measured, manifest(None), baseline, context)
    assert (
        "Generation agreement: greedy continuations of 4 fixed prompts (4 new tokens each, through the chat "
        "template where the model has one): 93.8 % of the tokens are the original's at the same position; "
        "the first that is not comes at position 3.5 on average (4: none differs)." in card
    )
    assert "Generation agreement" not in model_card(result, manifest(None), baseline, context)


def _card_inputs():
    from quantforge.tasks.backends.base import Baseline
    from quantforge.tasks.model_card import CardContext, dataset_ref
    from tests.test_model_card import EVALUATION_HASH
    from tests.test_report import variant

    baseline = Baseline(
        runtime="openvino", label="original (OpenVINO IR)", metrics=variant("b", 1, 20, 3).metrics
    )
    context = CardContext(
        repo_id="acme/model-int4-awq-ov",
        endpoint="https://hub.example",
        evaluation=dataset_ref("wikitext2", EVALUATION_HASH, "evaluation"),
        source_license={},
    )
    return baseline, context
