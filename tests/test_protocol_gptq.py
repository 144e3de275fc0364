"""`--protocol gptq` on the command line: shown in `run --help`, refused in one line with what it sets."""

import pytest
from typer.testing import CliRunner

from quantforge.cli import app
from quantforge.tasks.model_card import dataset_ref

runner = CliRunner()


def test_run_help_shows_the_protocol_option():
    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "--protocol" in result.output and "[quantforge|gptq]" in result.output


def test_run_builds_a_gptq_request(requested):
    assert runner.invoke(app, ["run", "org/model", "--recipes", "quick", "--protocol", "gptq"]).exit_code == 0
    (request,) = requested
    assert (request.protocol, request.evaluation) == ("gptq", "wikitext2")


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (["--evaluation", "c4"], "`protocol` 'gptq' scores wikitext2's test split: not `evaluation` 'c4'"),
        (
            ["--window", "128", "--max-eval-windows", "4"],
            "`protocol` 'gptq' sets the windows (the model's context or 2048 tokens, every one): "
            "not with `window` 128, `max_eval_windows` 4",
        ),
        (["--recipes", "search"], "`protocol` 'gptq': not with `recipes` 'search' (quantforge's only)"),
    ],
    ids=["other-text", "own-windows", "search"],
)
def test_the_papers_protocol_refuses_what_it_decides_itself(options, line):
    result = runner.invoke(app, ["run", "org/model", "--protocol", "gptq", *options], terminal_width=200)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {line}"]


def test_the_card_names_the_papers_protocol():
    papers = dataset_ref("wikitext2", "ab" * 32, "evaluation", "gptq")
    assert papers.description == (
        "Salesforce/wikitext (wikitext-2-raw-v1, test split), gptq protocol (the GPTQ/AWQ papers' windows), "
        f"token ids sha256 {'ab' * 6}"
    )
    assert "protocol" not in dataset_ref("wikitext2", "ab" * 32, "evaluation").description
