"""Procedural scenes: the built-in model's whole world, deterministic by seed.

A scene is a plain background colour and one to four flat shapes, filled or outlined, drawn in
colour or as manga (ink outlines and screentone on white). The generator samples scenes, describes
them in many wordings (often leaving out the background, the sizes or the places, as people do),
renders them anti-aliased at any size, and derives edit pairs (recolour, change background, move,
add, remove, make bigger or smaller) with instruction captions. Training, evaluation and the shape
classifier all draw from here; nothing here needs torch.

    rng = random.Random(7)
    scene = sample_scene(rng, "16:9")
    caption = describe(scene, rng)               # "three small yellow stars on a blue background"
    image = render(scene, 88, 48)                # PIL RGB image, anti-aliased
    edit = sample_edit(rng, scene)               # Edit(source, target, instruction, kind)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

# --- the vocabulary of the world ------------------------------------------------------------------

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "orange": (245, 130, 20),
    "yellow": (245, 215, 30),
    "green": (34, 160, 60),
    "blue": (37, 99, 235),
    "purple": (130, 60, 200),
    "pink": (240, 120, 180),
    "brown": (125, 75, 35),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "gray": (130, 130, 130),
    "cyan": (30, 200, 210),
    "light gray": (200, 200, 200),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
OBJECT_COLOURS: tuple[str, ...] = tuple(c for c in COLOURS if c != "light gray")
"""Light grey is a background colour only (too close to white to tell objects apart by)."""
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet"),
    "orange": ("orange",),
    "yellow": ("yellow", "golden"),
    "green": ("green",),
    "blue": ("blue",),
    "purple": ("purple", "violet"),
    "pink": ("pink",),
    "brown": ("brown",),
    "black": ("black",),
    "white": ("white",),
    "gray": ("gray", "grey"),
    "cyan": ("cyan", "turquoise"),
    "light gray": ("light gray", "light grey", "pale grey"),
}
DEFAULT_BACKGROUND = "white"
"""The background of a prompt that names none; `light gray` when an object is white."""

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "hexagon",
    "pentagon",
    "diamond",
    "rectangle",
    "ellipse",
    "cross",
    "crescent",
    "arrow",
)
SHAPE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {  # (singular, plural)
    "circle": (("circle", "circles"), ("disc", "discs"), ("dot", "dots")),
    "square": (("square", "squares"), ("box", "boxes"), ("block", "blocks")),
    "triangle": (("triangle", "triangles"),),
    "star": (("star", "stars"),),
    "heart": (("heart", "hearts"),),
    "hexagon": (("hexagon", "hexagons"),),
    "pentagon": (("pentagon", "pentagons"),),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses")),
    "rectangle": (("rectangle", "rectangles"), ("bar", "bars")),
    "ellipse": (("ellipse", "ellipses"), ("oval", "ovals")),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
    "crescent": (("crescent", "crescents"), ("crescent moon", "crescent moons")),
    "arrow": (("arrow", "arrows"),),
}

SIZES: dict[str, tuple[float, float]] = {  # radius as a fraction of the image's short side
    "small": (0.10, 0.13),
    "medium": (0.15, 0.19),
    "large": (0.22, 0.26),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "medium": ("medium", "medium-sized"),
    "large": ("large", "big", "huge"),
}
OUTLINED_WORDS = ("outlined", "hollow", "empty", "unfilled")
FILLED_WORDS = ("filled", "solid")
COUNT_WORDS: dict[int, tuple[str, ...]] = {2: ("two", "2", "a pair of"), 3: ("three", "3"), 4: ("four", "4")}
MAX_OBJECTS = 4

REGIONS: dict[str, tuple[float, float]] = {  # centre of each named region, normalised (x right, y down)
    "centre": (0.5, 0.5),
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.22),
    "bottom": (0.5, 0.78),
    "top left": (0.2, 0.22),
    "top right": (0.8, 0.22),
    "bottom left": (0.2, 0.78),
    "bottom right": (0.8, 0.78),
}
REGION_PHRASES: dict[str, tuple[str, ...]] = {
    "centre": ("in the centre", "in the center", "in the middle"),
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "top left": ("in the top left corner", "at the top left", "in the upper left"),
    "top right": ("in the top right corner", "at the top right", "in the upper right"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the lower left"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the lower right"),
}
RELATIONS: dict[str, tuple[str, ...]] = {  # "A <phrase> B" ("between": "A between B and C")
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "next to": ("next to", "beside", "alongside"),
    "on top of": ("on top of", "sitting on", "resting on"),
    "between": ("between",),
}
"""Relations between objects. "inside" does not fit this world: its objects never overlap."""
STYLES = ("auto", "manga")
EDIT_KINDS = ("recolour", "background", "move", "add", "remove", "grow", "shrink")


@dataclass(frozen=True)
class Shape:
    """One object: kind, colour name, centre (normalised, x right, y down), radius (fraction of the
    short side), filled or outlined. `size` is the size class the radius was drawn from."""

    kind: str
    colour: str
    x: float
    y: float
    radius: float
    size: str = "medium"
    region: str | None = None
    filled: bool = True


@dataclass(frozen=True)
class Relation:
    first: int
    relation: str
    second: int
    third: int | None = None  # "between": the first object is between the second and the third


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[Shape, ...]
    ratio: str = "1:1"
    relation: Relation | None = None
    mentioned_size: tuple[bool, ...] = field(default_factory=tuple)
    groups: tuple[int, ...] = ()
    """How the caption groups the shapes, in order: (3, 1) is "three stars and a circle". Empty: one each."""
    background_named: bool = True
    style: str = "auto"

    def phrase_groups(self) -> tuple[int, ...]:
        return self.groups or (1,) * len(self.shapes)


@dataclass(frozen=True)
class Edit:
    kind: str  # one of EDIT_KINDS
    source: Scene
    target: Scene
    instruction: str
    index: int | None = None
    """The edited object: its index in the source (recolour, move, remove, grow, shrink) or target (add)."""
    value: str | None = None
    """The new colour, region, or added object's description."""


