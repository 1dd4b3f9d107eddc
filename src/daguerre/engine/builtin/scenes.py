"""Procedural scenes: the built-in model's whole world, deterministic by seed.

A scene is a plain background colour and one to three flat shapes. The generator samples scenes,
describes them in many wordings, renders them anti-aliased at any size, and derives edit pairs
(recolour, change background, move, add, remove) with instruction captions. Training, evaluation
and the shape classifier all draw from here; nothing here needs torch.

    rng = random.Random(7)
    scene = sample_scene(rng, "16:9")
    caption = describe(scene, rng)               # "a small red star in the top left on a blue background"
    image = render(scene, 88, 48)                # PIL RGB image, anti-aliased
    edit = sample_edit(rng, scene)               # Edit(source, target, instruction, kind)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
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
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart")
SHAPE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {  # (singular, plural)
    "circle": (("circle", "circles"), ("disc", "discs"), ("dot", "dots")),
    "square": (("square", "squares"), ("box", "boxes"), ("block", "blocks")),
    "triangle": (("triangle", "triangles"),),
    "star": (("star", "stars"),),
    "heart": (("heart", "hearts"),),
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
RELATIONS: dict[str, tuple[str, ...]] = {  # "A <phrase> B"
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}


@dataclass(frozen=True)
class Shape:
    """One object: kind, colour name, centre (normalised, x right, y down), radius (fraction of the
    short side). `size` is the size class the radius was drawn from."""

    kind: str
    colour: str
    x: float
    y: float
    radius: float
    size: str = "medium"
    region: str | None = None


@dataclass(frozen=True)
class Relation:
    first: int
    relation: str
    second: int


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[Shape, ...]
    ratio: str = "1:1"
    relation: Relation | None = None
    mentioned_size: tuple[bool, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Edit:
    kind: str  # recolour | background | move | add | remove
    source: Scene
    target: Scene
    instruction: str
    index: int | None = None
    """The edited object: its index in the source (recolour, move, remove) or target (add)."""
    value: str | None = None
    """The new colour, region, or added object's description."""


# --- sampling -------------------------------------------------------------------------------------


def _aspect(ratio: str) -> float:
    w, h = ratio.split(":")
    return int(w) / int(h)


def _extent(radius: float, ratio: str) -> tuple[float, float]:
    """A radius (fraction of the short side) as normalised half-extents along x and y."""
    aspect = _aspect(ratio)
    return (radius / aspect, radius) if aspect >= 1 else (radius, radius * aspect)


def _fits(x: float, y: float, radius: float, ratio: str, margin: float = 0.02) -> bool:
    ex, ey = _extent(radius, ratio)
    return ex + margin <= x <= 1 - ex - margin and ey + margin <= y <= 1 - ey - margin


def clamp_inside(x: float, y: float, radius: float, ratio: str, margin: float = 0.02) -> tuple[float, float]:
    ex, ey = _extent(radius, ratio)
    return (
        min(max(x, ex + margin), 1 - ex - margin),
        min(max(y, ey + margin), 1 - ey - margin),
    )


def overlaps(a: Shape, b: Shape, ratio: str, gap: float = 0.03) -> bool:
    """True when two shapes' disks (plus a gap) intersect, measured in short-side units."""
    aspect = _aspect(ratio)
    sx, sy = (aspect, 1.0) if aspect >= 1 else (1.0, 1 / aspect)
    distance = math.hypot((a.x - b.x) * sx, (a.y - b.y) * sy)
    return distance < a.radius + b.radius + gap


def _size_class(rng: random.Random, count: int) -> str:
    weights = {1: (0.3, 0.4, 0.3), 2: (0.35, 0.45, 0.2), 3: (0.5, 0.45, 0.05)}[count]
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


