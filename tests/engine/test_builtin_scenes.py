"""The procedural scene generator: determinism, wording, edits, rendering, and the evaluator's
analysis (which must score the generator's own renderings perfectly)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.analysis import analyse
from daguerre.engine.builtin.evaluate import (
    heldout_instruction,
    heldout_prompt,
    score_edit,
    score_prompt,
)
from daguerre.engine.builtin.model import LayoutModel, offsets
from daguerre.engine.builtin.pipeline import layout_from_scenes
from daguerre.sizing import size_table
from daguerre.wire import ASPECT_RATIOS


def test_same_seed_same_scene_caption_and_pixels():
    def draw(seed):
        rng = random.Random(seed)
        scene = scenes.sample_scene(rng, "16:9")
        return scene, scenes.describe(scene, rng), np.asarray(scenes.render(scene, 88, 48))

    a, b, c = draw(7), draw(7), draw(8)
    assert a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2], b[2])
    assert a[0] != c[0]


def test_the_world_has_what_the_issue_asks_for():
    assert {"circle", "square", "triangle", "star", "heart"} <= set(scenes.SHAPES)
    assert len(scenes.COLOURS) >= 10
    assert "grey" in scenes.COLOUR_WORDS["gray"] and "violet" in scenes.COLOUR_WORDS["purple"]
    assert {"left", "right", "top", "bottom", "centre", "top left", "bottom right"} <= set(scenes.REGIONS)
    assert {"left of", "above"} <= set(scenes.RELATIONS)


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_scenes_fit_every_ratio_without_overlaps(ratio):
    rng = random.Random(ratio)
    for _ in range(60):
        scene = scenes.sample_scene(rng, ratio)
        assert 1 <= len(scene.shapes) <= 3
        assert all(s.colour != scene.background for s in scene.shapes)
        assert all(scenes._fits(s.x, s.y, s.radius, ratio, margin=0.0) for s in scene.shapes)
        assert not any(
            scenes.overlaps(a, b, ratio, gap=0.0)
            for i, a in enumerate(scene.shapes)
            for b in scene.shapes[i + 1 :]
        )
        width, height = size_table(64 * 64, 8)[ratio]
        assert scenes.render(scene, width, height).size == (width, height)


def test_captions_name_the_background_and_every_object():
    rng = random.Random(3)
    wordings = set()
    for _ in range(200):
        scene = scenes.sample_scene(rng, "1:1")
        caption = scenes.describe(scene, rng)
        wordings.add(caption.split()[0])
        assert any(word in caption for word in scenes.COLOUR_WORDS[scene.background])
        for shape in scene.shapes:
            assert any(word in caption for word in scenes.COLOUR_WORDS[shape.colour])
            assert any(singular in caption for singular, _ in scenes.SHAPE_WORDS[shape.kind])
    assert len(wordings) >= 6  # many templates


@pytest.mark.parametrize("kind", ["recolour", "background", "move", "add", "remove"])
def test_edits_change_exactly_what_they_say(kind):
    rng = random.Random(kind)
    for _ in range(30):
        scene = scenes.sample_scene(rng, "3:2", count=2)
        edit = scenes.sample_edit(rng, scene, kind)
        source, target = edit.source.shapes, edit.target.shapes
        if kind == "recolour":
            assert [s.colour != t.colour for s, t in zip(source, target, strict=True)].count(True) == 1
        elif kind == "background":
            assert edit.target.background != edit.source.background and source == target
        elif kind == "move":
            moved = target[edit.index]
            assert (moved.x, moved.y) != (source[edit.index].x, source[edit.index].y)
            assert moved.region == edit.value
        elif kind == "add":
            assert len(target) == len(source) + 1 and target[:-1] == source
        else:
            assert len(target) == len(source) - 1
        assert edit.instruction


def test_the_analysis_reads_the_generators_own_renderings_perfectly(shape_classifier):
    rng = random.Random(11)
    for i in range(60):
        ratio = ASPECT_RATIOS[i % len(ASPECT_RATIOS)]
        scene = scenes.sample_scene(rng, ratio)
        heldout_prompt(scene, rng)
        width, height = size_table(96 * 96, 8)[ratio]
        result = score_prompt(scene, analyse(scenes.render(scene, width, height), shape_classifier))
        assert result["all"], (scene, result)
        kind = ("recolour", "background", "move", "add", "remove")[i % 5]
        edit_scene = scenes.sample_scene(
            rng, ratio, max_count=2 if kind == "add" else 3, count=2 if kind == "remove" else None
        )
        edit = scenes.sample_edit(rng, edit_scene, kind)
        assert heldout_instruction(edit, rng)
        assert score_edit(edit, analyse(scenes.render(edit.target, width, height), shape_classifier))["pass"]
        # ... and an unedited picture does not pass as the edit
        assert not score_edit(edit, analyse(scenes.render(edit.source, width, height), shape_classifier))[
            "pass"
        ]


@pytest.mark.parametrize("ratio", ["1:1", "16:9", "9:16"])
def test_the_denoisers_silhouette_maps_cover_exactly_what_the_renderer_draws(ratio):
    """The layout the denoiser sees as silhouettes is the scene the generator renders, at any size."""
    layout_model = LayoutModel(hidden_size=16)
    rng = random.Random(3)
    overlaps = []
    for _ in range(8):
        scene = scenes.sample_scene(rng, ratio)
        width, height = size_table(96 * 96, 8)[ratio]
        layout = layout_from_scenes([scene])
        maps = layout_model.silhouettes(layout, *offsets(layout, width, height))[0].numpy()
        white = tuple(scenes.Shape(s.kind, "white", s.x, s.y, s.radius) for s in scene.shapes)
        drawn = np.asarray(scenes.render(scenes.Scene("black", white, ratio), width, height))[..., 0] > 128
        covered = maps[0] > 0.5
        overlaps.append((drawn & covered).sum() / (drawn | covered).sum())
        picture = np.asarray(scenes.render(scene, width, height)).astype(np.float32)
        colour = (maps[1:].transpose(1, 2, 0) + 1) * 127.5
        solid = (maps[0] > 0.99) & drawn
        assert np.abs(colour[solid] - picture[solid]).mean() < 3  # a few edge pixels differ
    assert min(overlaps) > 0.85 and np.mean(overlaps) > 0.93, overlaps
