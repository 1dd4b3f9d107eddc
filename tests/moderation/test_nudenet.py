"""The real NudeNet detector: it loads offline from the installed package and passes benign images."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from daguerre.engine.builtin.scenes import render, sample_scene
from daguerre.moderation.image import NudeNetChecker, detector


def benign_images() -> list[Image.Image]:
    rng = random.Random(7)
    images = [render(sample_scene(rng, ratio), 256, 256) for ratio in ("1:1", "16:9", "9:16", "3:1")]
    images.append(Image.new("RGB", (300, 200), (232, 190, 172)))  # a skin-coloured field
    gradient = np.linspace(0, 255, 256, dtype=np.uint8)
    images.append(Image.fromarray(np.stack([np.tile(gradient, (256, 1))] * 3, axis=-1)))
    images.append(Image.fromarray(np.random.default_rng(3).integers(0, 256, (200, 320, 3), dtype=np.uint8)))
    portrait = Image.new("RGB", (240, 320), (90, 140, 200))
    draw = ImageDraw.Draw(portrait)
    draw.ellipse((80, 40, 160, 130), fill=(230, 190, 160))  # a head
    draw.rectangle((70, 130, 170, 300), fill=(40, 40, 120))  # a dressed body
    images.append(portrait)
    images.append(Image.new("RGBA", (64, 64), (255, 255, 255, 0)))  # transparent and tiny
    return images


def test_the_detector_loads_offline_from_the_installed_package(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = detector()
    assert model is detector()  # loaded once per process
    assert "CPUExecutionProvider" in model.onnx_session.get_providers()


BENIGN = benign_images()


@pytest.mark.parametrize("image", BENIGN, ids=[f"benign-{i}" for i in range(len(BENIGN))])
def test_benign_images_pass(image):
    checker = NudeNetChecker()
    assert isinstance(checker.detections(image), list)  # the model ran
    assert checker.check(image) is None