def default_background(shapes: Sequence[Shape]) -> str:
    """White, unless an object is white: then light grey."""
    return "light gray" if any(s.colour == "white" for s in shapes) else DEFAULT_BACKGROUND


# --- geometry -------------------------------------------------------------------------------------


def _aspect(ratio: str) -> float:
    w, h = ratio.split(":")
    return int(w) / int(h)


def _extent(radius: float, ratio: str) -> tuple[float, float]:
    """A radius (fraction of the short side) as normalised half-extents along x and y."""
    aspect = _aspect(ratio)
    return (radius / aspect, radius) if aspect >= 1 else (radius, radius * aspect)


def fits(x: float, y: float, radius: float, ratio: str, margin: float = 0.02) -> bool:
    ex, ey = _extent(radius, ratio)
    return ex + margin <= x <= 1 - ex - margin and ey + margin <= y <= 1 - ey - margin


def clamp_inside(x: float, y: float, radius: float, ratio: str, margin: float = 0.02) -> tuple[float, float]:
    ex, ey = _extent(radius, ratio)
    return (
        min(max(x, ex + margin), 1 - ex - margin),
        min(max(y, ey + margin), 1 - ey - margin),
    )


def _short_units(ratio: str) -> tuple[float, float]:
    aspect = _aspect(ratio)
    return (aspect, 1.0) if aspect >= 1 else (1.0, 1 / aspect)


def gap_between(a: Shape, b: Shape, ratio: str) -> float:
    """The distance between two shapes' disks, in short-side units (negative when they overlap)."""
    sx, sy = _short_units(ratio)
    return math.hypot((a.x - b.x) * sx, (a.y - b.y) * sy) - a.radius - b.radius


def overlaps(a: Shape, b: Shape, ratio: str, gap: float = 0.03) -> bool:
    """True when two shapes' disks (plus a gap) intersect, measured in short-side units."""
    return gap_between(a, b, ratio) < gap


def _size_class(rng: random.Random, count: int) -> str:
    weights = {1: (0.3, 0.4, 0.3), 2: (0.35, 0.45, 0.2), 3: (0.5, 0.45, 0.05), 4: (0.7, 0.3, 0.0)}[count]
    return rng.choices(("small", "medium", "large"), weights=weights)[0]


def _radius(rng: random.Random, size: str, ratio: str) -> float:
    low, high = SIZES[size]
    aspect = max(_aspect(ratio), 1 / _aspect(ratio))
    squeeze = 1.0 if aspect < 2.5 else 0.85  # keep large shapes inside 3:1 and 1:3 frames
    return rng.uniform(low, high) * squeeze


def _place_in_region(rng: random.Random, region: str, radius: float, ratio: str) -> tuple[float, float]:
    cx, cy = REGIONS[region]
    x, y = cx + rng.uniform(-0.06, 0.06), cy + rng.uniform(-0.06, 0.06)
    return clamp_inside(x, y, radius, ratio)


def _place_anywhere(rng: random.Random, radius: float, ratio: str) -> tuple[float, float]:
    ex, ey = _extent(radius, ratio)
    return rng.uniform(ex + 0.02, 1 - ex - 0.02), rng.uniform(ey + 0.02, 1 - ey - 0.02)


