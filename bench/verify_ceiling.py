"""How fast can a pull verify, on this host, against a plain copy? The ceiling behind measure 6.

One file of `--mib` random bytes, in the page cache, installed four ways (median of `--repeats`):
- copy: `shutil.copyfile` (the kernel copies; no byte is checked);
- copy, then sha256: what `quantforge pull` does after MLflow's download (`core.manifest.verify`);
- blocks in 2 threads: each thread reads a block, hashes it with sha256 and writes it, blocks split
  between the host's cores (what a manifest of per-block hashes would allow; the bytes written are the
  bytes hashed);
- the same in 1 thread.

    .venv/bin/python -m bench.verify_ceiling [--mib 136] [--block-mib 1] [--repeats 7]

Prints one JSON line: seconds and the ratio to the copy for each way, and sha256's speed alone.
"""

import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    mib: Annotated[int, typer.Option(help="File size (136: the bundled model's int8-asym weights).")] = 136,
    block_mib: Annotated[int, typer.Option(help="Block size of the block-hashing ways.")] = 1,
    repeats: Annotated[int, typer.Option(help="Runs of each way; the median is reported.")] = 7,
) -> None:
    block = block_mib * 2**20
    with tempfile.TemporaryDirectory() as work:
        source, target = Path(work, "source.bin"), Path(work, "target.bin")
        source.write_bytes(os.urandom(mib * 2**20))

        def copy() -> None:
            shutil.copyfile(source, target)

        def copy_then_sha256() -> None:
            shutil.copyfile(source, target)
            digest = hashlib.sha256()
            with target.open("rb") as handle:
                while chunk := handle.read(4 * 2**20):
                    digest.update(chunk)

        def blocks(threads: int) -> Callable[[], None]:
            def run() -> None:
                size = source.stat().st_size
                with source.open("rb") as reader, target.open("wb") as writer:
                    writer.truncate(size)

                    def one(offset: int) -> str:
                        data = os.pread(reader.fileno(), block, offset)
                        digest = hashlib.sha256(data).hexdigest()
                        os.pwrite(writer.fileno(), data, offset)
                        return digest

                    with ThreadPoolExecutor(threads) as pool:
                        list(pool.map(one, range(0, size, block)))

            return run

        def median_seconds(way: Callable[[], None]) -> float:
            runs = []
            for _ in range(repeats):
                target.unlink(missing_ok=True)
                started = time.perf_counter()
                way()
                runs.append(time.perf_counter() - started)
            return statistics.median(runs)

        payload = source.read_bytes()
        started = time.perf_counter()
        hashlib.sha256(payload).hexdigest()
        sha256_mib_per_s = mib / (time.perf_counter() - started)
        ways = {
            "copy": copy,
            "copy_then_sha256": copy_then_sha256,
            "blocks_2_threads": blocks(2),
            "blocks_1_thread": blocks(1),
        }
        seconds = {name: median_seconds(way) for name, way in ways.items()}
    print(
        json.dumps(
            {
                "mib": mib,
                "block_mib": block_mib,
                "cpus": len(os.sched_getaffinity(0)),
                "sha256_mib_per_s": round(sha256_mib_per_s),
                "seconds": {k: round(v, 4) for k, v in seconds.items()},
                "ratio_to_copy": {k: round(seconds["copy"] / v, 2) for k, v in seconds.items()},
            }
        )
    )


if __name__ == "__main__":
    app()
