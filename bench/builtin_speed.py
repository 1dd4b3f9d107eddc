"""Seconds per image of the built-in model at its default output size, per tier, on this CPU.

Command:

    .venv/bin/python bench/builtin_speed.py [--images 10] [--threads 2]

For each tier of the shipped models configuration (uni-1, uni-1-max) it times what a worker does
for one text-to-image job: the engine call (layout, denoising, painting at the output size) and the
PNG encode, on held-out prompts at 1:1 after two warm-up images. Because these machines are shared
and noisy, the same run also times a fixed reference workload (fp32 matrix products of 512x512,
100 of them) and reports each tier's time as a ratio to it, besides the absolute figure.
Results are appended to bench/RESULTS.md. Targets (issue 15): <= 0.3 s per uni-1 image (512²) and
<= 1.5 s per uni-1-max image (1024²) on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from daguerre.engine import EngineJob, ModelRegistry, load_models_file
from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.evaluate import heldout_prompt
from daguerre.media import encode_image
from daguerre.wire import GenerationType

RESULTS = Path(__file__).with_name("RESULTS.md")
TARGETS_S = {"uni-1": 0.3, "uni-1-max": 1.5}


def reference_seconds() -> float:
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    started = time.perf_counter()
    for _ in range(100):
        a @ b
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    specs = load_models_file()
    registry = ModelRegistry(specs)
    rng = random.Random(11)
    rows = []
    reference = statistics.median(reference_seconds() for _ in range(5))
    for name in ("uni-1", "uni-1-max"):
        engine = registry.engine(name)
        times, size = [], (0, 0)
        for i in range(args.images + 2):
            prompt = heldout_prompt(scenes.sample_scene(rng, "1:1"), rng)
            job = EngineJob(
                id=f"bench-{i}",
                model=name,
                type=GenerationType.IMAGE,
                prompt=prompt,
                aspect_ratio="1:1",
                seed=i,
            )
            started = time.perf_counter()
            image = engine.generate(job, lambda step, total, preview=None: None)
            encode_image(image, "png")
            if i >= 2:
                times.append(time.perf_counter() - started)
            size = image.size
        spec = specs[name]
        rows.append((name, spec.steps, size, statistics.median(times), max(times)))
        print(
            f"{name}: {size[0]}x{size[1]}, {spec.steps} steps, median {statistics.median(times):.3f} s",
            flush=True,
        )
    print(f"reference workload: {reference:.3f} s")
    if args.no_write:
        return
    lines = [
        f"### Built-in model speed — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads. "
        f"Command: `python bench/builtin_speed.py --images {args.images}` (engine call + PNG encode, 1:1, "
        "median after two warm-up images). Reference workload (100 fp32 512² matmuls) in the same run: "
        f"{reference:.3f} s.",
        "",
        "| tier | output size | steps | median s/image | max s/image | ratio to reference | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, steps, size, median, worst in rows:
        limit = TARGETS_S[name]
        target = f"≤ {limit:g} s " + ("met" if median <= limit else "NOT met")
        figures = f"{median:.3f} | {worst:.3f} | {median / reference:.1f}"
        lines.append(f"| {name} | {size[0]}x{size[1]} | {steps} | {figures} | {target} |")
    lines.append("")
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    RESULTS.write_text(existing.rstrip("\n") + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