def in_region(region: str, x: float, y: float, tolerance: float = 0.2) -> bool:
    """Whether a centre is in a named region, on the axes the name speaks of ("left": x only)."""
    ex, ey = REGIONS[region]
    checks = []
    if region == "centre" or "left" in region or "right" in region:
        checks.append(abs(x - ex) <= tolerance)
    if region == "centre" or "top" in region or "bottom" in region:
        checks.append(abs(y - ey) <= tolerance)
    return all(checks)


def satisfies(relation: Relation, shapes: Sequence[Shape], ratio: str) -> bool:
    """Whether the placed shapes show the relation (the rule training data and sampling share)."""
    a, b = shapes[relation.first], shapes[relation.second]
    ex, ey = _extent(max(a.radius, b.radius), ratio)
    kind = relation.relation
    if kind == "left of":
        return a.x + ex * 0.5 < b.x - ex * 0.5 and abs(a.y - b.y) < 0.35
    if kind == "right of":
        return a.x - ex * 0.5 > b.x + ex * 0.5 and abs(a.y - b.y) < 0.35
    if kind == "above":
        return a.y + ey * 0.5 < b.y - ey * 0.5 and abs(a.x - b.x) < 0.35
    if kind == "below":
        return a.y - ey * 0.5 > b.y + ey * 0.5 and abs(a.x - b.x) < 0.35
    if kind == "next to":
        return abs(a.y - b.y) < ey * 0.6 and 0.0 <= gap_between(a, b, ratio) < 0.12
    if kind == "on top of":
        return a.y < b.y and abs(a.x - b.x) < ex * 0.4 and 0.0 <= gap_between(a, b, ratio) < 0.06
    if kind == "between":
        assert relation.third is not None
        c = shapes[relation.third]
        low, high = sorted((b.x, c.x))
        return low + ex * 0.5 < a.x < high - ex * 0.5 and abs(a.y - b.y) < 0.2 and abs(a.y - c.y) < 0.2
    raise ValueError(kind)


def place_relative(
    rng: random.Random, relation: str, anchor: Shape, radius: float, ratio: str
) -> tuple[float, float]:
    """A centre for an object of `radius` that stands in `relation` to `anchor` (not checked)."""
    sx, sy = _short_units(ratio)
    if relation in ("next to", "on top of"):
        gap = rng.uniform(0.01, 0.05 if relation == "on top of" else 0.1)
        distance = anchor.radius + radius + gap
        if relation == "on top of":
            return anchor.x + rng.uniform(-0.02, 0.02), anchor.y - distance / sy
        side = rng.choice((-1, 1))
        return anchor.x + side * distance / sx, anchor.y + rng.uniform(-0.03, 0.03)
    distance = (anchor.radius + radius + rng.uniform(0.05, 0.3)) / (
        sx if relation in ("left of", "right of") else sy
    )
    jitter = rng.uniform(-0.1, 0.1)
    if relation == "left of":
        return anchor.x - distance, anchor.y + jitter
    if relation == "right of":
        return anchor.x + distance, anchor.y + jitter
    if relation == "above":
        return anchor.x + jitter, anchor.y - distance
    return anchor.x + jitter, anchor.y + distance  # below


# --- sampling -------------------------------------------------------------------------------------


