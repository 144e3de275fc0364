"""The recipe search: its space, order, pruning and front (pure, known answers), then its front on a tiny
random Llama through the flow, with the registry holding the front's passing variants and nothing else."""

import json
import math

import pytest
from typer.testing import CliRunner

from quantforge.cli import app
from quantforge.core.records import Interval
from quantforge.registry.tracking import mlflow_client
from quantforge.tasks.recipes import Recipe
from quantforge.tasks.request import QuantizeRequest
from quantforge.tasks.search import (
    AXES,
    SearchEntry,
    centre,
    distance,
    exploration_order,
    front_order,
    non_dominated,
    space,
)
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import CALIBRATION_TEXT, EVALUATION_TEXT

POINTS = {"a": (1.0, 5.0), "b": (2.0, 3.0), "c": (2.0, 4.0), "d": (3.0, 3.0), "e": (0.5, math.inf)}


def test_non_dominated_is_the_pareto_front_and_slack_keeps_near_misses():
    assert non_dominated(POINTS) == ["a", "b"]  # c: b as small, lower; d: b smaller, as low; e: no figure
    assert non_dominated(POINTS, slack=0.1) == ["a", "b", "d"]  # c is 25 % above b; d is b's figure
    assert non_dominated(POINTS, slack=0.5) == ["a", "b", "c", "d"]
    assert non_dominated({"x": (1.0, 2.0), "y": (1.0, 2.0)}) == ["x", "y"]  # ties both stay


def test_the_space_holds_only_valid_combinations():
    candidates = list(space())
    ratios_below_one = len(AXES["ratio"]) - 1
    per_shape = ratios_below_one * len(AXES["sensitivity_metric"]) + 1  # ratio 1 has no metric
    assert len(candidates) == 9 * 2 * 3 * 3 * per_shape == 3402
    assert len({c.name for c in candidates}) == len(candidates)
    assert not any(c.ratio == 1.0 and c.sensitivity_metric for c in candidates)
    assert {c.algorithm for c in candidates} == set(AXES["algorithm"])
    assert not any(
        "gptq" in c.algorithm and ("awq" in c.algorithm or "lora" in c.algorithm) for c in candidates
    )


def test_the_order_starts_at_the_centre_and_changes_one_axis_at_a_time():
    recipes = exploration_order(12)
    first = recipes[0]
    assert (first.bits, first.sym, first.group_size, first.ratio, first.backup_precision) == (
        4,
        False,
        64,
        0.8,
        "int8_asym",
    )
    assert first.awq and first.scale_estimation and first.sensitivity_metric == "max_activation_variance"
    by_name = {c.name: c for c in space()}
    assert [distance(by_name[r.name], centre()) for r in recipes] == [0] + [1] * 11
    # the algorithms first (AXES' order), then the sign, then the group sizes
    assert [r.name.rsplit("b-int8-asym-", 1)[1] for r in recipes[:9]] == list(AXES["algorithm"])
    assert recipes[9].sym and [r.group_size for r in recipes[10:12]] == [128, 32]
    assert exploration_order(12) == recipes  # deterministic


def test_sensitivity_metric_is_an_nncf_option_hashed_only_when_set():
    plain = Recipe(name="a", bits=4, group_size=64, ratio=0.8)
    same = Recipe(name="a", bits=4, group_size=64, ratio=0.8, sensitivity_metric=None)
    hessian = Recipe(
        name="a", bits=4, group_size=64, ratio=0.8, sensitivity_metric="hessian_input_activation"
    )
    assert plain.content_hash() == same.content_hash() != hessian.content_hash()
    assert hessian.data_aware and not plain.data_aware
    assert not Recipe(
        name="a", bits=4, group_size=64, ratio=0.8, sensitivity_metric="weight_quantization_error"
    ).data_aware
    with pytest.raises(
        ValueError, match="`sensitivity_metric` 'hessian_input_activation' needs `ratio` below 1"
    ):
        Recipe(name="a", bits=4, group_size=64, sensitivity_metric="hessian_input_activation")
    from quantforge.tasks.backends.openvino import nncf_call

    assert str(nncf_call(hessian)[1]["sensitivity_metric"].value) == "hessian_input_activation"
    assert nncf_call(plain)[1]["sensitivity_metric"] is None