def _satisfies(relation: str, a: Shape, b: Shape, ratio: str) -> bool:
    ex, ey = _extent(max(a.radius, b.radius), ratio)
    if relation == "left of":
        return a.x + ex * 0.5 < b.x - ex * 0.5 and abs(a.y - b.y) < 0.35
    if relation == "right of":
        return a.x - ex * 0.5 > b.x + ex * 0.5 and abs(a.y - b.y) < 0.35
    if relation == "above":
        return a.y + ey * 0.5 < b.y - ey * 0.5 and abs(a.x - b.x) < 0.35
    return a.y - ey * 0.5 > b.y + ey * 0.5 and abs(a.x - b.x) < 0.35


def sample_scene(
    rng: random.Random, ratio: str = "1:1", count: int | None = None, max_count: int = 3, tries: int = 200
) -> Scene:
    """A random scene: 1-3 shapes of distinct (kind, colour) pairs, none overlapping, each placed
    in a named region, freely, or by a relation to another shape."""
    for _ in range(tries):
        n = count or rng.choices((1, 2, 3), weights=(0.45, 0.35, 0.2))[0]
        n = min(n, max_count)
        background = rng.choice(COLOURS)
        taken: set[tuple[str, str]] = set()
        shapes: list[Shape] = []
        use_relation = n >= 2 and rng.random() < 0.35
        relation_kind = rng.choice(tuple(RELATIONS))
        for i in range(n):
            kind = rng.choice(SHAPES)
            colour = rng.choice([c for c in COLOURS if c != background])
            if (kind, colour) in taken:
                break
            taken.add((kind, colour))
            size = _size_class(rng, n)
            radius = _radius(rng, size, ratio)
            region: str | None = None
            if use_relation and i < 2:
                x, y = _place_anywhere(rng, radius, ratio)  # the relation is checked below
            elif rng.random() < 0.75:
                region = rng.choice(tuple(REGIONS))
                x, y = _place_in_region(rng, region, radius, ratio)
            else:
                x, y = _place_anywhere(rng, radius, ratio)
            shapes.append(Shape(kind, colour, x, y, radius, size, region))
        if len(shapes) != n:
            continue
        relation = Relation(0, relation_kind, 1) if use_relation else None
        if relation is not None and not _satisfies(relation_kind, shapes[0], shapes[1], ratio):
            continue
        if any(overlaps(a, b, ratio) for i, a in enumerate(shapes) for b in shapes[i + 1 :]):
            continue
        regions = [s.region for s in shapes if s.region]
        if len(regions) != len(set(regions)):
            continue
        mentioned = tuple((s.size != "medium" and rng.random() < 0.6) or rng.random() < 0.1 for s in shapes)
        return Scene(background, tuple(shapes), ratio, relation, mentioned)
    raise RuntimeError("could not place a scene; loosen the constraints")


# --- captions -------------------------------------------------------------------------------------

_ARTICLES = ("a", "one", "a single")


def colour_word(colour: str, rng: random.Random) -> str:
    return rng.choice(COLOUR_WORDS[colour])


def shape_word(kind: str, rng: random.Random, plural: bool = False) -> str:
    singular, plural_form = rng.choice(SHAPE_WORDS[kind])
    return plural_form if plural else singular


def object_phrase(shape: Shape, rng: random.Random, with_size: bool, article: bool = True) -> str:
    words = []
    if article:
        words.append(rng.choice(_ARTICLES))
    if with_size:
        words.append(rng.choice(SIZE_WORDS[shape.size]))
    words.append(colour_word(shape.colour, rng))
    words.append(shape_word(shape.kind, rng))
    return " ".join(words)


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _background_phrase(colour: str, rng: random.Random) -> str:
    word = colour_word(colour, rng)
    return rng.choice(
        (
            f"on a {word} background",
            f"against a {word} background",
            f"with a {word} background",
            f"over a plain {word} background",
            f"on {word}",
        )
    )


def _object_clause(scene: Scene, index: int, rng: random.Random) -> str:
    shape = scene.shapes[index]
    phrase = object_phrase(shape, rng, scene.mentioned_size[index] if scene.mentioned_size else False)
    if shape.region is not None:
        phrase += " " + rng.choice(REGION_PHRASES[shape.region])
    return phrase


