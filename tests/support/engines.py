"""Engines for failure-mode tests, loaded through the models file's `engine = "python"` entrypoint.

They stand in for a model only where the test is about the worker, not the image: a run that takes
a while (to be killed or paused mid-job), or that fails in one exact way. Images come from the real
diffusers adapter everywhere else.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from daguerre.engine import EngineJob, StepHook
from daguerre.errors import JobFailure, Transient
from daguerre.sizing import fit_size, size_for_ratio
from daguerre.wire import FailureCode


class ScriptedEngine:
    """Paints a solid colour derived from the prompt after `steps` steps of `step_s` seconds each;
    its preview after each step is a small picture going from grey to that colour (`preview_at`).

    mode: "ok" | "raise" (RuntimeError) | "job_failure" (JobFailure with `code`) | "transient".
    load_s: how long building the engine takes (as loading weights would).
    previews: "ok" | "raise" (drawing one raises) | "junk" (it returns something not a picture).
    runs_dir: every run leaves a file there, so tests can count how often a job ran and where; the
    file's size is the number of steps the run finished (a byte per step).
    """

    def __init__(
        self,
        mode: str = "ok",
        steps: int = 4,
        step_s: float = 0.0,
        pixels: int = 64 * 64,
        multiple: int = 8,
        code: str = "generation_failed",
        runs_dir: str | None = None,
        load_s: float = 0.0,
        previews: str = "ok",
    ) -> None:
        time.sleep(load_s)  # loading weights
        self.mode = mode
        self.steps = steps
        self.step_s = step_s
        self.pixels = pixels
        self.multiple = multiple
        self.code = FailureCode(code)
        self.runs_dir = Path(runs_dir) if runs_dir else None
        self.previews = previews

    def generate(self, job: EngineJob, on_step: StepHook) -> Image.Image:
        run = None
        if self.runs_dir is not None:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            run = self.runs_dir / f"{job.id}.{os.getpid()}.{time.monotonic_ns()}"
            run.touch()
        for step in range(1, self.steps + 1):
            time.sleep(self.step_s)
            if run is not None:
                with run.open("ab") as steps_done:
                    steps_done.write(b".")
            on_step(step, self.steps, preview=lambda step=step: self._preview(job.prompt, step))
        if self.mode == "raise":
            raise RuntimeError("engine exploded")
        if self.mode == "job_failure":
            raise JobFailure(self.code, f"scripted {self.code.value}")
        if self.mode == "transient":
            raise Transient(FailureCode.GENERATION_FAILED, "scripted transient failure")
        if job.source is not None:
            size = fit_size(*job.source.size, self.pixels, self.multiple)
        else:
            assert job.aspect_ratio is not None
            size = size_for_ratio(job.aspect_ratio, self.pixels, self.multiple)
        return Image.new("RGB", size, prompt_colour(job.prompt))

    def _preview(self, prompt: str, step: int) -> Image.Image:
        if self.previews == "raise":
            raise RuntimeError("no preview today")
        if self.previews == "junk":
            return "not a picture"  # type: ignore[return-value]
        return preview_at(prompt, step, self.steps)


@dataclass(frozen=True)
class Run:
    """One engine run that ScriptedEngine recorded in its runs_dir."""

    pid: int
    started: float
    """time.monotonic() at its start (a clock every process of the host shares)."""
    steps: int
    """Steps it finished."""


def runs_of(runs_dir: Path, generation_id: str) -> list[Run]:
    """Every recorded run of the generation, in the order they started. A run's file is named
    `<generation id>.<pid>.<monotonic ns at start>` and holds a byte per finished step."""
    runs = []
    for path in runs_dir.glob(f"{generation_id}.*"):
        _, pid, started_ns = path.name.rsplit(".", 2)
        runs.append(Run(int(pid), int(started_ns) / 1e9, path.stat().st_size))
    return sorted(runs, key=lambda run: run.started)


def prompt_colour(prompt: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


def preview_at(prompt: str, step: int, total: int) -> Image.Image:
    """ScriptedEngine's preview after `step` of `total`: grey blended towards the prompt's colour."""
    share = step / total
    colour = tuple(round(128 + (channel - 128) * share) for channel in prompt_colour(prompt))
    return Image.new("RGB", (32, 16), colour)
