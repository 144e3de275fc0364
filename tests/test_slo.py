"""The SLO gate (tasks/slo.py, registry/slo.py): seed 002's arithmetic, SLO files refused in one line, a
tiny Llama measured under the SLO's concurrency through the quantize flow, and `quantforge plan`
answering from the figures the registry keeps."""

import json
import sys
from pathlib import Path

import pytest

from quantforge.core.errors import QuantforgeError
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
    assert late.reason.startswith("SLO does not meet: request p95 4060 ms (TTFT 100 ms + 99 x 40.0 ms)")


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


def test_a_hostile_slo_file_is_refused_as_every_yaml_input(tmp_path):
    path = tmp_path / "slo.yaml"
    path.write_text("a: &a [x, x]\nb: *a\n")
    with pytest.raises(QuantforgeError, match=r"^`slo`: slo.yaml is not valid YAML: aliases \(\*a\) are not"):
        load_slo(path)
