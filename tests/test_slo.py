"""The SLO gate (tasks/slo.py, registry/slo.py): seed 002's arithmetic, SLO files refused in one line, a
tiny Llama measured under the SLO's concurrency through the quantize flow, and `quantforge plan`
answering from the figures the registry keeps."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from quantforge.core.errors import QuantforgeError
from quantforge.tasks.host import describe
from quantforge.tasks.slo import Slo, SloMeasurement, derive, judge_slo, load_slo

QUANTFORGE = str(Path(sys.executable).with_name("quantforge"))  # the console script users run
# Seed 002: 300 sessions/h, 5 requests of 100 tokens, 10 s overhead, 30 s think time, 3 min sessions.
SEED_002 = {
    "sessions_per_hour": 300,
    "requests_per_session": 5,
    "tokens_in": 100,
    "tokens_out": 100,
    "overhead_s": 10,
    "think_time_s": 30,
    "session_target_s": 180,
}


def test_seed_002s_numbers_give_the_articles_budgets_and_littles_law_concurrency():
    derived = derive(Slo(**SEED_002))
    assert derived.inference_s_per_session == 20  # 180 - 10 - 5 x 30
    assert derived.request_budget_s == 4  # 20 s / 5 requests
    assert derived.token_budget_ms == 40  # 4 s / 100 tokens
    assert derived.concurrent_sessions == pytest.approx(15)  # 300 / 3600 x 180
    assert derived.concurrent_requests == pytest.approx(5 / 3)  # 300 / 3600 x 5 x 4 s
    assert derived.required_concurrency == 2


def test_the_shipped_example_is_seed_002():
    assert load_slo(Path(__file__).parents[1] / "infra" / "slo.example.yaml") == Slo(**SEED_002)


def test_the_verdict_adds_ttft_to_the_tokens_after_it_and_counts_instances():
    slo = Slo(**SEED_002, max_concurrency=1)
    measured = {"requests": 3, "ttft_ms_p50": 90, "tpot_ms_p50": 30, "threads": 2, "instance_pss_mb": 500}
    fits = judge_slo(slo, SloMeasurement(concurrency=1, ttft_ms_p95=100, tpot_ms_p95=39, **measured))
    assert (fits.request_ms_p95, fits.meets, fits.instances) == (
        100 + 99 * 39,
        True,
        2,
    )  # 2 in flight, 1 each
    late = judge_slo(slo, SloMeasurement(concurrency=1, ttft_ms_p95=100, tpot_ms_p95=40, **measured))
    assert (late.request_ms_p95, late.meets, late.instances) == (4060, False, None)
    assert late.reason.startswith("SLO not met: request p95 4060 ms (TTFT 100 ms + 99 x 40.0 ms)")


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            {"tokens_out": 0},
            "`slo` in slo.yaml: field `tokens_out`: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            {"sessions_per_hour": "many"},
            "`slo` in slo.yaml: field `sessions_per_hour`: Input should be a valid number, unable to parse "
            "string as a number (got 'many')",
        ),
        (
            {"session_target_s": 160},
            "`slo` in slo.yaml: `session_target_s` 160 leaves no time to infer: overhead_s 10 + 5 x "
            "think_time_s 30 = 160 s",
        ),
        ({"tokens": 3}, "`slo` in slo.yaml: field `tokens`: Extra inputs are not permitted (got 3)"),
    ],
)
def test_a_bad_slo_field_is_one_line_naming_it_and_its_value(tmp_path, change, line):
    path = tmp_path / "slo.yaml"
    path.write_text(json.dumps(SEED_002 | change))  # JSON is YAML
    with pytest.raises(QuantforgeError) as error:
        load_slo(path)
    assert str(error.value) == line


def test_run_with_a_bad_slo_file_is_one_line_exit_2_before_any_work(tmp_path):
    path = tmp_path / "slo.yaml"
    path.write_text(json.dumps(SEED_002 | {"tokens_out": 0}))
    output = tmp_path / "out"
    command = [QUANTFORGE, "run", "org/model", "--recipes", "quick", "--only", "int8-asym"]
    command += ["--slo", str(path), "--output-dir", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr.strip().splitlines()) == (
        2,
        ["error: `slo` in slo.yaml: field `tokens_out`: Input should be greater than or equal to 1 (got 0)"],
    )
    assert not output.exists()


def test_a_hostile_slo_file_is_refused_as_every_yaml_input(tmp_path):
    path = tmp_path / "slo.yaml"
    path.write_text("a: &a [x, x]\nb: *a\n")
    with pytest.raises(QuantforgeError, match=r"^`slo`: slo.yaml is not valid YAML: aliases \(\*a\) are not"):
        load_slo(path)


# The tiny Llama answers 8 tokens in milliseconds: seed 002's 4 s budget per request is met, and a
# session target 5 ms above overhead + think time (1 ms a request) is not.
LAX = SEED_002 | {"tokens_in": 16, "tokens_out": 8}
IMPOSSIBLE = LAX | {"session_target_s": 160.005}
# Random weights move perplexity a lot between formats: the quality gate is opened so the SLO decides.
OPEN_GATES = {"max_ppl_increase_pct": 1000.0, "max_kld": 100.0, "min_top1_agreement": 0.001}


@pytest.fixture(scope="module")
def runs(bundled_model, prefect_harness, tmp_path_factory):
    """A tiny Llama quantized once under the recipe set's lax `slo:`, then again (its record reused) with
    `slo` naming an impossible SLO's file, as `--slo FILE` does."""
    from quantforge.flows.quantize import quantize_flow
    from quantforge.tasks.gate import GateLimits
    from quantforge.tasks.request import QuantizeRequest
    from quantforge_testing.tiny_models import tiny_model
    from tests.conftest import EVALUATION_TEXT

    folder = tmp_path_factory.mktemp("slo")
    recipe_set = folder / "with-slo.yaml"
    recipe_set.write_text(json.dumps({"recipes": [{"name": "int8-sym", "sym": True}], "slo": LAX}))
    impossible = folder / "impossible.yaml"
    impossible.write_text(json.dumps(IMPOSSIBLE))
    common = {
        "model": str(tiny_model("llama", folder / "llama", bundled_model)),
        "recipes": str(recipe_set),
        "evaluation": str(EVALUATION_TEXT),
        "window": 128,
        "max_eval_windows": 2,
        "new_tokens": 4,
        "gates": GateLimits(**OPEN_GATES),
    }
    lax = quantize_flow(QuantizeRequest(**common, output_dir=folder / "lax"))
    strict = quantize_flow(QuantizeRequest(**common, slo=impossible, output_dir=folder / "strict"))
    return lax, strict, folder