def sample_scene(
    rng: random.Random,
    ratio: str = "1:1",
    count: int | None = None,
    max_count: int = MAX_OBJECTS,
    tries: int = 300,
    groups: bool = True,
    style: str | None = None,
) -> Scene:
    """A random scene: 1-4 shapes, none overlapping, each placed in a named region, freely, or by a
    relation to another shape. Shapes differ in (kind, colour) unless the caption counts them as a
    group ("three small yellow stars", when `groups`). `count` fixes the number of shapes."""
    max_count = min(max_count, MAX_OBJECTS)
    for _ in range(tries):
        n = count or rng.choices((1, 2, 3, 4), weights=(0.35, 0.3, 0.2, 0.15))[0]
        n = min(n, max_count)
        drawn_style = style or ("manga" if rng.random() < 0.15 else "auto")
        background_named = rng.random() < 0.65
        background = rng.choice(COLOURS) if background_named else DEFAULT_BACKGROUND
        group = 1
        if groups and n >= 2 and rng.random() < 0.35:
            group = rng.randint(2, n)
        phrase_groups = (group,) + (1,) * (n - group)
        taken: set[tuple[str, str]] = set()
        shapes: list[Shape] = []
        relation: Relation | None = None
        if group == 1 and n >= 2 and rng.random() < 0.45:
            kind = rng.choice(tuple(RELATIONS))
            if kind == "between" and n < 3:
                kind = "next to"
            relation = Relation(0, kind, 1, 2 if kind == "between" else None)
        for i, size_count in enumerate(_members(phrase_groups)):
            if size_count > 0:  # the first member of a phrase picks its attributes
                kind_ = rng.choice(SHAPES)
                colour = rng.choice([c for c in OBJECT_COLOURS if c != background])
                filled = rng.random() < 0.8
                size = _size_class(rng, n)
                if (kind_, colour) in taken:
                    break
                taken.add((kind_, colour))
            radius = _radius(rng, size, ratio)
            region: str | None = None
            in_group = phrase_groups[0] > 1 and i < phrase_groups[0]
            if relation is not None and i <= (2 if relation.relation == "between" else 1):
                x, y = _place_anywhere(rng, radius, ratio)  # placed by the relation below
            elif not in_group and rng.random() < 0.6:
                region = rng.choice(tuple(REGIONS))
                x, y = _place_in_region(rng, region, radius, ratio)
            else:
                x, y = _place_anywhere(rng, radius, ratio)
            shapes.append(Shape(kind_, colour, x, y, radius, size, region, filled))
        if len(shapes) != n:
            continue
        if relation is not None and relation.relation == "between":
            shapes = place_between(rng, shapes, ratio)
        elif relation is not None:
            x, y = place_relative(rng, relation.relation, shapes[1], shapes[0].radius, ratio)
            shapes[0] = replace(shapes[0], x=x, y=y)
        if not all(fits(s.x, s.y, s.radius, ratio, margin=0.0) for s in shapes):
            continue
        if relation is not None and not satisfies(relation, shapes, ratio):
            continue
        tight = relation is not None and relation.relation in ("next to", "on top of")
        if any(
            overlaps(a, b, ratio, gap=0.0 if tight and {i, i + 1 + j} == {0, 1} else 0.03)
            for i, a in enumerate(shapes)
            for j, b in enumerate(shapes[i + 1 :])
        ):
            continue
        regions = [s.region for s in shapes if s.region]
        if len(regions) != len(set(regions)):
            continue
        if not background_named:
            background = default_background(shapes)
        mentioned = tuple((s.size != "medium" and rng.random() < 0.5) or rng.random() < 0.08 for s in shapes)
        return Scene(
            background,
            tuple(shapes),
            ratio,
            relation,
            mentioned,
            phrase_groups if group > 1 else (),
            background_named,
            drawn_style,
        )
    raise RuntimeError("could not place a scene; loosen the constraints")


def _members(groups: tuple[int, ...]) -> list[int]:
    """For each shape, the size of the phrase it starts, or 0 when it repeats the previous one."""
    out: list[int] = []
    for group in groups:
        out += [group] + [0] * (group - 1)
    return out


def place_between(rng: random.Random, shapes: list[Shape], ratio: str) -> list[Shape]:
    """The first three shapes placed in a row with the first in the middle, a small gap apart."""
    a, b, c = shapes[:3]
    left, right = (b, c) if rng.random() < 0.5 else (c, b)
    sx, _ = _short_units(ratio)
    gaps = (rng.uniform(0.04, 0.15), rng.uniform(0.04, 0.15))
    span = (2 * (left.radius + a.radius + right.radius) + sum(gaps)) / sx
    start = rng.uniform(0.02, max(0.02, 0.98 - span))
    y = rng.uniform(0.3, 0.7)
    xs = {id(left): start + left.radius / sx}
    xs[id(a)] = xs[id(left)] + (left.radius + a.radius + gaps[0]) / sx
    xs[id(right)] = xs[id(a)] + (a.radius + right.radius + gaps[1]) / sx
    ys = {id(left): y + rng.uniform(-0.04, 0.04), id(a): y, id(right): y + rng.uniform(-0.04, 0.04)}
    placed = [replace(s, x=xs[id(s)], y=ys[id(s)], region=None) for s in (a, b, c)]
    return placed + shapes[3:]


# --- captions -------------------------------------------------------------------------------------

_ARTICLES = ("a", "one", "a single")


def colour_word(colour: str, rng: random.Random) -> str:
    return rng.choice(COLOUR_WORDS[colour])


def shape_word(kind: str, rng: random.Random, plural: bool = False) -> str:
    singular, plural_form = rng.choice(SHAPE_WORDS[kind])
    return plural_form if plural else singular


