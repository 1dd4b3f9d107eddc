"""The built-in model as the default engine: the shipped weights, every aspect ratio at its documented
output size, edits that keep the source's shape, and a quality floor on held-out prompts."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from daguerre.engine import EngineJob, ModelRegistry, load_models_file
from daguerre.engine.builtin import WEIGHTS, BuiltinEngine, scenes
from daguerre.engine.builtin.analysis import analyse
from daguerre.engine.builtin.evaluate import heldout_instruction, heldout_prompt, score_edit, score_prompt
from daguerre.errors import JobFailure
from daguerre.sizing import fit_size, size_table
from daguerre.wire import ASPECT_RATIOS, FailureCode, GenerationType

# A little under what bench/RESULTS.md records for the shipped weights (uni-1), so a worse model fails.
# (This set measured 100 % on every check but shape, 96 %, on the development machine.)
FLOOR = {"background": 0.95, "colour": 0.9, "shape": 0.85, "position": 0.85, "edit": 0.8}


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry(load_models_file())


def job(model: str, prompt: str, ratio: str | None = "1:1", source: Image.Image | None = None, seed: int = 0):
    return EngineJob(
        id=f"test-{seed}",
        model=model,
        type=GenerationType.IMAGE_EDIT if source is not None else GenerationType.IMAGE,
        prompt=prompt,
        aspect_ratio=None if source is not None else ratio,
        source=source,
        seed=seed,
    )


def test_the_default_models_file_serves_both_tiers_with_the_shipped_model():
    specs = load_models_file()
    small, large = specs["uni-1"], specs["uni-1-max"]
    assert small.engine == large.engine == "builtin"
    assert small.weights is None and (WEIGHTS / "model_index.json").is_file()
    assert large.steps > small.steps and large.pixels > small.pixels
    assert large.output_pixels > small.output_pixels  # type: ignore[operator]


def test_every_ratio_is_drawn_at_its_documented_output_size(registry):
    steps = []
    engine = registry.engine("uni-1")
    for ratio in ASPECT_RATIOS:
        image = engine.generate(
            job("uni-1", "a red star on a white background", ratio), lambda s, t: steps.append(s)
        )
        assert image.size == size_table(512 * 512, 16)[ratio]
        assert image.mode == "RGB"
    assert steps[:8] == list(range(1, 9))  # progress reaches the worker after each of the 8 steps
    large = registry.engine("uni-1-max").generate(job("uni-1-max", "a blue heart", "16:9"), lambda s, t: None)
    assert large.size == (1360, 768)


def test_an_edit_keeps_the_source_shape_and_changes_what_it_says(registry):
    scene = scenes.Scene("white", (scenes.Shape("circle", "red", 0.3, 0.5, 0.2),), "2:1")
    source = scenes.render(scene, 600, 300)
    image = registry.engine("uni-1").generate(
        job("uni-1", "change the background to black", source=source), lambda s, t: None
    )
    assert image.size == fit_size(600, 300, 512 * 512, 16, min_pixels=512 * 512 // 4)
    read = analyse(image)
    assert read.background == "black"
    assert [region.colour for region in read.regions] == ["red"]


def test_same_seed_same_image(registry):
    engine = registry.engine("uni-1")
    a = engine.generate(job("uni-1", "a green square", seed=5), lambda s, t: None)
    b = engine.generate(job("uni-1", "a green square", seed=5), lambda s, t: None)
    c = engine.generate(job("uni-1", "a green square", seed=6), lambda s, t: None)
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


def test_held_out_prompts_and_edits_pass_the_quality_floor(registry, shape_classifier):
    """27 prompts and 15 edits in the evaluation's held-out wording (the full evaluation, with more
    of each, is `python -m daguerre.engine.builtin.evaluate`)."""
    engine = registry.engine("uni-1")
    rng = random.Random(99)
    totals: dict[str, list[bool]] = {}
    for i in range(27):
        ratio = ASPECT_RATIOS[i % len(ASPECT_RATIOS)]
        scene = scenes.sample_scene(rng, ratio)
        image = engine.generate(job("uni-1", heldout_prompt(scene, rng), ratio, seed=i), lambda s, t: None)
        for key, ok in score_prompt(scene, analyse(image, shape_classifier)).items():
            if ok is not None:
                totals.setdefault(key, []).append(ok)
    for i in range(15):
        ratio = ASPECT_RATIOS[i % len(ASPECT_RATIOS)]
        kind = ("recolour", "background", "move", "add", "remove")[i % 5]
        scene = scenes.sample_scene(
            rng, ratio, max_count=2 if kind == "add" else 3, count=2 if kind == "remove" else None
        )
        edit = scenes.sample_edit(rng, scene, kind)
        width, height = size_table(96 * 96, 8)[ratio]
        source = scenes.render(edit.source, width * 4, height * 4)
        image = engine.generate(
            job("uni-1", heldout_instruction(edit, rng), source=source, seed=i), lambda s, t: None
        )
        totals.setdefault("edit", []).append(score_edit(edit, analyse(image, shape_classifier))["pass"])
    rates = {key: sum(values) / len(values) for key, values in totals.items()}
    for key, floor in FLOOR.items():
        assert rates[key] >= floor, rates


def test_missing_weights_fail_the_job_with_instructions(tmp_path):
    with pytest.raises(JobFailure) as failure:
        BuiltinEngine("uni-1", weights=str(tmp_path))
    assert failure.value.code == FailureCode.GENERATION_FAILED
    assert "python -m daguerre.engine.builtin.train --export" in failure.value.reason
