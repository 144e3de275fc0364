"""`quantforge demo` as a newcomer runs it (`make demo`): a fresh process and data directory, nothing of the
test session's Hub settings inherited, the whole chain down to the pull from the local Hub."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quantforge.core.manifest import is_intact
from tests.conftest import CALIBRATION_TEXT, EVALUATION_TEXT

pytestmark = [pytest.mark.e2e, pytest.mark.model]


def test_demo_publishes_to_the_local_hub_and_pulls_back_verified(tmp_path):
    recipes = tmp_path / "int8.yaml"
    recipes.write_text(
        yaml.safe_dump(
            {
                "description": "one data-free variant",
                # Three windows cannot tell INT8's ~+0.7 % from the default +2 % limit (its interval
                # reaches ~+2.3 %: INCONCLUSIVE, nothing published); a wider gate keeps this test on
                # the chain, which it tests, not on the statistics (tests/test_statistics.py).
                "recipes": [{"name": "int8-asym", "bits": 8, "gate": {"max_ppl_increase_pct": 10}}],
            }
        )
    )
    evaluation = tmp_path / "eval.txt"  # three windows of GPL-3: the chain, not the statistics, is tested
    evaluation.write_text(EVALUATION_TEXT.read_text()[:9000])
    home = tmp_path / "home"
    # As on a newcomer's machine: no Hub endpoint, token or Xet switch set by the caller (the session
    # sets HF_HUB_DISABLE_XET; without it the client pushes through Xet and the local Hub answers 404).
    hub_settings = ("HF_HUB_DISABLE_XET", "HF_ENDPOINT", "HF_TOKEN", "MLFLOW_TRACKING_URI", "PREFECT_API_URL")
    env = {key: value for key, value in os.environ.items() if key not in hub_settings}
    env.update(QUANTFORGE_HOME=str(home), HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("quantforge")),
            "demo",
            "--recipes",
            str(recipes),
            "--calibration",
            str(CALIBRATION_TEXT),
            "--evaluation",
            str(evaluation),
            "--output-dir",
            str(tmp_path / "output"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout
    published = re.search(r"published: (quantforge-demo/\S+) @ ([0-9a-f]{12}) \(local Hub\)", output)
    assert published, output
    pulled = re.search(r"pulled (\S+)@champion from the Hub, every file verified: (\S+)", output)
    assert pulled and pulled.group(1) == "smollm2-135m-instruct--int8-asym", output
    assert is_intact(Path(pulled.group(2)))
    assert (Path(pulled.group(2)) / "openvino_model.bin").stat().st_size > 50 * 2**20
    assert (home / "demo-hub").is_dir()
