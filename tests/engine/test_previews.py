"""Previews of diffusers pipelines: the latent->RGB map learnt from finished pictures
(engine.diffusers.previews), alone and inside the engine with tiny pipelines built offline."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from daguerre.engine import EngineJob, ModelRegistry, load_models_file
from daguerre.engine.builtin import scenes
from daguerre.engine.diffusers.previews import LatentPreviews, latent_grid
from daguerre.wire import GenerationType
from support.helpers import klein_models, tiny_sd_models

FACTOR = 8
"""Pixels per latent position of the pretend autoencoder."""

MIXING = np.array(  # a pretend encoder: 4 latent channels, each a mix of R, G, B, plus an offset
    [[0.9, -0.4, 0.2, 0.5], [0.3, 1.1, -0.6, -0.2], [-0.5, 0.2, 0.8, 0.4]], dtype=np.float32
)


def picture(seed: int) -> Image.Image:
    """A built-in-model scene: flat shapes of a few colours on a background (256 x 128)."""
    return scenes.render(scenes.sample_scene(random.Random(seed), "2:1", style="auto"), 256, 128)


def mosaic(seed: int) -> Image.Image:
    """Tiles of 32 random colours (256 x 128): a picture with colours enough to learn from, as
    photographs have (a map learnt from three flat colours knows nothing of the others)."""
    tiles = np.random.default_rng(seed).integers(0, 256, (4, 8, 3), dtype=np.uint8)
    return Image.fromarray(tiles).resize((256, 128), Image.Resampling.NEAREST)


def encode(image: Image.Image, packed: bool) -> torch.Tensor:
    """Latents of `image` from the pretend encoder: (1, 4, h, w), or packed as FLUX packs them,
    2 x 2 patches row-major: (1, h/2 * w/2, 16)."""
    width, height = image.size
    small = np.asarray(image.resize((width // FACTOR, height // FACTOR), Image.Resampling.BOX), np.float32)
    latents = small / 255.0 @ MIXING + np.array([0.1, -0.3, 0.2, 0.0], np.float32)  # (h, w, 4)
    grid = torch.from_numpy(latents).permute(2, 0, 1)[None]
    if not packed:
        return grid
    _, channels, rows, columns = grid.shape
    patches = grid.reshape(1, channels, rows // 2, 2, columns // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(1, (rows // 2) * (columns // 2), channels * 4)


@pytest.mark.parametrize("packed", [False, True], ids=["grid", "packed"])
def test_a_map_learnt_from_one_picture_previews_another(packed):
    previews = LatentPreviews()
    learnt_from, other = mosaic(1), picture(2)
    assert previews.draw(encode(other, packed), other.size) is None  # nothing learnt yet
    previews.learn(encode(learnt_from, packed), learnt_from)
    drawn = previews.draw(encode(other, packed), other.size)
    assert drawn is not None
    cell = FACTOR * (2 if packed else 1)
    assert drawn.size == (256 // cell, 128 // cell)  # one pixel per latent position, the picture's shape
    truth = np.asarray(other.resize(drawn.size, Image.Resampling.BOX), dtype=float)
    error = np.abs(np.asarray(drawn, dtype=float) - truth).mean()
    flat = np.abs(truth - truth.reshape(-1, 3).mean(axis=0)).mean()
    assert error < 3 and error < flat / 5  # close to the picture, far better than its mean colour


def test_a_run_that_overflowed_teaches_nothing():
    previews = LatentPreviews()
    previews.learn(encode(mosaic(1), packed=False), mosaic(1))
    latents = encode(picture(2), packed=False)
    before = np.asarray(previews.draw(latents, (256, 128)))
    spoilt = encode(mosaic(3), packed=False)
    spoilt[0, 0, 0, 0] = float("nan")
    previews.learn(spoilt, mosaic(3))
    assert np.array_equal(np.asarray(previews.draw(latents, (256, 128))), before)


def test_latents_of_a_layout_it_does_not_know_get_no_preview():
    assert latent_grid(torch.zeros(1, 4, 2, 8, 8), (64, 64)) is None  # video-shaped
    assert latent_grid(torch.zeros(1, 10, 16), (64, 64)) is None  # 10 patches cannot tile 64 x 64
    previews = LatentPreviews()
    previews.learn(encode(mosaic(1), packed=False), mosaic(1))
    assert previews.draw(encode(picture(2), packed=True), (256, 128)) is None  # other channels


def job(seed: int, ratio: str = "16:9") -> EngineJob:
    return EngineJob(
        id=f"00000000-0000-4000-8000-00000000000{seed}",
        model="uni-1",
        type=GenerationType.IMAGE,
        prompt="a red fox in the snow",
        aspect_ratio=ratio,
        seed=seed,
    )


def previews_of(engine, job: EngineJob) -> tuple[list[Image.Image | None], Image.Image]:
    drawn: list[Image.Image | None] = []
    image = engine.generate(job, lambda step, total, preview=None: drawn.append(preview and preview()))
    return drawn, image


@pytest.mark.parametrize("pipeline", ["sd", "klein"])
def test_a_diffusers_engine_offers_previews_from_its_second_job(pipeline, request, tmp_path):
    if pipeline == "sd":
        models = tiny_sd_models(tmp_path / "m.toml", request.getfixturevalue("tiny_sd_folder"))
    else:
        models = klein_models(tmp_path / "m.toml", request.getfixturevalue("klein_folder"))
    engine = ModelRegistry(load_models_file(models)).engine("uni-1")
    first, _ = previews_of(engine, job(1))
    assert first and all(preview is None for preview in first)  # nothing to draw with yet
    second, image = previews_of(engine, job(2))
    assert all(preview is not None for preview in second)
    cell = 8 if pipeline == "sd" else 16  # SD: a latent per 8 px; FLUX.2 packs 2 x 2 of them
    assert second[-1].size == (image.width // cell, image.height // cell)
    other_ratio, _ = previews_of(engine, job(3, "1:3"))  # the same map serves every shape
    assert other_ratio[-1].width < other_ratio[-1].height