def test_a_lax_slo_is_met_under_its_concurrency_and_reported(runs):
    lax, _, folder = runs
    (variant,) = lax.variants
    assert variant.verdict.passed and variant.model_version is not None and lax.best == "int8-sym"
    result = variant.slo
    assert result.meets and result.instances == 1 and result.derivation.required_concurrency == 2
    measured = result.measurement
    assert measured.concurrency == 2 and measured.requests == 6  # 3 rounds of 2 at once
    assert 0 < measured.ttft_ms_p50 <= measured.ttft_ms_p95 < 4000 and 0 < measured.tpot_ms_p95 < 500
    assert 50 < measured.instance_pss_mb < 2048  # OpenVINO, the model, its KV cache: not the flow's
    (report,) = (folder / "lax").rglob("report.md")
    lines = report.read_text().splitlines()
    assert (
        "- inference per session: 180 − 10 − 5 × 30 = 20 s; per request 4 s; per output token 500 ms" in lines
    )
    assert (
        "- in flight (Little's law): 300 / 3600 × 180 = 15 sessions; 300 / 3600 × 5 × 4 s = 1.67 requests, "
        "so 2 at once" in lines
    )
    assert any(line.startswith("- **int8-sym**: SLO met: request p95 ") for line in lines)
    assert any(line.startswith("  - **int8-sym**: ") and "per node" in line for line in lines)
    (document,) = (folder / "lax").rglob("report.json")
    assert json.loads(document.read_text())["slo"]["variants"]["int8-sym"]["meets"] is True


def test_an_impossible_slo_is_not_met_and_the_version_is_marked_not_best(runs):
    from quantforge.registry.tracking import mlflow_client

    lax, strict, _ = runs
    (variant,) = strict.variants
    assert variant.reused and variant.verdict.passed  # its quality is what it was
    assert not variant.slo.meets and variant.slo.instances is None
    assert strict.best is None  # so `quantforge run` exits 1: no variant serves the application
    client = mlflow_client()
    version = client.get_model_version(variant.model_name, str(variant.model_version))
    assert version.tags["quantforge.slo_meets"] == "false"
    metrics = client.get_run(version.run_id).data.metrics  # the latest of each: this run's
    assert metrics["slo_request_ms_p95"] == pytest.approx(variant.slo.request_ms_p95)
    assert metrics["slo_meets"] == 0 and metrics["slo_token_budget_ms"] == pytest.approx(0.125)  # 1 ms / 8
    assert metrics["instance_pss_mb"] == pytest.approx(variant.slo.measurement.instance_pss_mb)
    assert metrics["instances_per_node"] == strict.slo.capacity["int8-sym"].instances
    assert variant.model_version == lax.variants[0].model_version