def object_phrase(
    shape: Shape, rng: random.Random, with_size: bool, article: bool = True, count: int = 1
) -> str:
    words = []
    if with_size:
        words.append(rng.choice(SIZE_WORDS[shape.size]))
    if not shape.filled:
        words.append(rng.choice(OUTLINED_WORDS))
    elif rng.random() < 0.1:
        words.append(rng.choice(FILLED_WORDS))
    words.append(colour_word(shape.colour, rng))
    words.append(shape_word(shape.kind, rng, plural=count > 1))
    rest = " ".join(words)
    if count > 1:
        return f"{rng.choice(COUNT_WORDS[count])} {rest}"
    if not article:
        return rest
    chosen = rng.choice(_ARTICLES)
    return f"{'an' if chosen == 'a' and rest[0] in 'aeiou' else chosen} {rest}"


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _background_phrase(colour: str, rng: random.Random) -> str:
    word = colour_word(colour, rng)
    return rng.choice(
        (
            f"on {_with_article(word)} background",
            f"against {_with_article(word)} background",
            f"with {_with_article(word)} background",
            f"over a plain {word} background",
            f"on {word}",
        )
    )


def _object_clause(scene: Scene, index: int, rng: random.Random, count: int = 1) -> str:
    shape = scene.shapes[index]
    phrase = object_phrase(
        shape, rng, scene.mentioned_size[index] if scene.mentioned_size else False, count=count
    )
    if shape.region is not None:
        phrase += " " + rng.choice(REGION_PHRASES[shape.region])
    return phrase


def _relation_clause(scene: Scene, rng: random.Random) -> str:
    r = scene.relation
    assert r is not None

    def named(index: int, article: bool) -> str:
        phrase = object_phrase(scene.shapes[index], rng, scene.mentioned_size[index], article=article)
        if article:
            return phrase
        return _with_article(phrase) if rng.random() < 0.5 else f"the {phrase}"

    first = named(r.first, article=True)
    if r.relation == "between":
        assert r.third is not None
        return f"{first} between {named(r.second, False)} and {named(r.third, False)}"
    return f"{first} {rng.choice(RELATIONS[r.relation])} {named(r.second, False)}"


def describe(scene: Scene, rng: random.Random) -> str:
    """A caption in one of many training wordings. Objects are mentioned in the scene's order; the
    background only when the scene names it."""
    clauses: list[str] = []
    index = 0
    for group in scene.phrase_groups():
        clauses.append(_object_clause(scene, index, rng, count=group))
        index += group
    if scene.relation is not None:
        related = 3 if scene.relation.relation == "between" else 2
        clauses[:related] = [_relation_clause(scene, rng)]
    objects = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    if not scene.background_named:
        return rng.choice(
            (
                objects,
                objects,
                f"a picture of {objects}",
                f"an image showing {objects}",
                f"draw {objects}",
                f"simple illustration: {objects}",
            )
        )
    background = _background_phrase(scene.background, rng)
    bg_word = colour_word(scene.background, rng)
    return rng.choice(
        (
            f"{objects} {background}",
            f"{bg_word} background with {objects}",
            f"a picture of {objects} {background}",
            f"{objects}, {bg_word} background",
            f"an image showing {objects} {background}",
            f"a plain {bg_word} background and {objects}",
            f"draw {objects} {background}",
            f"simple illustration: {objects} {background}",
        )
    )


# --- edits ----------------------------------------------------------------------------------------


def _reference(scene: Scene, index: int, rng: random.Random) -> str:
    """How an instruction names an object: its kind alone when that is unique, else colour + kind."""
    shape = scene.shapes[index]
    unique_kind = sum(s.kind == shape.kind for s in scene.shapes) == 1
    if unique_kind and rng.random() < 0.5:
        return f"the {shape_word(shape.kind, rng)}"
    return f"the {colour_word(shape.colour, rng)} {shape_word(shape.kind, rng)}"


def sample_edit(rng: random.Random, scene: Scene, kind: str | None = None, tries: int = 100) -> Edit:
    """An edit of `scene` (a scene without counted groups) and the scene it leads to."""
    for _ in range(tries):
        chosen = kind or rng.choices(EDIT_KINDS, weights=(0.2, 0.15, 0.17, 0.17, 0.13, 0.09, 0.09))[0]
        edit = _try_edit(rng, scene, chosen)
        if edit is not None:
            return edit
    raise RuntimeError(f"no {kind} edit possible for this scene")


