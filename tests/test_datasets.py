"""Datasets: local text, deterministic sampling, no calibration/evaluation overlap, content-hash cache."""

import json

import numpy as np
import pytest

from quantforge.core.errors import QuantforgeError
from quantforge.tasks.datasets import calibration_samples, evaluation_windows, read_paragraphs, remove_overlap
from tests.conftest import CALIBRATION_TEXT, EVALUATION_TEXT, LICENSES


def test_txt_jsonl_and_folders_are_read(tmp_path):
    (tmp_path / "a.txt").write_text("First paragraph.\n\nSecond paragraph.\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "From JSON lines."}) + "\n")
    assert read_paragraphs(str(tmp_path), "calibration") == [
        "First paragraph.",
        "Second paragraph.",
        "From JSON lines.",
    ]


def test_unknown_spec_names_the_field():
    with pytest.raises(QuantforgeError, match=r"`evaluation`: '/no/such' is neither a known dataset"):
        read_paragraphs("/no/such", "evaluation")


def test_overlap_is_removed_from_calibration():
    shared = "This paragraph is long enough to count as real text and appears in both sets."
    kept, removed = remove_overlap(
        ["Only here, and long enough to be counted as a paragraph.", shared], [shared.upper()]
    )
    assert removed == 1 and shared not in kept


def test_sampling_is_deterministic(bundled_model):
    first = calibration_samples(str(CALIBRATION_TEXT), str(EVALUATION_TEXT), bundled_model, 8, 64, seed=3)
    again = calibration_samples(str(CALIBRATION_TEXT), str(EVALUATION_TEXT), bundled_model, 8, 64, seed=3)
    other = calibration_samples(str(CALIBRATION_TEXT), str(EVALUATION_TEXT), bundled_model, 8, 64, seed=4)
    assert first.windows.shape == (8, 64)
    assert np.array_equal(first.windows, again.windows)
    assert not np.array_equal(first.windows, other.windows)


def test_calibration_never_sees_evaluation_text(bundled_model, tmp_path):
    # A calibration folder that contains the evaluation text itself, plus another license.
    folder = tmp_path / "calibration"
    folder.mkdir()
    (folder / "a.txt").write_text(EVALUATION_TEXT.read_text())
    (folder / "b.txt").write_text((LICENSES / "Apache-2.0").read_text())
    calibration = calibration_samples(str(folder), str(EVALUATION_TEXT), bundled_model, 64, 64, seed=0)
    # every GPL-3 paragraph, plus any Apache paragraph GPL-3 also has ("END OF TERMS AND CONDITIONS")
    assert calibration.overlap_removed >= len(read_paragraphs(str(EVALUATION_TEXT), "evaluation"))
    stream = evaluation_windows(str(EVALUATION_TEXT), bundled_model, 64, 10_000).windows.ravel()
    eval_runs = {tuple(stream[i : i + 24]) for i in range(len(stream) - 24)}
    calib_runs = {tuple(w[i : i + 24]) for w in calibration.windows for i in range(64 - 24)}
    assert not eval_runs & calib_runs


def test_same_file_for_both_leaves_nothing_to_calibrate(bundled_model):
    with pytest.raises(QuantforgeError, match="after removing text shared with the evaluation set"):
        calibration_samples(str(EVALUATION_TEXT), str(EVALUATION_TEXT), bundled_model, 8, 64, seed=0)


def test_too_short_evaluation_text_is_refused(bundled_model, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Too short to fill a window.")
    with pytest.raises(QuantforgeError, match=r"has \d+ tokens, fewer than one window of 512"):
        evaluation_windows(str(short), bundled_model, 512, 8)


def test_token_ids_are_cached_by_content_hash(bundled_model, quantforge_home, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(EVALUATION_TEXT.read_text() + f"\n\nA paragraph no other test has: {tmp_path}.")
    before = set((quantforge_home / "datasets").glob("*.npy"))
    first = evaluation_windows(str(text), bundled_model, 128, 4)
    (cached,) = set((quantforge_home / "datasets").glob("*.npy")) - before
    cached.write_bytes(cached.read_bytes()[:100])  # a truncated cache file must be rebuilt, not trusted
    again = evaluation_windows(str(text), bundled_model, 128, 4)
    assert np.array_equal(first.windows, again.windows)
    text.write_text(text.read_text() + "\n\nOne more paragraph changes the hash.")
    assert evaluation_windows(str(text), bundled_model, 128, 4).content_hash != first.content_hash


def test_windows_cut_or_sampled_differently_have_different_hashes(bundled_model):
    """The hash names the exact token windows: a record measured on 4 windows never stands for 3."""
    four = evaluation_windows(str(EVALUATION_TEXT), bundled_model, 128, 4)
    assert evaluation_windows(str(EVALUATION_TEXT), bundled_model, 128, 4).content_hash == four.content_hash
    assert evaluation_windows(str(EVALUATION_TEXT), bundled_model, 128, 3).content_hash != four.content_hash
    assert evaluation_windows(str(EVALUATION_TEXT), bundled_model, 256, 2).content_hash != four.content_hash
    text = (str(CALIBRATION_TEXT), str(EVALUATION_TEXT), bundled_model)
    samples = calibration_samples(*text, num_samples=8, seq_len=64, seed=0)
    assert calibration_samples(*text, num_samples=8, seq_len=64, seed=0).content_hash == samples.content_hash
    for other in ({"num_samples": 9, "seed": 0}, {"num_samples": 8, "seed": 1}):
        assert calibration_samples(*text, seq_len=64, **other).content_hash != samples.content_hash
