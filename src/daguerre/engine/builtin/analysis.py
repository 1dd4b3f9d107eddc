"""Reading a picture of the built-in model's world back into a scene.

The pipeline reads an edit's source image this way (its background, its objects' colours, centres,
sizes and shapes) before it applies the instruction; the evaluation reads generated images the same
way to score them, with its own, separately trained shape classifier.

    analysis = analyse(image, classify)        # background, one Region per object
    scene = to_scene(analysis, ratio)          # a scenes.Scene (needs the regions' shapes)

The background is the median colour of the border; objects are the connected regions that differ
from it by more than a fixed distance in RGB, at least MIN_AREA_FRACTION of the picture; a region's
colour is the nearest of the named colours to the median of its interior. Shapes come from
a small CNN on the region's mask (`shape_network`), trained on the generator's renderings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from daguerre.engine.builtin import scenes

PALETTE_ARRAY = np.array([scenes.PALETTE[c] for c in scenes.COLOURS], dtype=np.float32)
MIN_AREA_FRACTION = 0.002
FOREGROUND_DISTANCE = 60.0
MASK_SIZE = 32
OUTLINE_COVERAGE = 0.75
"""A region whose drawn pixels cover less than this of the area they enclose is an outline."""


@dataclass
class Region:
    colour: str
    x: float
    y: float
    area: float
    mask: np.ndarray = field(repr=False)
    """The region with its holes filled: an outlined shape's whole area."""
    shape: str | None = None
    filled: bool = True
    """False for an outline: the drawn pixels cover little of the area they enclose."""


@dataclass
class Analysis:
    background: str
    background_rgb: np.ndarray = field(repr=False)
    regions: list[Region]
    width: int
    height: int


def nearest_colour(rgb: np.ndarray) -> str:
    return scenes.COLOURS[int(np.argmin(((PALETTE_ARRAY - rgb) ** 2).sum(-1)))]


def analyse(image: Image.Image, classify: Callable[[np.ndarray], str] | None = None) -> Analysis:
    """The picture's background and object regions; `classify` names each region's shape."""
    from scipy import ndimage

    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w, _ = pixels.shape
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    foreground = np.sqrt(((pixels - background_rgb) ** 2).sum(-1)) > FOREGROUND_DISTANCE
    labels, count = ndimage.label(foreground)
    regions = []
    for index in range(1, count + 1):
        drawn = labels == index
        mask = np.asarray(ndimage.binary_fill_holes(drawn))
        area = mask.sum() / (h * w)
        if area < MIN_AREA_FRACTION:
            continue
        interior = ndimage.binary_erosion(drawn, iterations=1)
        inside = interior if interior.sum() >= 4 else drawn
        ys, xs = np.nonzero(mask)
        region = Region(
            colour=nearest_colour(np.median(pixels[inside], axis=0)),
            x=float(xs.mean() + 0.5) / w,
            y=float(ys.mean() + 0.5) / h,
            area=float(area),
            mask=mask,
            filled=bool(drawn.sum() > OUTLINE_COVERAGE * mask.sum()),
        )
        if classify is not None:
            region.shape = classify(mask)
        regions.append(region)
    return Analysis(nearest_colour(background_rgb), background_rgb, regions, w, h)


def mask_crop(mask: np.ndarray, size: int = MASK_SIZE) -> np.ndarray:
    """A region's mask cropped to a square around it and scaled to size x size."""
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 * 1.15 + 1
    box = (round(cx - half), round(cy - half), round(cx + half + 1), round(cy + half + 1))
    image = Image.fromarray((mask * 255).astype(np.uint8)).crop(box)
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


def shape_network() -> torch.nn.Sequential:
    """A small CNN: a (B, 1, 32, 32) mask crop -> logits over scenes.SHAPES."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, len(scenes.SHAPES)),
    )


def classifier(network: torch.nn.Module) -> Callable[[np.ndarray], str]:
    """`network` as the `classify` argument of `analyse`."""

    @torch.no_grad()
    def classify(mask: np.ndarray) -> str:
        logits = network(torch.from_numpy(mask_crop(mask))[None, None])
        return scenes.SHAPES[int(logits.argmax())]

    return classify


def _extent(kind: str) -> tuple[float, float, float]:
    """For a shape of radius 1 centred at 0: the offset of its bounding box's centre from its
    centre (x, y), and its bounding box's larger half-side."""
    points = scenes.outline(kind, 0.0, 0.0, 1.0)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    half = max(max(xs) - min(xs), max(ys) - min(ys)) / 2
    return (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2, half


EXTENTS = {kind: _extent(kind) for kind in scenes.SHAPES}


def to_scene(analysis: Analysis, ratio: str, max_objects: int = scenes.MAX_OBJECTS) -> scenes.Scene:
    """The analysed picture as a scene: the largest `max_objects` regions, each with the centre and
    radius its shape's outline would have given its bounding box. Regions need their shapes."""
    short = min(analysis.width, analysis.height)
    shapes = []
    for region in sorted(analysis.regions, key=lambda r: -r.area)[:max_objects]:
        assert region.shape is not None, "analyse() needs a classifier for to_scene()"
        ys, xs = np.nonzero(region.mask)
        dx, dy, half = EXTENTS[region.shape]
        radius = (max(xs.max() - xs.min(), ys.max() - ys.min()) + 1) / 2 / half / short
        cx = (xs.min() + xs.max() + 1) / 2 - dx * radius * short
        cy = (ys.min() + ys.max() + 1) / 2 - dy * radius * short
        shapes.append(
            scenes.Shape(
                region.shape,
                region.colour,
                float(cx / analysis.width),
                float(cy / analysis.height),
                float(min(max(radius, 0.02), 0.5)),
                filled=region.filled,
            )
        )
    shapes.sort(key=lambda s: s.x)
    return scenes.Scene(analysis.background, tuple(shapes), ratio)
