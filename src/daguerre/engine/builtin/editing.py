"""Edits on scenes: the ground truth of an instruction for training, applying a predicted edit to a
scene read from the source picture, and the mask of what an edit keeps.

The denoiser sees an edit's source with the changing parts blanked out, and the mask of the kept
parts (`keep_mask`). Training and sampling build that mask the same way from the scene before and
after the edit: what changes is the disk around every object that is new, gone, moved or recoloured;
when the background changes, only the objects' own pixels are kept.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import torch

from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.analysis import FOREGROUND_DISTANCE
from daguerre.engine.builtin.model import SLOTS, EditTarget, LayoutPrediction
from daguerre.engine.builtin.scenes import EDIT_KINDS

KEEP_RADIUS = 1.25  # radii around a changing object that are redrawn


def edit_targets(batch: list[scenes.Edit]) -> EditTarget:
    """The generator's edits as training targets for `LayoutModel.edit_loss`."""
    n = len(batch)
    longs = {name: torch.zeros(n, dtype=torch.long) for name in ("kind", "rs", "rc", "nc", "ns", "bg")}
    masks = {name: torch.zeros(n) for name in ("referent", "new_colour", "new_shape", "background", "filled")}
    filled = torch.zeros(n, dtype=torch.long)
    geometry, geometry_mask = torch.zeros(n, 3), torch.zeros(n, 3)
    for i, edit in enumerate(batch):
        longs["kind"][i] = EDIT_KINDS.index(edit.kind)
        if edit.kind in ("recolour", "move", "remove", "grow", "shrink"):
            assert edit.index is not None
            old = edit.source.shapes[edit.index]
            longs["rs"][i], longs["rc"][i] = scenes.SHAPES.index(old.kind), scenes.COLOURS.index(old.colour)
            masks["referent"][i] = 1
        if edit.kind in ("recolour", "add", "move"):
            assert edit.index is not None
            new = edit.target.shapes[edit.index]
            if edit.kind != "move":
                longs["nc"][i] = scenes.COLOURS.index(new.colour)
                masks["new_colour"][i] = 1
            if edit.kind == "add":
                longs["ns"][i] = scenes.SHAPES.index(new.kind)
                masks["new_shape"][i] = 1
                filled[i] = int(new.filled)
                masks["filled"][i] = 1
            if edit.kind != "recolour":
                geometry[i] = torch.tensor([new.x, new.y, new.radius])
                geometry_mask[i] = torch.tensor([1.0, 1.0, 1.0 if edit.kind == "add" else 0.0])
        if edit.kind == "background":
            longs["bg"][i] = scenes.COLOURS.index(edit.target.background)
            masks["background"][i] = 1
    return EditTarget(
        kind=longs["kind"],
        referent_shape=longs["rs"],
        referent_colour=longs["rc"],
        referent_mask=masks["referent"],
        new_colour=longs["nc"],
        new_colour_mask=masks["new_colour"],
        new_shape=longs["ns"],
        new_shape_mask=masks["new_shape"],
        geometry=geometry,
        geometry_mask=geometry_mask,
        background=longs["bg"],
        background_mask=masks["background"],
        new_filled=filled,
        new_filled_mask=masks["filled"],
    )


def _best_other(logits: torch.Tensor, avoid: int) -> int:
    """The most likely class other than `avoid` (an edit changes something)."""
    order = logits.argsort(descending=True).tolist()
    return int(next(i for i in order if i != avoid))


