"""Failures mid-run: a full disk during export or pull, and a model whose perplexity is not finite."""

import contextlib
import threading
import time

import pytest

from quantforge.core.atomic import atomic_dir
from quantforge.core.errors import QuantforgeError
from quantforge.core.manifest import is_intact
from quantforge.flows.quantize import quantize_flow
from quantforge.registry.pull import pull
from quantforge.registry.variants import record_publication
from quantforge.tasks.backends.openvino import export_ir
from quantforge.tasks.fetch import fetch_source
from quantforge.tasks.publish import publish_variant
from quantforge.tasks.request import QuantizeRequest
from quantforge_testing.hub import HubServer
from quantforge_testing.tiny_models import tiny_model
from tests.conftest import EVALUATION_TEXT, tmpfs
from tests.test_registry import make_variant, record

pytestmark = pytest.mark.model


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs (the fp16 IR of the bundled model needs 265 MiB)."""
    with tmpfs(tmp_path / "small-disk", "64M") as mount_point:
        yield mount_point


def test_export_that_cannot_fit_is_refused_before_it_starts(bundled_model, small_disk, monkeypatch):
    source = fetch_source(str(bundled_model))
    monkeypatch.setenv("QUANTFORGE_HOME", str(small_disk))
    with pytest.raises(QuantforgeError, match=r"not enough disk space .* needs ~\d+ MiB, \d+ MiB free"):
        export_ir(source, "fp16")
    written = [p for p in small_disk.rglob("*") if p.is_file()]
    assert [p for p in written if p.parent.name != "locks"] == []  # only the (empty) export lock file
    assert all(p.stat().st_size == 0 for p in written)


def test_disk_that_fills_mid_write_is_clear_and_leaves_nothing(small_disk):
    target = small_disk / "variant"
    with pytest.raises(QuantforgeError, match=f"disk full while writing {target}"):
        with atomic_dir(target) as tmp:
            with (tmp / "openvino_model.bin").open("wb") as handle:
                while True:  # the disk fills before the write completes
                    handle.write(b"\0" * 2**20)
    assert list(small_disk.iterdir()) == []


@pytest.fixture
def registered_variant(tmp_path, monkeypatch):
    """A 24 MiB variant registered in this test's MLflow database (fits the 64 MiB disk alone)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    folder = tmp_path / "variant"
    manifest = make_variant(folder, "a" * 40, weights_bytes=24 * 2**20)
    return folder, manifest, record(folder, manifest, 21.0)


def test_pull_that_cannot_fit_is_refused_before_it_downloads(registered_variant, small_disk, tmp_path):
    folder, manifest, recorded = registered_variant
    (small_disk / "other-data").write_bytes(b"\0" * 48 * 2**20)  # 16 MiB left for a 24 MiB variant
    dest = small_disk / "model"
    with pytest.raises(QuantforgeError, match=r"not enough disk space .* needs ~\d+ MiB, \d+ MiB free"):
        pull(f"{recorded.model_name}@candidate", dest)
    assert [p.name for p in small_disk.iterdir()] == ["other-data"]


def test_disk_that_fills_during_a_pull_is_clear_and_installs_nothing(
    registered_variant, small_disk, tmp_path, monkeypatch
):
    """The pull fits when it starts; another writer fills the disk mid-way through the weights."""
    folder, manifest, recorded = registered_variant
    token = "hf_diskFullToken"
    with HubServer(tmp_path / "hub", tokens={token: "quantforge-bot"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", token)
        published = publish_variant(folder, manifest, "# card", "serving/variant", private=False)
        record_publication(
            recorded.model_name, recorded.model_version, published.repo, published.commit, published.tag
        )
        hub.inject_fault(method="GET", path_pattern=r"/resolve/.*\.bin$", throttle_bps=4 * 2**20)
        mid_file = threading.Event()
        writer = fill_once_the_weights_are_downloading
        other_writer = threading.Thread(target=writer, args=(small_disk, mid_file))
        other_writer.start()
        dest = small_disk / "model"
        with pytest.raises(QuantforgeError, match=f"disk full while writing {dest} \\(nothing was kept\\)"):
            pull(f"{recorded.model_name}@candidate", dest, source="hub")
        other_writer.join()
        assert mid_file.is_set()  # the disk filled while the weights were being written
        assert [p.name for p in small_disk.iterdir()] == ["other-data"]  # no staging dir, no blob

        (small_disk / "other-data").unlink()  # space freed: the same pull installs, verified
        hub.clear_faults()
        assert pull(f"{recorded.model_name}@candidate", dest, source="hub") == dest
    assert is_intact(dest)


def fill_once_the_weights_are_downloading(disk, mid_file: threading.Event) -> None:
    """Wait until the pull has written its first MiB of weights, then write until the disk is full."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not mid_file.is_set():
        # A finished file is renamed, a staging folder renamed or removed, under our feet: look again.
        with contextlib.suppress(FileNotFoundError):
            if any(part.stat().st_size > 2**20 for part in disk.glob(".model.*.partial/**/*.incomplete")):
                mid_file.set()
        time.sleep(0.01)
    with (disk / "other-data").open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 2**20)
                handle.flush()
        except OSError:
            pass


def test_non_finite_baseline_perplexity_fails_the_run(bundled_model, prefect_harness, tmp_path):
    from safetensors.torch import load_file, save_file

    model_dir = tiny_model("llama", tmp_path / "broken", bundled_model)
    weights = model_dir / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.norm.weight"].fill_(float("nan"))
    save_file(tensors, weights, metadata={"format": "pt"})
    output = tmp_path / "out"
    request = QuantizeRequest(
        model=str(model_dir),
        recipes="quick",
        evaluation=str(EVALUATION_TEXT),
        window=128,
        max_eval_windows=2,
        new_tokens=4,
        output_dir=output,
    )
    with pytest.raises(QuantforgeError, match=r"baseline perplexity of local:broken is nan"):
        quantize_flow(request)
    assert list(output.iterdir()) == []


def test_a_truncated_cached_ir_is_detected_and_rebuilt(bundled_model, tmp_path):
    """On a tiny random Llama: the cache's checks, not the model, are under test (seconds per export)."""
    source = fetch_source(str(tiny_model("llama", tmp_path / "tiny-llama-ir", bundled_model)))
    first = export_ir(source, "fp16")
    weights = first.path / "openvino_model.bin"
    size = weights.stat().st_size
    assert size > 2**20  # ~12 MiB of fp16 weights (mostly the embeddings): a real file to cut in half
    with weights.open("r+b") as handle:  # what a crash of another writer or a full disk could leave
        handle.truncate(size // 2)
    assert not is_intact(first.path)
    again = export_ir(source, "fp16")
    assert again.usage is not None and again.path == first.path
    assert weights.stat().st_size == size and is_intact(again.path)
    assert export_ir(source, "fp16").usage is None
