"""image_edit through the diffusers adapter, with tiny edit pipelines built offline at test time:
FLUX.2 [klein] (one pipeline for both types, as uni-1 in production) and InstructPix2Pix (a
separate edit pipeline beside a text-to-image one)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from daguerre.engine import EngineJob, ModelRegistry, load_models_file
from daguerre.wire import GenerationType
from support.helpers import klein_models, tiny_sd_models


def job(**fields):
    values = {
        "id": "00000000-0000-4000-8000-000000000001",
        "model": "uni-1",
        "type": GenerationType.IMAGE_EDIT,
        "prompt": "make the sky purple",
        "aspect_ratio": None,
        "seed": 5,
    }
    return EngineJob(**{**values, **fields})


def noop(step, total, preview=None):
    pass


def test_a_unified_pipeline_serves_both_types_and_edits_keep_the_source_ratio(tmp_path, klein_folder):
    engine = ModelRegistry(load_models_file(klein_models(tmp_path / "m.toml", klein_folder))).engine("uni-1")
    text = engine.generate(job(type=GenerationType.IMAGE, aspect_ratio="2:1"), noop)
    assert text.size == (192, 96)
    for source_size in ((400, 200), (100, 200), (300, 300)):
        edited = engine.generate(job(source=Image.new("RGB", source_size, "red")), noop)
        assert edited.width / edited.height == pytest.approx(source_size[0] / source_size[1], rel=0.05)
        assert (
            edited.width % 16 == 0 and edited.height % 16 == 0 and edited.width * edited.height <= 128 * 128
        )
    assert engine._edit_pipeline() is engine.pipe  # one warm pipeline


def test_small_sources_keep_their_size(tmp_path, klein_folder):
    engine = ModelRegistry(load_models_file(klein_models(tmp_path / "m.toml", klein_folder))).engine("uni-1")
    assert engine.generate(job(source=Image.new("RGB", (96, 64), "red")), noop).size == (96, 64)


def test_references_reach_a_pipeline_that_takes_them(tmp_path, klein_folder):
    with_refs = ModelRegistry(
        load_models_file(klein_models(tmp_path / "a.toml", klein_folder, references=True))
    )
    without = ModelRegistry(
        load_models_file(klein_models(tmp_path / "b.toml", klein_folder, references=False))
    )
    source = Image.new("RGB", (64, 64), "red")
    references = (Image.new("RGB", (64, 64), "blue"), Image.new("RGB", (96, 64), "green"))

    def pixels(registry, refs):
        return np.asarray(registry.engine("uni-1").generate(job(source=source, references=refs), noop))

    assert not np.array_equal(pixels(with_refs, references), pixels(with_refs, ()))  # conditioning changed
    assert np.array_equal(pixels(without, references), pixels(without, ()))  # documented as unused


def test_a_separate_edit_pipeline_serves_edits(tmp_path, tiny_sd_folder, pix2pix_folder):
    models = tiny_sd_models(
        tmp_path / "m.toml",
        tiny_sd_folder,
        edit_pipeline="StableDiffusionInstructPix2PixPipeline",
        edit_weights=str(pix2pix_folder),
        edit_call={"image_guidance_scale": 1.5},
    )
    engine = ModelRegistry(load_models_file(models)).engine("uni-1")
    assert engine.generate(job(type=GenerationType.IMAGE, aspect_ratio="16:9"), noop).size == (88, 48)
    edited = engine.generate(job(source=Image.new("RGB", (100, 50), "red")), noop)
    assert edited.size == (80, 40)  # 2:1 kept, at the model's 64² pixels with multiple 8
    assert engine._edit_pipeline() is not engine.pipe


def test_steps_are_reported_for_edits(tmp_path, klein_folder):
    engine = ModelRegistry(
        load_models_file(klein_models(tmp_path / "m.toml", klein_folder, edit_steps=3))
    ).engine("uni-1")
    steps = []
    engine.generate(job(source=Image.new("RGB", (64, 64), "red")), lambda s, t, **_: steps.append((s, t)))
    assert steps == [(1, 3), (2, 3), (3, 3)]