def _try_edit(rng: random.Random, scene: Scene, kind: str) -> Edit | None:
    shapes = list(scene.shapes)
    plain = replace(scene, relation=None, groups=())
    if kind == "recolour":
        i = rng.randrange(len(shapes))
        used = {(s.kind, s.colour) for s in shapes}
        options = [c for c in OBJECT_COLOURS if c not in (scene.background, shapes[i].colour)]
        new = rng.choice(options)
        if (shapes[i].kind, new) in used:
            return None
        ref = _reference(scene, i, rng)
        word = colour_word(new, rng)
        instruction = rng.choice(
            (
                f"make {ref} {word}",
                f"change the colour of {ref} to {word}",
                f"change the color of {ref} to {word}",
                f"turn {ref} {word}",
                f"paint {ref} {word}",
                f"recolor {ref} {word}",
            )
        )
        shapes[i] = replace(shapes[i], colour=new)
        return Edit(kind, scene, replace(plain, shapes=tuple(shapes)), instruction, i, new)
    if kind == "background":
        new = rng.choice([c for c in COLOURS if c != scene.background and all(s.colour != c for s in shapes)])
        word = colour_word(new, rng)
        instruction = rng.choice(
            (
                f"change the background to {word}",
                f"make the background {word}",
                f"set the background to {word}",
                f"use a {word} background",
                f"replace the background with {word}",
            )
        )
        return Edit(
            kind, scene, replace(plain, background=new, background_named=True), instruction, None, new
        )
    if kind == "move":
        i = rng.randrange(len(shapes))
        region = rng.choice(tuple(REGIONS))
        x, y = _place_in_region(rng, region, shapes[i].radius, scene.ratio)
        moved = replace(shapes[i], x=x, y=y, region=region)
        old = shapes[i]
        if math.hypot(old.x - x, old.y - y) < 0.2 or in_region(region, old.x, old.y):
            return None
        others = shapes[:i] + shapes[i + 1 :]
        if any(overlaps(moved, s, scene.ratio) for s in others):
            return None
        ref = _reference(scene, i, rng)
        phrase = rng.choice(REGION_PHRASES[region])
        place = phrase.split(" ", 1)[1] if phrase.startswith(("in ", "on ", "at ", "near ")) else phrase
        instruction = rng.choice(
            (
                f"move {ref} to {place}",
                f"put {ref} {phrase}",
                f"place {ref} {phrase}",
                f"shift {ref} to {place}",
            )
        )
        shapes[i] = moved
        return Edit(kind, scene, replace(plain, shapes=tuple(shapes)), instruction, i, region)
    if kind == "add":
        if len(shapes) >= MAX_OBJECTS:
            return None
        used = {(s.kind, s.colour) for s in shapes}
        kind_ = rng.choice(SHAPES)
        colour = rng.choice([c for c in OBJECT_COLOURS if c != scene.background])
        if (kind_, colour) in used:
            return None
        size = _size_class(rng, len(shapes) + 1)
        radius = _radius(rng, size, scene.ratio)
        region = rng.choice(tuple(REGIONS))
        x, y = _place_in_region(rng, region, radius, scene.ratio)
        added = Shape(kind_, colour, x, y, radius, size, region, filled=rng.random() < 0.85)
        if any(overlaps(added, s, scene.ratio) for s in shapes):
            return None
        phrase = object_phrase(added, rng, with_size=size != "medium" and rng.random() < 0.5, article=False)
        where = rng.choice(REGION_PHRASES[region])
        instruction = rng.choice(
            (
                f"add {_with_article(phrase)} {where}",
                f"put {_with_article(phrase)} {where}",
                f"place {_with_article(phrase)} {where}",
                f"also draw {_with_article(phrase)} {where}",
            )
        )
        target = replace(plain, shapes=(*shapes, added))
        return Edit(kind, scene, target, instruction, len(shapes), f"{colour} {kind_}")
    if kind == "remove":
        if len(shapes) < 2:
            return None
        i = rng.randrange(len(shapes))
        ref = _reference(scene, i, rng)
        instruction = rng.choice(
            (f"remove {ref}", f"delete {ref}", f"take away {ref}", f"get rid of {ref}", f"erase {ref}")
        )
        del shapes[i]
        return Edit(kind, scene, replace(plain, shapes=tuple(shapes)), instruction, i, None)
    if kind in ("grow", "shrink"):
        i = rng.randrange(len(shapes))
        old = shapes[i]
        resized = replace(
            old, radius=resize_radius(old.radius, kind), size="large" if kind == "grow" else "small"
        )
        others = shapes[:i] + shapes[i + 1 :]
        if not fits(resized.x, resized.y, resized.radius, scene.ratio, margin=0.0) or any(
            overlaps(resized, s, scene.ratio) for s in others
        ):
            return None
        if (kind == "grow" and old.radius > 0.2) or (kind == "shrink" and old.radius < 0.12):
            return None
        ref = _reference(scene, i, rng)
        if kind == "grow":
            instruction = rng.choice(
                (
                    f"make {ref} bigger",
                    f"make {ref} larger",
                    f"enlarge {ref}",
                    f"scale up {ref}",
                    f"grow {ref}",
                )
            )
        else:
            instruction = rng.choice(
                (f"make {ref} smaller", f"shrink {ref}", f"scale down {ref}", f"make {ref} tinier")
            )
        shapes[i] = resized
        return Edit(kind, scene, replace(plain, shapes=tuple(shapes)), instruction, i, None)
    raise ValueError(kind)