def describe(scene: Scene, rng: random.Random) -> str:
    """A caption in one of many training wordings. Objects are mentioned in the scene's order."""
    clauses = [_object_clause(scene, i, rng) for i in range(len(scene.shapes))]
    if scene.relation is not None:
        r = scene.relation
        first = object_phrase(scene.shapes[r.first], rng, scene.mentioned_size[r.first])
        second = object_phrase(scene.shapes[r.second], rng, scene.mentioned_size[r.second], article=False)
        second = _with_article(second) if rng.random() < 0.5 else f"the {second}"
        clauses[:2] = [f"{first} {rng.choice(RELATIONS[r.relation])} {second}"]
    if len(clauses) == 1:
        objects = clauses[0]
    elif len(clauses) == 2:
        objects = f"{clauses[0]} and {clauses[1]}"
    else:
        objects = f"{clauses[0]}, {clauses[1]} and {clauses[2]}"
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
    """An edit of `scene` and the scene it leads to."""
    for _ in range(tries):
        chosen = (
            kind
            or rng.choices(
                ("recolour", "background", "move", "add", "remove"), weights=(0.25, 0.2, 0.2, 0.2, 0.15)
            )[0]
        )
        edit = _try_edit(rng, scene, chosen)
        if edit is not None:
            return edit
    raise RuntimeError(f"no {kind} edit possible for this scene")


def _try_edit(rng: random.Random, scene: Scene, kind: str) -> Edit | None:
    shapes = list(scene.shapes)
    plain = replace(scene, relation=None)
    if kind == "recolour":
        i = rng.randrange(len(shapes))
        used = {(s.kind, s.colour) for s in shapes}
        options = [c for c in COLOURS if c not in (scene.background, shapes[i].colour)]
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
        return Edit(kind, scene, replace(plain, background=new), instruction, None, new)
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
        if len(shapes) >= 3:
            return None
        used = {(s.kind, s.colour) for s in shapes}
        kind_ = rng.choice(SHAPES)
        colour = rng.choice([c for c in COLOURS if c != scene.background])
        if (kind_, colour) in used:
            return None
        size = _size_class(rng, len(shapes) + 1)
        radius = _radius(rng, size, scene.ratio)
        region = rng.choice(tuple(REGIONS))
        x, y = _place_in_region(rng, region, radius, scene.ratio)
        added = Shape(kind_, colour, x, y, radius, size, region)
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
    raise ValueError(kind)


# --- rendering ------------------------------------------------------------------------------------


def outline(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The polygon of a shape of radius `r` (pixels) centred at (cx, cy); circles use 64 points."""
    if kind == "circle":
        return [
            (cx + r * math.cos(2 * math.pi * k / 64), cy + r * math.sin(2 * math.pi * k / 64))
            for k in range(64)
        ]
    if kind == "square":
        h = r * 0.82
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
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
    if kind == "heart":
        points = []
        for k in range(64):
            t = 2 * math.pi * k / 64
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            points.append((cx + r * x / 17.0, cy + r * (y + 2.5) / 17.0))
        return points
    raise ValueError(kind)


def render(scene: Scene, width: int, height: int, supersample: int = 4) -> Image.Image:
    """The scene at width x height, drawn at `supersample` times the size and reduced (anti-aliased)."""
    big = Image.new("RGB", (width * supersample, height * supersample), PALETTE[scene.background])
    draw = ImageDraw.Draw(big)
    short = min(width, height) * supersample
    for shape in scene.shapes:
        cx, cy = shape.x * width * supersample, shape.y * height * supersample
        draw.polygon(outline(shape.kind, cx, cy, shape.radius * short), fill=PALETTE[shape.colour])
    return big.resize((width, height), Image.Resampling.BOX) if supersample > 1 else big


def sample_pair(rng: random.Random, ratio: str, count: int | None = None) -> tuple[Scene, str]:
    scene = sample_scene(rng, ratio, count)
    return scene, describe(scene, rng)


def training_ratios() -> Sequence[str]:
    from daguerre.wire import ASPECT_RATIOS

    return ASPECT_RATIOS
