"""kill -9 during each stage of a run, then the same request again: nothing lost, nothing doubled.

The run is the real command in a subprocess (`quantforge run`, embedded MLflow); a watcher sees the
stage start on disk, in the log or in MLflow and kills the whole process group. Hub stages, pull and
concurrent requests: tests/test_crashes_hub.py.
"""

import time
from functools import partial

import numpy as np
import pytest

from tests.conftest import EVALUATION_TEXT
from tests.crashing import (
    assert_one_good_version,
    kill_when,
    mlflow_rows,
    partial_in,
    run,
    variant_made,
)

pytestmark = [pytest.mark.e2e, pytest.mark.model]

STAGES = {  # stage -> "has it started?" seen from outside the process
    "export": lambda home: partial_in(home, "ir"),
    "compression": lambda home: partial_in(home, "variants"),
    "evaluation": variant_made,
    "registration": lambda home: (
        mlflow_rows(home, "select count(*) from tags where key = 'quantforge.identity'") > 0
    ),
}


def test_kill_9_at_each_stage_in_turn_then_a_rerun_leaves_exactly_one_good_version(
    medium, prefect_env, tmp_path
):
    """One host's data directory, one run killed per stage in turn: each run must first get past what the
    last one left half done (reaching the next stage is the proof), then the last run completes."""
    home, output, log = tmp_path / "home", tmp_path / "output", tmp_path / "run.log"
    for stage, started in STAGES.items():
        kill_when(run(medium, home, output, log, env=prefect_env), partial(started, home), stage, log)

    rerun = run(medium, home, output, log, env=prefect_env)
    assert rerun.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert_one_good_version(home, output)


def test_kill_9_during_tokenization_then_rerun_tokenizes_again(medium, prefect_env, tmp_path):
    """A 14 MB evaluation text takes seconds to tokenize: the kill lands inside it, before the token
    cache exists; the rerun tokenizes again and caches one complete copy."""
    home, output, log = tmp_path / "home", tmp_path / "output", tmp_path / "run.log"
    big_text = tmp_path / "big-evaluation.txt"
    big_text.write_text("\n\n".join([EVALUATION_TEXT.read_text()] * 400))
    # -v: Prefect's task-run lines on stderr, which the watcher below reads (without it they go to the
    # output folder's quantforge.log)
    first = run(medium, home, output, log, "-v", env=prefect_env, evaluation=big_text)
    fetched_at = []

    def tokenizing() -> bool:  # the source is in; give the evaluation-set task a moment to begin
        if not fetched_at and "Task run 'fetch-" in log.read_text(errors="replace"):
            fetched_at.append(time.monotonic())
        return bool(fetched_at) and time.monotonic() - fetched_at[0] > 2

    kill_when(first, tokenizing, "tokenization", log)
    assert "Task run 'evaluation-set-" not in log.read_text(errors="replace")  # killed inside it
    assert list(home.glob("datasets/*.npy")) == []  # no token cache, whole or partial

    rerun = run(medium, home, output, log, "-v", env=prefect_env, evaluation=big_text)
    assert rerun.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert_one_good_version(home, output)
    cached = list(home.glob("datasets/*.npy"))
    assert len(cached) == 1 and len(np.load(cached[0])) > 1_000_000  # the whole text, once