def test_plan_answers_from_the_recorded_figures_through_the_console_script(runs):
    _, strict, _ = runs
    (variant,) = strict.variants
    spec = f"{variant.model_name}/{variant.model_version}"
    plan = [QUANTFORGE, "plan", spec, "--host-memory", "64G", "--host-cores", "32"]
    done = subprocess.run(plan, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    measured = variant.slo.measurement
    assert lines[0].startswith(f"{variant.model_name} version {variant.model_version}: SLO not met")
    assert lines[1] == (
        f"one instance: {measured.instance_pss_mb:.0f} MiB PSS answering, {measured.threads} threads "
        f"(measured on {describe(measured.host)})"
    )
    assert measured.host.cores == measured.threads and measured.host.openvino
    assert lines[2] == "node: 64.0GB and 32 cores, reserve 4.0GB and 4 threads"
    by_threads = 28 // measured.threads
    assert lines[3].startswith(f"instances per node: {by_threads} (by memory ")  # threads bind first
    done = subprocess.run([*plan, "--reserve-threads", "0", "--json"], capture_output=True, text=True)
    document = json.loads(done.stdout)
    assert document["capacity"]["by_threads"] == 32 // measured.threads
    assert document["capacity"]["by_memory"] == int(60e9 / 2**20 // measured.instance_pss_mb)
    assert document["slo"]["meets"] is False and document["version"] == variant.model_version


def test_plan_of_an_unknown_alias_or_a_version_without_figures_is_one_line_exit_2(runs):
    from quantforge.registry.tracking import mlflow_client

    _, strict, _ = runs
    name, version = strict.variants[0].model_name, str(strict.variants[0].model_version)

    def plan(spec: str) -> tuple[int, list[str]]:
        command = [QUANTFORGE, "plan", spec, "--host-memory", "64G", "--host-cores", "32"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stderr.strip().splitlines()

    assert plan(f"{name}@nobody") == (
        2,
        [f"error: `model`: no model version '{name}@nobody' in the registry"],
    )
    client = mlflow_client()
    recorded = client.get_model_version(name, version).tags["quantforge.slo"]
    client.delete_model_version_tag(name, version, "quantforge.slo")  # as a version made without an SLO
    try:
        assert plan(f"{name}/{version}") == (
            2,
            [
                f"error: `model`: '{name}/{version}' (version {version}) has no SLO or capacity figures "
                "recorded (quantize it with --slo FILE or a recipe set's `slo:`)"
            ],
        )
    finally:
        client.set_model_version_tag(name, version, "quantforge.slo", recorded)


def test_the_model_card_has_the_slo_section_of_its_variant():
    from quantforge.tasks.backends.base import Baseline
    from quantforge.tasks.model_card import CardContext, dataset_ref, model_card
    from tests.test_model_card import BASELINE_NLL, EVALUATION_HASH, judged, manifest, variant

    measured = SloMeasurement(
        concurrency=2, requests=6, ttft_ms_p50=400, ttft_ms_p95=450, tpot_ms_p50=23, tpot_ms_p95=24,
        threads=2, instance_pss_mb=458,
    )  # fmt: skip
    result = judged([n + 511 * 0.02 for n in BASELINE_NLL], BASELINE_NLL, True)
    result = result.model_copy(update={"slo": judge_slo(Slo(**SEED_002), measured)})
    baseline = Baseline(runtime="openvino", label="original", metrics=variant("b", 1, 20, 3).metrics)
    context = CardContext(
        repo_id="acme/m",
        endpoint="https://hub.example",
        evaluation=dataset_ref("wikitext2", EVALUATION_HASH, "evaluation"),
    )
    lines = model_card(result, manifest(None), baseline, context).splitlines()
    at = lines.index("## Service-level objective and capacity")
    assert lines[at + 2] == (
        "Against 300 sessions/h of 5 requests (100 tokens in, 100 out) within 180 s a session: SLO met: "
        "request p95 2826 ms (TTFT 450 ms + 99 x 24.0 ms) against 4000 ms, 2 at once; 2 in flight: "
        "1 instance(s)."
    )
    assert lines[at + 3].startswith("One serving instance held 458 MiB (PSS) answering 2 requests at once")
