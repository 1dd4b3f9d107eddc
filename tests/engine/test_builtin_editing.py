"""Edits on scenes: reading a picture back into a scene, applying a predicted edit, the kept mask,
and the training targets of instructions."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.analysis import analyse, to_scene
from daguerre.engine.builtin.editing import apply_edit, edit_targets, keep_mask
from daguerre.engine.builtin.model import RELATION_CLASSES, SLOTS, LayoutPrediction
from daguerre.engine.builtin.scenes import EDIT_KINDS
from daguerre.sizing import size_table
from daguerre.wire import ASPECT_RATIOS

RED_STAR = scenes.Shape("star", "red", 0.25, 0.5, 0.15)
BLUE_CIRCLE = scenes.Shape("circle", "blue", 0.75, 0.5, 0.15)
SCENE = scenes.Scene("white", (RED_STAR, BLUE_CIRCLE), "1:1")


def test_a_rendered_scene_reads_back_as_itself(shape_classifier):
    rng = random.Random(5)
    read_back = 0
    for i in range(100):
        ratio = ASPECT_RATIOS[i % len(ASPECT_RATIOS)]
        scene = scenes.sample_scene(rng, ratio, style="auto")
        width, height = size_table(160 * 160, 8)[ratio]
        got = to_scene(analyse(scenes.render(scene, width, height), shape_classifier), ratio)
        expected = sorted(scene.shapes, key=lambda s: s.x)
        read_back += (
            got.background == scene.background
            and len(got.shapes) == len(expected)
            and all(
                (a.kind, a.colour, a.filled) == (b.kind, b.colour, b.filled)
                and abs(a.x - b.x) < 0.03
                and abs(a.y - b.y) < 0.03
                and abs(a.radius / b.radius - 1) < 0.15
                for a, b in zip(got.shapes, expected, strict=True)
            )
        )
    assert read_back >= 95


def prediction(
    kind: str,
    referent: tuple[str, str] | None = None,
    new_colour: str | None = None,
    new_shape: str | None = None,
    place: tuple[float, float, float] = (0.5, 0.5, 0.1),
    background: str | None = None,
    filled: bool = True,
) -> LayoutPrediction:
    """A confident prediction of one edit."""

    def one_hot(names: tuple[str, ...], name: str | None) -> torch.Tensor:
        logits = torch.zeros(len(names))
        if name is not None:
            logits[names.index(name)] = 10.0
        return logits

    shape_logits = torch.zeros(1, SLOTS, len(scenes.SHAPES))
    colour_logits = torch.zeros(1, SLOTS, len(scenes.COLOURS))
    if referent is not None:
        shape_logits[0, 0] = one_hot(scenes.SHAPES, referent[0])
        colour_logits[0, 0] = one_hot(scenes.COLOURS, referent[1])
    shape_logits[0, 1] = one_hot(scenes.SHAPES, new_shape)
    colour_logits[0, 1] = one_hot(scenes.COLOURS, new_colour)
    geometry_mean = torch.zeros(1, SLOTS, 3)
    geometry_mean[0, 1] = torch.tensor(place)
    return LayoutPrediction(
        exists_logit=torch.zeros(1, SLOTS),
        shape_logits=shape_logits,
        colour_logits=colour_logits,
        geometry_mean=geometry_mean,
        geometry_log_std=torch.full((1, SLOTS, 3), -6.0),
        background_logits=one_hot(scenes.COLOURS, background)[None],
        kind_logits=one_hot(EDIT_KINDS, kind)[None],
        filled_logit=torch.full((1, SLOTS), 5.0 if filled else -5.0),
        relation_logits=torch.zeros(1, len(RELATION_CLASSES)),
    )


def test_apply_edit_changes_the_referred_object_and_keeps_the_rest():
    rng = random.Random(0)
    recoloured = apply_edit(SCENE, prediction("recolour", ("circle", "blue"), new_colour="green"), rng)
    assert recoloured.shapes == (RED_STAR, scenes.Shape("circle", "green", 0.75, 0.5, 0.15))
    # a referent named by its shape alone is still found
    removed = apply_edit(SCENE, prediction("remove", ("star", None)), rng)
    assert removed.shapes == (BLUE_CIRCLE,)
    moved = apply_edit(SCENE, prediction("move", ("star", "red"), place=(0.3, 0.15, 0.0)), rng)
    assert moved.shapes[1] == BLUE_CIRCLE
    star = moved.shapes[0]
    assert (star.x, star.y, star.radius) == pytest.approx((0.3, 0.17, 0.15), abs=1e-3)  # kept inside
    added = apply_edit(
        SCENE, prediction("add", new_colour="yellow", new_shape="heart", place=(0.5, 0.2, 0.1)), rng
    )
    assert added.shapes[:2] == SCENE.shapes
    heart = added.shapes[2]
    assert (heart.kind, heart.colour) == ("heart", "yellow")
    assert (heart.x, heart.y, heart.radius) == pytest.approx((0.5, 0.2, 0.1), abs=0.01)
    background = apply_edit(SCENE, prediction("background", background="black"), rng)
    assert (background.background, background.shapes) == ("black", SCENE.shapes)
    outlined = apply_edit(
        SCENE,
        prediction("add", new_colour="green", new_shape="hexagon", place=(0.5, 0.2, 0.1), filled=False),
        rng,
    )
    assert (outlined.shapes[2].kind, outlined.shapes[2].filled) == ("hexagon", False)
    grown = apply_edit(SCENE, prediction("grow", ("circle", "blue")), rng)
    assert grown.shapes[0] == RED_STAR and grown.shapes[1].radius == pytest.approx(0.225)
    shrunk = apply_edit(SCENE, prediction("shrink", ("star", None)), rng)
    assert shrunk.shapes[1] == BLUE_CIRCLE and shrunk.shapes[0].radius == pytest.approx(0.09)


def test_an_edit_always_changes_something():
    rng = random.Random(0)
    same_colour = apply_edit(SCENE, prediction("recolour", ("circle", "blue"), new_colour="blue"), rng)
    assert same_colour.shapes[1].colour != "blue"
    same_background = apply_edit(SCENE, prediction("background", background="white"), rng)
    assert same_background.background != "white"
    empty = scenes.Scene("white", (), "1:1")
    remove = prediction("remove", ("star", "red"), background="black")
    remove.kind_logits[0, EDIT_KINDS.index("background")] = 5.0
    assert apply_edit(empty, remove, rng) == scenes.Scene("black", (), "1:1")  # the next likely edit


def test_the_kept_mask_blanks_what_changes():
    width = height = 64
    source = np.asarray(scenes.render(SCENE, width, height))
    white = np.array(scenes.PALETTE["white"])
    assert keep_mask(SCENE, SCENE, source, white).min() == 1.0
    recoloured = scenes.Scene("white", (RED_STAR, scenes.Shape("circle", "green", 0.75, 0.5, 0.15)), "1:1")
    keep = keep_mask(SCENE, recoloured, source, white)
    assert keep[32, 48] == 0 and keep[32, 16] == 1 and keep[5, 5] == 1  # circle redrawn, star kept
    black = scenes.Scene("black", SCENE.shapes, "1:1")
    keep = keep_mask(SCENE, black, source, white)
    assert keep[32, 48] == 1 and keep[32, 16] == 1 and keep[5, 5] == 0  # objects kept, background redrawn


def test_edit_targets_label_each_field_where_it_applies():
    rng = random.Random(3)
    small = [scenes.Shape("circle", "red", 0.3, 0.5, 0.12), scenes.Shape("star", "blue", 0.7, 0.5, 0.15)]
    edits = [scenes.sample_edit(rng, scenes.Scene("white", tuple(small)), kind) for kind in EDIT_KINDS]
    target = edit_targets(edits)
    assert EDIT_KINDS == ("recolour", "background", "move", "add", "remove", "grow", "shrink")
    assert target.kind.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert target.referent_mask.tolist() == [1, 0, 1, 0, 1, 1, 1]
    assert target.new_colour_mask.tolist() == [1, 0, 0, 1, 0, 0, 0]
    assert target.new_shape_mask.tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert target.new_filled_mask.tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert (
        target.geometry_mask.tolist()
        == [[0, 0, 0], [0, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]] + [[0, 0, 0]] * 2
    )
    assert target.background_mask.tolist() == [0, 1, 0, 0, 0, 0, 0]
    recolour = edits[0]
    assert scenes.COLOURS[int(target.new_colour[0])] == recolour.target.shapes[recolour.index].colour
    assert scenes.COLOURS[int(target.referent_colour[0])] == recolour.source.shapes[recolour.index].colour


def test_an_add_of_an_object_the_source_already_shows_is_read_as_the_next_likely_edit():
    """No two objects share shape and colour in the generator's world: "the red star should be at
    the top" names the red star that is there, so a predicted "add" of it gives way to "move"."""
    rng = random.Random(0)
    guess = prediction("add", ("star", "red"), new_colour="red", new_shape="star", place=(0.5, 0.2, 0.15))
    guess.kind_logits[0, EDIT_KINDS.index("move")] = 5.0
    moved = apply_edit(SCENE, guess, rng)
    assert len(moved.shapes) == 2 and moved.shapes[1] == BLUE_CIRCLE
    assert (moved.shapes[0].x, moved.shapes[0].y) == pytest.approx((0.5, 0.2), abs=0.02)
    # a new object is still added, and a full scene takes no more
    other = prediction("add", new_colour="red", new_shape="heart", place=(0.5, 0.2, 0.1))
    other.kind_logits[0, EDIT_KINDS.index("move")] = 5.0
    assert len(apply_edit(SCENE, other, rng).shapes) == 3
    more = (scenes.Shape("heart", "red", 0.5, 0.8, 0.1), scenes.Shape("cross", "green", 0.5, 0.2, 0.1))
    full = scenes.Scene("white", (*SCENE.shapes, *more), "1:1")
    assert len(apply_edit(full, other, rng).shapes) == 4