def apply_edit(
    source: scenes.Scene, prediction: LayoutPrediction, rng: random.Random, temperature: float = 0.5
) -> scenes.Scene:
    """The scene after the edit the first row of `prediction` describes: the most likely kind of
    edit that the source allows (see `_possible`), so an edit always changes something. The edited
    object is the one of the source the instruction most likely refers to."""
    shapes = list(source.shapes)
    ratio = source.ratio
    added_colour = scenes.COLOURS[
        _best_other(prediction.colour_logits[0, 1], scenes.COLOURS.index(source.background))
    ]
    added_kind = scenes.SHAPES[int(prediction.shape_logits[0, 1].argmax())]
    ranked = [EDIT_KINDS[i] for i in prediction.kind_logits[0].argsort(descending=True).tolist()]
    kind = next(k for k in ranked if _possible(k, source, added_kind, added_colour))
    if kind == "background":
        avoid = scenes.COLOURS.index(source.background)
        return replace(source, background=scenes.COLOURS[_best_other(prediction.background_logits[0], avoid)])
    mean = prediction.geometry_mean[0, 1].tolist()
    std = prediction.geometry_log_std[0, 1].exp().tolist()
    if kind == "add":
        colour, kind_ = added_colour, added_kind
        radius = min(max(mean[2] + temperature * std[2] * rng.gauss(0, 1), 0.05), 0.3)
        x, y = scenes.clamp_inside(mean[0], mean[1], radius, ratio)
        filled = bool(prediction.filled_logit[0, 1] > 0)
        return replace(source, shapes=(*shapes, scenes.Shape(kind_, colour, x, y, radius, filled=filled)))
    shape_logp = prediction.shape_logits[0, 0].log_softmax(-1)
    colour_logp = prediction.colour_logits[0, 0].log_softmax(-1)
    index = max(
        range(len(shapes)),
        key=lambda i: float(
            shape_logp[scenes.SHAPES.index(shapes[i].kind)]
            + colour_logp[scenes.COLOURS.index(shapes[i].colour)]
        ),
    )
    old = shapes[index]
    if kind == "remove":
        del shapes[index]
    elif kind in ("grow", "shrink"):
        radius = scenes.resize_radius(old.radius, kind)
        x, y = scenes.clamp_inside(old.x, old.y, radius, ratio)
        shapes[index] = replace(old, x=x, y=y, radius=radius)
    elif kind == "recolour":
        avoid = scenes.COLOURS.index(old.colour)
        shapes[index] = replace(
            old, colour=scenes.COLOURS[_best_other(prediction.colour_logits[0, 1], avoid)]
        )
    else:  # move
        x, y = scenes.clamp_inside(mean[0], mean[1], old.radius, ratio)
        shapes[index] = replace(old, x=x, y=y, region=None)
    return replace(source, shapes=tuple(shapes))


def _possible(kind: str, source: scenes.Scene, added_kind: str, added_colour: str) -> bool:
    """Whether an edit of this kind makes sense on the source. In the generator's world no two
    objects share both shape and colour and a scene has at most `SLOTS` objects, so "add" the
    object the source already shows is read as a reference to it ("the red star should be at the
    top" is a move, not a second red star); an edit of an object needs one to edit ("background"
    always applies)."""
    if kind == "add":
        present = any(s.kind == added_kind and s.colour == added_colour for s in source.shapes)
        return len(source.shapes) < SLOTS and not present
    return kind == "background" or bool(source.shapes)


def keep_mask(
    before: scenes.Scene,
    after: scenes.Scene,
    source: np.ndarray,
    background_rgb: np.ndarray,
) -> np.ndarray:
    """(H, W) float mask of the source pixels an edit keeps. `source` is the (H, W, 3) source
    picture (0-255) and `background_rgb` its background colour as it appears there."""
    height, width, _ = source.shape
    keep = np.ones((height, width), dtype=np.float32)
    short = min(width, height)
    xs = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    ys = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    changed = [s for s in before.shapes if s not in after.shapes] + [
        s for s in after.shapes if s not in before.shapes
    ]
    for shape in changed:
        r = KEEP_RADIUS * shape.radius * short
        keep[(xs - shape.x * width) ** 2 + (ys - shape.y * height) ** 2 <= r * r] = 0
    if before.background != after.background:
        distance = np.sqrt(((source.astype(np.float32) - background_rgb) ** 2).sum(-1))
        keep *= (distance > FOREGROUND_DISTANCE).astype(np.float32)
    return keep
