"""Automatic evaluation of the built-in model on prompts whose wording training never used.

    python -m daguerre.engine.builtin.evaluate [--weights DIR] [--prompts 200] [--edits 200]

Each generated image is read back (`analysis.py`) with a small shape classifier of the evaluation's
own, trained here on the generator's renderings (not the model's shape reader): the background
colour from the border, the objects as connected regions that differ from it, each region's colour
(nearest of the twelve named colours), centre and shape. A prompt's attributes pass when the image shows them:

* background: the border is the requested colour;
* colour: every requested object has a region of its colour;
* count: exactly as many regions as requested objects;
* shape: each matched region has the requested shape;
* position: each named region ("top left") or relation ("left of") holds.

Edits start from a rendered scene and an instruction in held-out wording; an edit passes when the
requested change is there and everything else is kept (the other objects' colour, shape and place,
the background). Results print as a table; `--write` appends them to bench/RESULTS.md and saves a
sample grid to docs/images/builtin-samples.png.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from PIL import Image, ImageDraw

from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.analysis import Analysis, Region, analyse, mask_crop, shape_network
from daguerre.engine.builtin.analysis import classifier as classify_with
from daguerre.sizing import size_table
from daguerre.wire import ASPECT_RATIOS

POSITION_TOLERANCE = 0.2
KEPT_TOLERANCE = 0.1


# --- the shape classifier -------------------------------------------------------------------------


class ShapeClassifier:
    """A small CNN that names the shape of a region mask, trained on the generator's renderings."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network.eval()

    @staticmethod
    def build_network() -> torch.nn.Module:
        return shape_network()

    @classmethod
    def train(cls, samples: int = 6000, seed: int = 1234, epochs: int = 6) -> ShapeClassifier:
        rng = random.Random(seed)
        crops, labels = [], []
        for _ in range(samples):
            ratio = rng.choice(ASPECT_RATIOS)
            scene = scenes.sample_scene(rng, ratio, count=1)
            width, height = size_table(rng.choice((48 * 48, 64 * 64, 96 * 96, 128 * 128)), 8)[ratio]
            regions = analyse(scenes.render(scene, width, height)).regions
            if len(regions) != 1:
                continue
            crops.append(mask_crop(regions[0].mask))
            labels.append(scenes.SHAPES.index(scene.shapes[0].kind))
        x = torch.tensor(np.stack(crops))[:, None]
        y = torch.tensor(labels)
        torch.manual_seed(seed)
        network = cls.build_network()
        optimizer = torch.optim.Adam(network.parameters(), 3e-3)
        for _ in range(epochs):
            order = torch.randperm(len(y))
            for start in range(0, len(y), 128):
                batch = order[start : start + 128]
                loss = torch.nn.functional.cross_entropy(network(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return cls(network)

    @classmethod
    def load_or_train(cls, path: Path) -> ShapeClassifier:
        network = cls.build_network()
        if path.exists():
            network.load_state_dict(torch.load(path, weights_only=True))
            return cls(network)
        classifier = cls.train()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(classifier.network.state_dict(), path)
        return classifier

    def classify(self, mask: np.ndarray) -> str:
        return classify_with(self.network)(mask)

    __call__ = classify  # usable as the `classify` argument of `analyse`


# --- held-out wording -----------------------------------------------------------------------------


def _object(shape: scenes.Shape, rng: random.Random, article: str | None = None) -> str:
    article = article or rng.choice(("a", "one"))
    return f"{article} {scenes.colour_word(shape.colour, rng)} {scenes.shape_word(shape.kind, rng)}"


def heldout_prompt(scene: scenes.Scene, rng: random.Random) -> str:
    """Sentence forms the training captions never use (same content words, new arrangements)."""
    parts = []
    for shape in scene.shapes:
        phrase = _object(shape, rng)
        if shape.region is not None:
            phrase += " " + rng.choice(scenes.REGION_PHRASES[shape.region])
        parts.append(phrase)
    if scene.relation is not None:
        r = scene.relation
        a, b = scene.shapes[r.first], scene.shapes[r.second]
        relation = rng.choice(scenes.RELATIONS[r.relation])
        parts[:2] = [f"{_object(a, rng)} {relation} {_object(b, rng, 'the')}"]
    objects = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    bg = scenes.colour_word(scene.background, rng)
    return rng.choice(
        (
            f"there is {objects} and the background is {bg}",
            f"{bg} background; {objects}",
            f"on a {bg} background you can see {objects}",
            f"{objects}, all on {bg}",
            f"please show {objects} over {bg}",
        )
    )


def heldout_instruction(edit: scenes.Edit, rng: random.Random) -> str:
    """Edit instructions in forms the training instructions never use."""
    source = edit.source
    if edit.kind == "background":
        word = scenes.colour_word(edit.target.background, rng)
        return rng.choice((f"please give it a {word} background", f"the background should be {word}"))
    assert edit.index is not None
    if edit.kind == "add":
        shape = edit.target.shapes[edit.index]
        where = rng.choice(scenes.REGION_PHRASES[shape.region or "centre"])
        return rng.choice(
            (
                f"please add {_object(shape, rng)} {where}",
                f"also there should be {_object(shape, rng)} {where}",
            )
        )
    shape = source.shapes[edit.index]
    ref = f"the {scenes.colour_word(shape.colour, rng)} {scenes.shape_word(shape.kind, rng)}"
    if edit.kind == "recolour":
        word = scenes.colour_word(edit.target.shapes[edit.index].colour, rng)
        return rng.choice((f"please make {ref} {word}", f"{ref} should be {word}"))
    if edit.kind == "move":
        region = edit.value or "centre"
        phrase = rng.choice(scenes.REGION_PHRASES[region])
        return rng.choice((f"please put {ref} {phrase}", f"{ref} should be {phrase}"))
    return rng.choice((f"please remove {ref}", f"{ref} should be gone, remove it"))


# --- scoring --------------------------------------------------------------------------------------


def _axis_ok(region: str, x: float, y: float) -> bool:
    return scenes.in_region(region, x, y, POSITION_TOLERANCE)


def _relation_ok(relation: str, a: Region, b: Region) -> bool:
    margin = 0.03
    if relation == "left of":
        return a.x < b.x - margin
    if relation == "right of":
        return a.x > b.x + margin
    if relation == "above":
        return a.y < b.y - margin
    return a.y > b.y + margin


def _match(shapes: tuple[scenes.Shape, ...], regions: list[Region]) -> list[Region | None]:
    """Each requested shape's region: same colour (and shape when several share the colour)."""
    used: set[int] = set()
    matches: list[Region | None] = []
    for shape in shapes:
        candidates = [i for i, r in enumerate(regions) if i not in used and r.colour == shape.colour]
        best = next(
            (i for i in candidates if regions[i].shape == shape.kind), candidates[0] if candidates else None
        )
        if best is not None:
            used.add(best)
        matches.append(None if best is None else regions[best])
    return matches


def score_prompt(scene: scenes.Scene, analysis: Analysis) -> dict[str, bool | None]:
    matches = _match(scene.shapes, analysis.regions)
    position_checks: list[bool] = []
    for shape, region in zip(scene.shapes, matches, strict=True):
        if shape.region is not None:
            position_checks.append(region is not None and _axis_ok(shape.region, region.x, region.y))
    if scene.relation is not None:
        a, b = matches[scene.relation.first], matches[scene.relation.second]
        position_checks.append(
            a is not None and b is not None and _relation_ok(scene.relation.relation, a, b)
        )
    found = [m for m in matches if m is not None]
    result: dict[str, bool | None] = {
        "background": analysis.background == scene.background,
        "colour": len(found) == len(scene.shapes),
        "count": len(analysis.regions) == len(scene.shapes),
        "shape": all(m.shape == s.kind for s, m in zip(scene.shapes, matches, strict=True) if m is not None)
        if found
        else False,
        "position": all(position_checks) if position_checks else None,
    }
    result["all"] = all(v for v in result.values() if v is not None)
    return result


def _kept(expected: scenes.Shape, regions: list[Region]) -> bool:
    return any(
        r.colour == expected.colour
        and r.shape == expected.kind
        and abs(r.x - expected.x) <= KEPT_TOLERANCE
        and abs(r.y - expected.y) <= KEPT_TOLERANCE
        for r in regions
    )


def score_edit(edit: scenes.Edit, analysis: Analysis) -> dict[str, bool]:
    """changed: the requested change is visible; kept: the rest of the scene is as it was."""
    regions = analysis.regions
    target, source = edit.target, edit.source
    if edit.kind == "background":
        changed = analysis.background == target.background
        others = list(source.shapes)
    elif edit.kind == "recolour":
        assert edit.index is not None
        new = target.shapes[edit.index]
        changed = _kept(new, regions)
        others = [s for i, s in enumerate(source.shapes) if i != edit.index]
    elif edit.kind == "move":
        assert edit.index is not None and edit.value is not None
        moved = target.shapes[edit.index]
        changed = any(
            r.colour == moved.colour and r.shape == moved.kind and _axis_ok(edit.value, r.x, r.y)
            for r in regions
        )
        others = [s for i, s in enumerate(source.shapes) if i != edit.index]
    elif edit.kind == "add":
        assert edit.index is not None
        new = target.shapes[edit.index]
        changed = any(
            r.colour == new.colour and r.shape == new.kind and _axis_ok(new.region or "centre", r.x, r.y)
            for r in regions
        )
        others = list(source.shapes)
    else:  # remove
        assert edit.index is not None
        gone = source.shapes[edit.index]
        changed = not any(r.colour == gone.colour and r.shape == gone.kind for r in regions)
        others = [s for i, s in enumerate(source.shapes) if i != edit.index]
    kept = all(_kept(s, regions) for s in others) and (
        edit.kind == "background" or analysis.background == source.background
    )
    count_ok = len(regions) == len(target.shapes)
    return {"changed": changed, "kept": kept and count_ok, "pass": changed and kept and count_ok}


# --- running it -----------------------------------------------------------------------------------


@dataclass
class Tier:
    name: str
    steps: int
    pixels: int


TIERS = (Tier("uni-1", 8, 96 * 96), Tier("uni-1-max", 24, 128 * 128))


def evaluate(
    pipe: Any, tier: Tier, prompts: int, edits: int, seed: int, classifier: ShapeClassifier
) -> tuple[dict[str, Any], list[tuple[Image.Image, str]]]:
    rng = random.Random(seed)
    totals: dict[str, list[bool]] = {}
    samples: list[tuple[Image.Image, str]] = []
    started = time.monotonic()
    for i in range(prompts):
        ratio = ASPECT_RATIOS[i % len(ASPECT_RATIOS)]
        scene = scenes.sample_scene(rng, ratio)
        prompt = heldout_prompt(scene, rng)
        width, height = size_table(tier.pixels, 8)[ratio]
        generator = torch.Generator().manual_seed(seed + i)
        image = pipe(
            prompt=prompt, width=width, height=height, num_inference_steps=tier.steps, generator=generator
        ).images[0]
        for key, ok in score_prompt(scene, analyse(image, classifier)).items():
            if ok is not None:
                totals.setdefault(key, []).append(ok)
        if len(samples) < 12:
            samples.append((image, prompt))
    per_kind: dict[str, list[bool]] = {}
    for i in range(edits):
        ratio = ASPECT_RATIOS[i % len(ASPECT_RATIOS)]
        kind = ("recolour", "background", "move", "add", "remove")[i % 5]
        scene = scenes.sample_scene(
            rng, ratio, max_count=2 if kind == "add" else 3, count=2 if kind == "remove" else None
        )
        edit = scenes.sample_edit(rng, scene, kind)
        instruction = heldout_instruction(edit, rng)
        width, height = size_table(tier.pixels, 8)[ratio]
        source = scenes.render(edit.source, width, height)
        generator = torch.Generator().manual_seed(seed + 100_000 + i)
        image = pipe(
            prompt=instruction,
            width=width,
            height=height,
            num_inference_steps=tier.steps,
            image=source,
            generator=generator,
        ).images[0]
        result = score_edit(edit, analyse(image, classifier))
        per_kind.setdefault(kind, []).append(result["pass"])
        totals.setdefault("edit", []).append(result["pass"])
        if i < 5:
            samples.append((_side_by_side(source, image), instruction))
    elapsed = time.monotonic() - started
    rates = {key: sum(v) / len(v) for key, v in totals.items()}
    rates.update({f"edit_{k}": sum(v) / len(v) for k, v in per_kind.items()})
    report = {
        "tier": tier.name,
        "prompts": prompts,
        "edits": edits,
        "rates": rates,
        "seconds": round(elapsed, 1),
    }
    return report, samples


def _side_by_side(source: Image.Image, result: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (source.width * 2 + 4, source.height), "white")
    canvas.paste(source, (0, 0))
    canvas.paste(result, (source.width + 4, 0))
    return canvas


def sample_grid(samples: list[tuple[Image.Image, str]], cell: int = 256, columns: int = 4) -> Image.Image:
    rows = (len(samples) + columns - 1) // columns
    caption_height = 54
    grid = Image.new("RGB", (columns * cell, rows * (cell + caption_height)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (image, caption) in enumerate(samples):
        scale = min((cell - 8) / image.width, (cell - 8) / image.height)
        shown = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS)
        x0, y0 = (i % columns) * cell, (i // columns) * (cell + caption_height)
        grid.paste(shown, (x0 + (cell - shown.width) // 2, y0 + (cell - shown.height) // 2))
        words, lines, line = caption.split(), [], ""
        for word in words:
            if len(line) + len(word) + 1 > 38:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        draw.multiline_text((x0 + 6, y0 + cell + 2), "\n".join(lines[:3]), fill=(30, 30, 30))
    return grid


def main(
    weights: Annotated[
        Path | None, typer.Option(help="Pipeline folder (default: the shipped weights).")
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Evaluate a training checkpoint instead.")] = None,
    prompts: Annotated[int, typer.Option(help="Held-out prompts per tier.")] = 180,
    edits: Annotated[int, typer.Option(help="Held-out edits per tier.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the held-out set.")] = 2026,
    tiers: Annotated[str, typer.Option(help="Comma-separated tiers to evaluate.")] = "uni-1,uni-1-max",
    write: Annotated[bool, typer.Option(help="Append to bench/RESULTS.md and save the sample grid.")] = False,
    classifier_path: Annotated[Path, typer.Option(help="Cache of the shape classifier.")] = Path(
        "runs/shape-classifier.pt"
    ),
) -> None:
    """Score the built-in model on held-out prompts and edits."""
    from daguerre.engine.builtin import WEIGHTS
    from daguerre.engine.builtin.pipeline import BuiltinPipeline

    torch.set_num_threads(2)
    if checkpoint is not None:
        from daguerre.engine.builtin.train import pipeline_from_checkpoint

        pipe = pipeline_from_checkpoint(checkpoint)
    else:
        pipe = BuiltinPipeline.from_pretrained(weights or WEIGHTS, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    classifier = ShapeClassifier.load_or_train(classifier_path)
    reports = []
    for tier in TIERS:
        if tier.name not in tiers.split(","):
            continue
        report, samples = evaluate(pipe, tier, prompts, edits, seed, classifier)
        reports.append(report)
        print(json.dumps(report, indent=2), flush=True)
        if write and tier.name == "uni-1":
            Path("docs/images").mkdir(parents=True, exist_ok=True)
            sample_grid(samples).save("docs/images/builtin-samples.png")
    if write:
        write_results(reports, weights, seed)


def write_results(reports: list[dict[str, Any]], weights: Path | None, seed: int) -> None:
    import os
    import platform
    from datetime import UTC, datetime

    keys = (
        "background",
        "colour",
        "position",
        "shape",
        "count",
        "all",
        "edit",
        "edit_recolour",
        "edit_background",
        "edit_move",
        "edit_add",
        "edit_remove",
    )
    targets = {"background": 0.95, "colour": 0.95, "position": 0.85, "shape": 0.80, "edit": 0.80}
    lines = [
        f"### Built-in model: held-out pass rates — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. Command: "
        f"`python -m daguerre.engine.builtin.evaluate --prompts {reports[0]['prompts']} "
        f"--edits {reports[0]['edits']} --write` (weights: {weights or 'shipped'}, "
        f"held-out seed {seed}).",
        "",
        "| tier | prompts | edits | " + " | ".join(keys) + " |",
        "|---|---:|---:|" + "---:|" * len(keys),
    ]
    for report in reports:
        rates = report["rates"]
        cells = [f"{rates[k]:.0%}" if k in rates else "—" for k in keys]
        lines.append(
            f"| {report['tier']} | {report['prompts']} | {report['edits']} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Targets: " + ", ".join(f"{k} ≥ {v:.0%}" for k, v in targets.items()) + ".",
        "",
    ]
    results = Path("bench/RESULTS.md")
    existing = results.read_text() if results.exists() else "# Benchmark results\n"
    results.write_text(existing.rstrip("\n") + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
