"""What previews cost: each part of one preview, and whole jobs with a preview at every step
against the same jobs with none.

Command:

    .venv/bin/python bench/previews_bench.py [--repeat 20] [--images 6] [--threads 2]

Part 1 times each piece of one preview on the worker: a diffusers engine's latent->RGB map drawing
the latents of a 1024² picture (SD's 4 x 128 x 128 grid, FLUX.2's 4096 packed patches of 128
channels, Qwen-Image's of 64) and learning from one finished 1024² picture; then, for a 256-pixel
preview, the JPEG encode and the NudeNet check (done where outputs are moderated). Part 2 runs the
built-in model's uni-1-max (24 steps, 1024²) as the worker does, once with no previews (the
baseline, in the same run) and once drawing, checking and encoding a preview after every step
(the worst case: the default, one a second, gives a 0.8 s job none). CPU seconds are this
process's (time.process_time), steadier than wall-clock time on a shared machine. Results are
appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from daguerre.engine import DrawPreview, Engine, EngineJob, ModelRegistry, load_models_file
from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.evaluate import heldout_prompt
from daguerre.engine.diffusers.previews import LatentPreviews
from daguerre.media import encode_image
from daguerre.moderation import Moderator
from daguerre.moderation.image import NudeNetChecker
from daguerre.wire import GenerationType
from daguerre.worker.previews import Previews

RESULTS = Path(__file__).with_name("RESULTS.md")
Row = tuple[str, float, float]
"""(what, median wall ms, median CPU ms)"""
LATENTS = {  # a 1024² picture's latents as each pipeline's step callback sees them
    "SD / SDXL grid (1, 4, 128, 128)": (1, 4, 128, 128),
    "FLUX.2 packed (1, 4096, 128)": (1, 4096, 128),
    "Qwen-Image packed (1, 4096, 64)": (1, 4096, 64),
}


def ticking() -> Callable[[], float]:
    """A clock that moves a second at each reading: with every_s = 0.5 a preview is always due."""
    ticks = itertools.count()
    return lambda: float(next(ticks))


def timed(work: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of `work` after one warm-up call."""
    work()
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def latent_rows(name: str, shape: tuple[int, ...], picture: Image.Image, repeat: int) -> list[Row]:
    latents = torch.randn(shape)
    previews = LatentPreviews()
    previews.learn(latents, picture)
    return [
        (f"draw: {name}", *timed(lambda: previews.draw(latents, picture.size), repeat)),
        (f"learn from one 1024² picture: {name}", *timed(lambda: previews.learn(latents, picture), repeat)),
    ]


def parts(repeat: int) -> list[Row]:
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    rows = [row for name, shape in LATENTS.items() for row in latent_rows(name, shape, picture, repeat)]
    preview = picture.resize((256, 256))
    unchecked = Previews("bench", 0.5, Moderator(None, None, ()), clock=ticking())
    rows.append(("JPEG encode of a 256² preview", *timed(lambda: unchecked.take(lambda: preview), repeat)))
    checker = NudeNetChecker()
    checker.warm()
    rows.append(("NudeNet check of a 256² preview", *timed(lambda: checker.check(preview), repeat)))
    return rows


def run_job(engine: Engine, job: EngineJob, previews: Previews) -> tuple[float, float, int]:
    """(wall s, CPU s, previews shown) of one job as a worker runs it (engine, previews, PNG)."""
    shown = 0

    def on_step(step: int, total: int, preview: DrawPreview | None = None) -> None:
        nonlocal shown
        shown += previews.take(preview) is not None

    wall, cpu = time.perf_counter(), time.process_time()
    encode_image(engine.generate(job, on_step), "png")
    return time.perf_counter() - wall, time.process_time() - cpu, shown


def jobs(images: int) -> list[tuple[str, float, float, int]]:
    engine = ModelRegistry(load_models_file()).engine("uni-1-max")
    checked, unchecked = Moderator(None, NudeNetChecker(), ("output",)), Moderator(None, None, ())
    rng = random.Random(5)
    prompts = [heldout_prompt(scenes.sample_scene(rng, "1:1"), rng) for _ in range(images + 1)]
    rows = []
    for label, every_s, moderator in (
        ("no previews (baseline)", 0.0, unchecked),
        ("a preview after every step", 0.5, unchecked),
        ("a preview after every step, checked", 0.5, checked),
    ):
        runs = []
        for i, prompt in enumerate(prompts):
            job = EngineJob(f"bench-{i}", "uni-1-max", GenerationType.IMAGE, prompt, "1:1")
            runs.append(run_job(engine, job, Previews(job.id, every_s, moderator, clock=ticking())))
        measured = runs[1:]  # the first is a warm-up
        rows.append(
            (
                label,
                statistics.median(run[0] for run in measured),
                statistics.median(run[1] for run in measured),
                round(statistics.mean(run[2] for run in measured)),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    part_rows = parts(args.repeat)
    for name, wall, cpu in part_rows:
        print(f"{name}: {wall:.2f} ms wall, {cpu:.2f} ms CPU", flush=True)
    job_rows = jobs(args.images)
    for label, wall, cpu, shown in job_rows:
        print(f"uni-1-max, {label}: {wall:.3f} s wall, {cpu:.3f} s CPU, {shown} previews", flush=True)
    if args.no_write:
        return
    base_cpu = job_rows[0][2]
    lines = [
        f"### Previews — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
        f"torch {torch.__version__}, {args.threads} threads. Command: `python bench/previews_bench.py "
        f"--repeat {args.repeat} --images {args.images}` (medians).",
        "",
        "| one preview's part | wall ms | CPU ms |",
        "|---|---:|---:|",
        *(f"| {name} | {wall:.2f} | {cpu:.2f} |" for name, wall, cpu in part_rows),
        "",
        "| uni-1-max job (24 steps, 1024², PNG) | previews | wall s | CPU s | CPU ms per preview |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {label} | {shown} | {wall:.3f} | {cpu:.3f} | "
            + (f"{(cpu - base_cpu) * 1000 / shown:.1f} |" if shown else "— |")
            for label, wall, cpu, shown in job_rows
        ),
        "",
    ]
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    RESULTS.write_text(existing.rstrip("\n") + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
