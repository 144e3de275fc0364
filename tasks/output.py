"""output: the run's folder for the user: every variant (hard links into the cache) and the report."""

import tempfile
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from quantforge.core.atomic import atomic_dir, link_files
from quantforge.core.errors import QuantforgeError
from quantforge.core.names import short_name
from quantforge.tasks.report import RunReport, write_report


def check_writable(output_dir: Path) -> None:
    """Fail before any work when the output directory cannot be written."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise QuantforgeError(
            f"`output_dir`: {str(output_dir)!r} is not writable ({error.strerror})"
        ) from None


def write_output(report: RunReport, output_dir: Path) -> Path:
    """Build `<output_dir>/<model>-<sha7>/` in a temporary folder, then rename it into place."""
    final = output_dir / f"{short_name(report.source_repo)}-{report.source_sha[:7]}"
    with atomic_dir(final, replace_existing=True) as staging:
        for variant in report.variants:
            if variant.path is not None:
                link_files(variant.path, staging / "variants" / variant.recipe)
        write_report(report, staging, previous=final)
    return final


write_output_task = task(write_output, name="output", cache_policy=NO_CACHE)