def _entry(name: str, size: float, delta: float | None) -> SearchEntry:
    recipe = Recipe(name=name, bits=4, group_size=64)
    stage = "pruned" if delta is None else "survived"
    interval = None if delta is None else Interval(value=delta)
    return SearchEntry(
        recipe=recipe, size_mb=size, proxy_kld=0.1, proxy_seconds=1.0, stage=stage, ppl_increase_pct=interval
    )


def test_the_front_is_of_the_fully_scored_smallest_first():
    entries = [
        _entry("big", 3.0, 1.0),
        _entry("pruned", 0.5, None),
        _entry("mid", 2.0, 4.0),
        _entry("bad", 2.5, 5.0),
    ]
    assert front_order(entries) == ["mid", "big"]


def test_search_options_need_the_search():
    with pytest.raises(ValueError, match="`search_budget`: only with `recipes` .search."):
        QuantizeRequest(model="org/m", recipes="quick", search_budget=3)


def test_recipes_lists_the_search():
    runner = CliRunner()
    listed = runner.invoke(app, ["recipes"])
    assert listed.exit_code == 0 and "search: The INT4 space searched" in listed.output
    shown = runner.invoke(app, ["recipes", "search", "--json"])
    assert shown.exit_code == 0
    names = [r["name"] for r in json.loads(shown.output)["recipes"]]
    assert names == [r.name for r in exploration_order(len(names))] and len(names) == 12


@pytest.mark.model
def test_the_search_front_on_a_tiny_model(bundled_model, prefect_harness, tmp_path):
    """Four candidates on a tiny random Llama, the proxy on 1 window: every candidate in the log with its
    proxy KLD, the survivors fully scored, a non-dominated front whose passing variants, and only they, are
    registered; the log in the output folder and on the MLflow run."""
    from quantforge.flows.search import search_flow

    model = tiny_model("llama", tmp_path / "tiny-llama", bundled_model, seed=3)
    request = QuantizeRequest(
        model=str(model),
        recipes="search",
        search_budget=4,
        search_windows=1,
        calibration=str(CALIBRATION_TEXT),
        evaluation=str(EVALUATION_TEXT),
        num_samples=8,
        seq_len=64,
        window=128,
        max_eval_windows=2,
        new_tokens=4,
        output_dir=tmp_path / "out",
    )
    report = search_flow(request)
    log = report.search
    expected = [r.name for r in exploration_order(4)]
    assert [e.recipe.name for e in log.entries] == expected and log.stopped_by == "variants"
    # finite; near 0 a tiny model's KLD can come out a hair below it (the baseline's distributions are
    # kept compact: top-k log-probs and samples of the rest)
    assert all(math.isfinite(e.proxy_kld) and e.size_mb > 0 for e in log.entries)
    survived = [e for e in log.entries if e.stage == "survived"]
    assert survived and all(e.ppl_increase_pct is not None and e.verdict for e in survived)
    assert all(e.ppl_increase_pct is None for e in log.entries if e.stage == "pruned")
    points = {e.recipe.name: (e.size_mb, e.ppl_increase_pct.value) for e in survived}
    assert set(log.front) == set(non_dominated(points)) and log.front
    assert {v.recipe for v in report.variants} == set(log.front)

    passing_front = {e.recipe.name for e in log.entries if e.on_front and e.verdict == "PASS"}
    registered = {e.recipe.name for e in log.entries if e.registered}
    assert registered == passing_front
    names_in_registry = {v.name for v in mlflow_client().search_model_versions()}
    for entry in log.entries:
        in_registry = any(name.endswith(entry.recipe.name) for name in names_in_registry)
        assert in_registry == (entry.recipe.name in passing_front), entry.recipe.name

    (folder,) = [p for p in request.output_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert json.loads((folder / "search.json").read_text()) == log.model_dump(mode="json")
    assert "## Search" in (folder / "report.md").read_text()
    artifacts = {a.path for a in mlflow_client().list_artifacts(report.mlflow_run_id)}
    assert {"search.json", "report.json"} <= artifacts
