"""The batch benchmark: one manifest run here (one process) and on N Ray Data actors, images per second and
seconds per image from each, for docs/PERFORMANCE.md and the sizing example of docs/SCALING.md.

Both runs build their own engines from the same model folders, so both pay their model loading; the Ray
run also pays starting Ray and its actors. `startup_s` (start to the first row's line) and `steady`
(images per second once every worker's first window of rows is in) separate that fixed cost from the
rate a long catalogue runs at.
"""

from __future__ import annotations

import csv
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class BatchFigures:
    """One run of the benchmark's manifest."""

    mode: str  # "local" or "ray (N actors)"
    rows: int
    images: int
    seconds: float
    startup_s: float  # start to the first row's line (model loading; Ray start and actors; a first task)
    steady_images_per_s: float  # after every worker's first window of rows (see _timed)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def s_per_image(self) -> float:
        return self.seconds / self.images if self.images else 0.0


def write_manifest(folder: Path, rows: int, num_images: int, steps: int, size: int) -> Path:
    """`rows` rows on the sample photo with a box mask, seeds 1.., one shape (so they batch)."""
    from PIL import Image

    from restyle.samples import sample_photo

    photo = sample_photo(size * 2 // 3, size)
    photo.save(folder / "photo.png")
    mask = Image.new("L", photo.size, 0)
    w, h = photo.size
    mask.paste(255, (w // 4, h // 3, 3 * w // 4, 3 * h // 4))
    mask.save(folder / "mask.png")
    path = folder / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "photo", "mask", "prompt", "num_images", "seed", "steps", "size"])
        for i in range(rows):
            writer.writerow(
                [f"row{i:04d}", "photo.png", "mask.png", f"look {i}", num_images, i + 1, steps, size]
            )
    return path


def _timed(runner: Any, rows: list[Any], first_rows: int) -> tuple[Any, float, float, float]:
    """(summary, seconds, startup seconds, steady images per second).

    Startup is the time to the first line. The steady rate counts only what was made after the first
    `first_rows` lines arrived (the first window of every worker: lines come a whole task at a time, so
    those rows were made while the workers were starting), over the time after that.
    """
    started = time.perf_counter()
    arrivals: list[tuple[float, int]] = []

    def on_record(line: dict[str, Any]) -> None:
        images = len(line["files"]["images"]) if line["status"] == "ok" else 0
        arrivals.append((time.perf_counter() - started, images))

    runner.on_record = on_record
    summary = runner.run(rows)
    seconds = time.perf_counter() - started
    startup = arrivals[0][0] if arrivals else seconds
    steady = 0.0
    if len(arrivals) > first_rows:
        since = arrivals[first_rows - 1][0] if first_rows else 0.0
        made = sum(images for _, images in arrivals[first_rows:])
        steady = made / (seconds - since) if seconds > since else 0.0
    return summary, seconds, startup, steady


def run_bench(
    models: dict[str, Path],
    *,
    rows: int = 48,
    actors: int = 2,
    num_images: int = 1,
    steps: int = 8,
    size: int = 256,
    max_batch: int = 4,
    window: int = 4,
    address: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Run the manifest locally, then on `actors` Ray actors; the figures and the environment."""
    from restyle.batch import BatchOptions, BatchRunner, read_manifest
    from restyle.batch.ray_data import RayBatchRunner, RayOptions
    from restyle.config import ModelConfig
    from restyle.engine import Restyler

    say = log or (lambda _line: None)
    cpus = os.cpu_count() or 1
    config = ModelConfig(segmenter=str(models["segmenter"]), inpainter=str(models["inpainter"]), device="cpu")
    options = BatchOptions(max_batch=max_batch, window=window)
    figures: list[BatchFigures] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = read_manifest(write_manifest(root, rows, num_images, steps, size))
        say(f"local: {rows} rows, one process ({cpus} CPU threads) ...")
        local = BatchRunner(Restyler(config), root / "local", options)
        summary, seconds, startup, steady = _timed(local, manifest, window)
        figures.append(_figures("local (1 process)", summary, seconds, startup, steady))
        say(f"ray: the same rows on {actors} actors ({max(1, cpus // actors)} CPU each) ...")
        ray_options = RayOptions(address=address, actors=actors, cpus_per_actor=max(1, cpus // actors))
        remote = RayBatchRunner(Restyler(config), root / "ray", options, ray_options)
        summary, seconds, startup, steady = _timed(remote, manifest, window * actors)
        figures.append(_figures(f"Ray Data ({actors} actors)", summary, seconds, startup, steady))
    return {
        "figures": [
            asdict(f) | {"images_per_s": f.images_per_s, "s_per_image": f.s_per_image} for f in figures
        ],
        "env": _environment(cpus),
        "case": {
            "rows": rows,
            "num_images": num_images,
            "steps": steps,
            "size": size,
            "max_batch": max_batch,
            "window": window,
        },
    }


def _figures(mode: str, summary: Any, seconds: float, startup: float, steady: float) -> BatchFigures:
    if summary.failed:
        raise RuntimeError(f"{mode}: {summary.failed} rows failed; see {summary.results}")
    return BatchFigures(mode, summary.total, summary.images, seconds, startup, steady)


def _environment(cpus: int) -> dict[str, str]:
    import diffusers
    import ray
    import torch

    return {
        "device": f"CPU ({cpus} cores: {platform.processor() or platform.machine()})",
        "versions": f"torch {torch.__version__}, diffusers {diffusers.__version__}, ray {ray.__version__}, "
        f"python {platform.python_version()}",
    }


def batch_table(result: dict[str, Any], model: str) -> str:
    case, env = result["case"], result["env"]
    lines = [
        f"`restyle bench batch`: {case['rows']} rows x {case['num_images']} image, {model}, "
        f"{case['steps']} steps at {case['size']} px, max batch {case['max_batch']}, "
        f"window {case['window']}. "
        f"{env['device']}; {env['versions']}.",
        "",
        "| run | images | total s | images/s | s/image | startup s | steady images/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in result["figures"]:
        lines.append(
            f"| {f['mode']} | {f['images']} | {f['seconds']:.1f} | {f['images_per_s']:.2f} | "
            f"{f['s_per_image']:.3f} | {f['startup_s']:.1f} | {f['steady_images_per_s']:.2f} |"
        )
    return "\n".join(lines)