def resize_radius(radius: float, kind: str) -> float:
    """The radius after a "grow" (x1.5, at most 0.3) or "shrink" (x0.6, at least 0.06) edit."""
    return min(radius * 1.5, 0.3) if kind == "grow" else max(radius * 0.6, 0.06)


# --- rendering ------------------------------------------------------------------------------------


def outline(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The polygon of a shape of radius `r` (pixels) centred at (cx, cy); round ones use 64 points."""

    def ring(rx: float, ry: float, points: int = 64, start: float = 0.0) -> list[tuple[float, float]]:
        return [
            (
                cx + rx * math.cos(start + 2 * math.pi * k / points),
                cy + ry * math.sin(start + 2 * math.pi * k / points),
            )
            for k in range(points)
        ]

    if kind == "circle":
        return ring(r, r)
    if kind == "ellipse":
        return ring(r, r * 0.6)
    if kind == "hexagon":
        return ring(r, r, 6)
    if kind == "pentagon":
        return [(x, y + 0.1 * r) for x, y in ring(r, r, 5, -math.pi / 2)]
    if kind == "square":
        h = r * 0.82
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if kind == "rectangle":
        w, h = r * 0.98, r * 0.55
        return [(cx - w, cy - h), (cx + w, cy - h), (cx + w, cy + h), (cx - w, cy + h)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.62 * r, cy), (cx, cy + r), (cx - 0.62 * r, cy)]
    if kind == "triangle":
        return [
            (cx + r * math.cos(math.radians(a)), cy + 0.12 * r + r * math.sin(math.radians(a)))
            for a in (-90, 30, 150)
        ]
    if kind == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = math.radians(-90 + 36 * k)
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    if kind == "cross":
        a, b = 0.3 * r, 0.92 * r
        unit = [
            (-a, -b),
            (a, -b),
            (a, -a),
            (b, -a),
            (b, a),
            (a, a),
            (a, b),
            (-a, b),
            (-a, a),
            (-b, a),
            (-b, -a),
            (-a, -a),
        ]
        return [(cx + x, cy + y) for x, y in unit]
    if kind == "arrow":
        unit = [
            (-1.0, -0.22),
            (0.15, -0.22),
            (0.15, -0.62),
            (1.0, 0.0),
            (0.15, 0.62),
            (0.15, 0.22),
            (-1.0, 0.22),
        ]
        return [(cx + x * r, cy + y * r) for x, y in unit]
    if kind == "crescent":
        # The outer disk less an inner disk of radius 0.82 shifted right by 0.42, centred on its box.
        d, inner = 0.42, 0.82
        ix = (d * d + 1 - inner * inner) / (2 * d)
        iy = math.sqrt(1 - ix * ix)
        outer_from, inner_from = math.atan2(iy, ix), math.atan2(iy, ix - d)
        points = [(math.cos(a), math.sin(a)) for a in np.linspace(outer_from, 2 * math.pi - outer_from, 48)]
        points += [
            (d + inner * math.cos(a), inner * math.sin(a))
            for a in np.linspace(-inner_from, -2 * math.pi + inner_from, 40)
        ]
        shift = (1 + ix) / 2 - ix  # centre the bounding box
        return [(cx + (x + shift) * r, cy + y * r) for x, y in points]
    if kind == "heart":
        points = []
        for k in range(64):
            t = 2 * math.pi * k / 64
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            points.append((cx + r * x / 17.0, cy + r * (y + 2.5) / 17.0))
        return points
    raise ValueError(kind)


OUTLINE_WIDTH = 0.17
"""An outlined shape's stroke, as a fraction of its radius."""
INK_WIDTH = 0.06
"""Manga's ink outline around filled shapes, as a fraction of the radius."""


def stroke_width(radius_px: float, outlined: bool, style: str) -> float:
    """The width in pixels of a shape's drawn outline (0: none)."""
    if outlined:
        return max(1.0, OUTLINE_WIDTH * radius_px)
    return max(1.0, INK_WIDTH * radius_px) if style == "manga" else 0.0


def manga_tone(rgb: Sequence[float]) -> float:
    """The share of ink a colour becomes in manga: its darkness (0: white paper, 1: solid ink)."""
    luminance = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255
    return float(min(max(1.0 - luminance, 0.0), 1.0))


INK = (20, 20, 20)
PAPER = (250, 250, 250)


def screentone(box: tuple[int, int, int, int], ink: float, period: float) -> np.ndarray:
    """(h, w) bool over the pixel box (x0, y0, x1, y1): a 45° dot screen covering about `ink` of the
    area (white dots on ink past half), aligned to the whole picture."""
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    u, v = (xs + ys) / math.sqrt(2), (xs - ys) / math.sqrt(2)
    distance = np.hypot((u % period) - period / 2, (v % period) - period / 2)
    if ink <= 0.5:
        return np.asarray(distance < period * math.sqrt(ink / math.pi))
    return np.asarray(distance >= period * math.sqrt((1 - ink) / math.pi))


def render(
    scene: Scene,
    width: int,
    height: int,
    supersample: int = 4,
    tones: Sequence[Sequence[float]] | None = None,
) -> Image.Image:
    """The scene at width x height, drawn at `supersample` times the size and reduced (anti-aliased).

    `tones` overrides the palette: the background's RGB then each shape's (the pipeline paints its
    output at full size with the colours its denoiser drew). In manga style the background is paper,
    shapes get ink outlines and a screentone as dark as their colour (solid ink past 90 %)."""
    background_rgb = tuple(tones[0]) if tones is not None else PALETTE[scene.background]
    colours = (
        [tuple(t) for t in tones[1:]] if tones is not None else [PALETTE[s.colour] for s in scene.shapes]
    )
    big_w, big_h = width * supersample, height * supersample
    short = min(width, height) * supersample
    manga = scene.style == "manga"
    if not manga:
        big = Image.new("RGB", (big_w, big_h), _rgb(background_rgb))
        draw = ImageDraw.Draw(big)
        for shape, colour in zip(scene.shapes, colours, strict=True):
            points = outline(shape.kind, shape.x * big_w, shape.y * big_h, shape.radius * short)
            if shape.filled:
                draw.polygon(points, fill=_rgb(colour))
            else:
                stroke(draw, points, _rgb(colour), stroke_width(shape.radius * short, True, "auto"))
        return big.resize((width, height), Image.Resampling.BOX) if supersample > 1 else big
    paper = Image.new("L", (big_w, big_h), 0)  # ink coverage
    period = max(3.0, min(width, height) / 48) * supersample
    for shape, colour in zip(scene.shapes, colours, strict=True):
        points = outline(shape.kind, shape.x * big_w, shape.y * big_h, shape.radius * short)
        mask = Image.new("L", (big_w, big_h), 0)
        ImageDraw.Draw(mask).polygon(points, fill=255)
        box = mask.getbbox()
        if box is None:
            continue
        x0, y0, x1, y1 = box
        inside = np.asarray(mask.crop(box)) > 0
        ink_now = np.array(paper)
        window = ink_now[y0:y1, x0:x1]
        window[inside] = 0
        tone = manga_tone(colour) if shape.filled else 0.0
        if tone > 0.9:
            window[inside] = 255
        elif tone > 0.05:
            window[inside & screentone(box, tone, period)] = 255
        paper = Image.fromarray(ink_now)
        width_px = stroke_width(shape.radius * short, not shape.filled, "manga")
        stroke(ImageDraw.Draw(paper), points, 255, width_px)
    coverage = (
        np.asarray(paper.resize((width, height), Image.Resampling.BOX), dtype=np.float32)[..., None] / 255
    )
    pixels = np.array(PAPER, dtype=np.float32) * (1 - coverage) + np.array(INK, dtype=np.float32) * coverage
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


def stroke(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], fill: Any, width: float) -> None:
    """A closed outline `width` pixels wide, centred on the polygon's edge, with round joints."""
    draw.line([*points, points[0], points[1]], fill=fill, width=max(1, round(width)), joint="curve")


def _rgb(colour: Sequence[float]) -> tuple[int, int, int]:
    return (round(colour[0]), round(colour[1]), round(colour[2]))


def sample_pair(rng: random.Random, ratio: str, count: int | None = None) -> tuple[Scene, str]:
    scene = sample_scene(rng, ratio, count)
    return scene, describe(scene, rng)


def training_ratios() -> Sequence[str]:
    from daguerre.wire import ASPECT_RATIOS

    return ASPECT_RATIOS
