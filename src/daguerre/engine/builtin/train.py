"""Train the built-in model on CPU: `python -m daguerre.engine.builtin.train --out runs/builtin`.

Every step draws fresh scenes from the generator (in a data-loader process) and trains every part:

* the text encoder and layout heads on captions (text-to-image: the ground-truth layout) and on edit
  instructions (the edit's kind, the object it refers to, the new colour, shape, place, background);
* the shape reader on the masks of the rendered objects, as `analysis.analyse` finds them;
* the denoiser with rectified flow on rendered scenes, conditioned on their ground-truth layout maps,
  at a random aspect ratio and size class each step; a third of them are edits, which also see the
  kept part of the source picture.

Progress goes to stdout and to `<out>/log.jsonl` (losses, samples per second, learning rate).
Checkpoints (`<out>/checkpoint.pt`, written atomically) let a run resume where it stopped; the data
stream is seeded by `--seed` and the step, so a resumed run is reproducible. `--export DIR` writes
the EMA weights as a diffusers pipeline (`save_pretrained`), which is what daguerre ships.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
import typer
from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel
from torch.utils.data import DataLoader, IterableDataset
from transformers import BertModel

from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.analysis import analyse, mask_crop
from daguerre.engine.builtin.editing import edit_targets, keep_mask
from daguerre.engine.builtin.model import (
    EDIT_CHANNELS,
    UNSHUFFLE,
    Layout,
    LayoutModel,
    edit_channels,
    network_output,
    preconditioning,
)
from daguerre.engine.builtin.pipeline import BuiltinPipeline, layout_from_scenes, relation_labels, to_tensor
from daguerre.engine.builtin.text import build_tokenizer, text_encoder_config, vocabulary
from daguerre.sizing import size_table
from daguerre.wire import ASPECT_RATIOS

UNKNOWN = "[UNK]"  # the tokenizer's unknown-word token, written out in a text


@dataclass
class TrainConfig:
    steps: int = 6000
    seed: int = 0
    threads: int = 2
    caption_batch: int = 64
    edit_batch: int = 32
    image_batch: int = 24
    edit_image_fraction: float = 1 / 3
    learning_rate: float = 5e-4
    layout_learning_rate: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.995
    image_areas: tuple[int, ...] = (48 * 48, 64 * 64, 80 * 80, 96 * 96)
    image_area_weights: tuple[float, ...] = (0.3, 0.35, 0.2, 0.15)
    one_object_until: int = 300
    two_objects_until: int = 900
    three_objects_until: int = 1500
    text_only_crops: int = 12  # scenes drawn per text-only step to train the shape reader on
    log_every: int = 10
    checkpoint_every: int = 100
    hidden_size: int = 128
    text_layers: int = 3
    unet_channels: tuple[int, ...] = (48, 96, 96)
    vocabulary_samples: int = 20000
    init_from: str | None = None  # a checkpoint whose EMA weights the run starts from
    word_noise: float = 0.5  # the share of captions and instructions with unknown words mixed in
    text_only: bool = False  # train the text encoder and layout heads only (the denoiser is kept)


# --- data -----------------------------------------------------------------------------------------


def _max_objects(config: TrainConfig, step: int) -> int:
    if step < config.one_object_until:
        return 1
    if step < config.two_objects_until:
        return 2
    return 3 if step < config.three_objects_until else scenes.MAX_OBJECTS


def with_unknown_words(text: str, rng: random.Random) -> str:
    """The text with some words replaced by, and a few more inserted as, the unknown-word token:
    people phrase things in words the templates never use ("the star should be gone"), so the
    layout heads must read the words they know and ignore the rest."""
    words = [UNKNOWN if rng.random() < 0.1 else word for word in text.split()]
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        words.insert(rng.randint(0, len(words)), UNKNOWN)
    return " ".join(words)


def make_batch(config: TrainConfig, step: int) -> dict[str, Any]:
    """Everything one training step needs, drawn from the generator with a seed fixed by the step."""
    rng = random.Random(config.seed * 1_000_003 + step)
    max_objects = _max_objects(config, step)

    def noisy(text: str) -> str:
        return with_unknown_words(text, rng) if rng.random() < config.word_noise else text

    captions, caption_ratios, caption_scenes = [], [], []
    for _ in range(config.caption_batch):
        ratio = rng.choice(ASPECT_RATIOS)
        scene = scenes.sample_scene(rng, ratio, max_count=max_objects)
        captions.append(noisy(scenes.describe(scene, rng)))
        caption_ratios.append(ratio)
        caption_scenes.append(scene)
    instruction_edits = []
    for _ in range(config.edit_batch):
        scene = scenes.sample_scene(rng, rng.choice(ASPECT_RATIOS), max_count=max_objects, groups=False)
        instruction_edits.append(scenes.sample_edit(rng, scene))
    batch = {
        "captions": captions,
        "caption_ratios": caption_ratios,
        "caption_layout": layout_from_scenes(caption_scenes),
        "caption_relations": relation_labels(caption_scenes),
        "instructions": [noisy(e.instruction) for e in instruction_edits],
        "edit_ratios": [e.source.ratio for e in instruction_edits],
        "edit_targets": edit_targets(instruction_edits),
    }
    if config.text_only:
        crops, crop_labels = [], []
        for _ in range(config.text_only_crops):
            ratio = rng.choice(ASPECT_RATIOS)
            scene = scenes.sample_scene(rng, ratio, max_count=max_objects, style="auto")
            picture = scenes.render(scene, *size_table(rng.choice(config.image_areas), 8)[ratio])
            for crop, label in _shape_crops(picture, scene):
                crops.append(crop)
                crop_labels.append(label)
        return {**batch, **_crop_tensors(crops, crop_labels)}
    # The denoiser's images, all at one size this step; the first ones are edits.
    ratio = rng.choice(ASPECT_RATIOS)
    area = rng.choices(config.image_areas, weights=config.image_area_weights)[0]
    width, height = size_table(area, 8)[ratio]
    n_edits = round(config.image_batch * config.edit_image_fraction)
    targets, pictures, edit_maps, crops, crop_labels = [], [], [], [], []
    for i in range(config.image_batch):
        scene = scenes.sample_scene(rng, ratio, max_count=max_objects, groups=i >= n_edits)
        picture = scenes.render(scene, width, height)
        channels = torch.zeros(EDIT_CHANNELS, height, width)
        if i < n_edits:
            edit = scenes.sample_edit(rng, scene)
            source = np.asarray(picture)
            keep = torch.from_numpy(
                keep_mask(edit.source, edit.target, source, np.array(scenes.PALETTE[scene.background]))
            )
            channels = edit_channels(to_tensor(picture), keep[None, None])[0]
            scene, picture = edit.target, scenes.render(edit.target, width, height)
        targets.append(scene)
        pictures.append(to_tensor(picture)[0])
        edit_maps.append(channels)
        if scene.style != "manga":
            for crop, label in _shape_crops(picture, scene):
                crops.append(crop)
                crop_labels.append(label)
    return {
        **batch,
        "images": torch.stack(pictures),
        "image_layout": layout_from_scenes(targets),
        "edit_channels": torch.stack(edit_maps),
        **_crop_tensors(crops, crop_labels),
    }


def _crop_tensors(crops: list[np.ndarray], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "shape_crops": torch.from_numpy(np.stack(crops))[:, None] if crops else torch.zeros(0, 1, 32, 32),
        "shape_labels": torch.tensor(labels, dtype=torch.long),
    }


def _shape_crops(picture: Any, scene: scenes.Scene) -> list[tuple[np.ndarray, int]]:
    """The mask crop of each object the analysis finds, labelled with the shape drawn nearest it."""
    found = []
    for region in analyse(picture).regions:
        nearest = min(scene.shapes, key=lambda s: (s.x - region.x) ** 2 + (s.y - region.y) ** 2, default=None)
        if nearest is not None and abs(nearest.x - region.x) + abs(nearest.y - region.y) < nearest.radius:
            found.append((mask_crop(region.mask), scenes.SHAPES.index(nearest.kind)))
    return found


class SceneStream(IterableDataset[dict[str, Any]]):
    def __init__(self, config: TrainConfig, start: int) -> None:
        self.config = config
        self.start = start

    def __iter__(self) -> Any:
        step = self.start
        while True:
            yield make_batch(self.config, step)
            step += 1


# --- model ----------------------------------------------------------------------------------------


def build_pipeline(config: TrainConfig) -> BuiltinPipeline:
    torch.manual_seed(config.seed)
    tokenizer = build_tokenizer(vocabulary(samples=config.vocabulary_samples, seed=config.seed))
    text_encoder = BertModel(text_encoder_config(len(tokenizer), config.hidden_size, config.text_layers))
    layout = LayoutModel(hidden_size=config.hidden_size)
    channels = 3 + layout.conditioning_channels
    unet = UNet2DModel(
        sample_size=32,
        in_channels=channels * UNSHUFFLE * UNSHUFFLE,
        out_channels=3 * UNSHUFFLE * UNSHUFFLE,
        block_out_channels=config.unet_channels,
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * len(config.unet_channels),
        up_block_types=("UpBlock2D",) * len(config.unet_channels),
        norm_num_groups=8,
    )
    return BuiltinPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        layout=layout,
        unet=unet,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )


def _modules(pipe: BuiltinPipeline) -> dict[str, torch.nn.Module]:
    return {"text_encoder": pipe.text_encoder, "layout": pipe.layout, "unet": pipe.unet}


def layout_losses(pipe: BuiltinPipeline, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    text = pipe.layout.predict(pipe.encode(batch["captions"], batch["caption_ratios"]))
    edits = pipe.layout.predict(pipe.encode(batch["instructions"], batch["edit_ratios"], edit=True))
    terms = pipe.layout.loss(text, batch["caption_layout"], batch["caption_relations"])
    losses = {f"t2i_{k}": v for k, v in terms.items()}
    edit_terms = pipe.layout.edit_loss(edits, batch["edit_targets"])
    losses.update({f"edit_{k}": v for k, v in edit_terms.items()})
    if len(batch.get("shape_labels", ())):
        logits = pipe.layout.shape_reader(batch["shape_crops"])
        losses["shape_reader"] = F.cross_entropy(logits, batch["shape_labels"])
    return losses


def flow_loss(
    pipe: BuiltinPipeline,
    images: torch.Tensor,
    layout: Layout,
    edit_channels: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Rectified flow with EDM preconditioning: the network's output is scored against the target
    that makes c_skip * x_t + c_out * F equal the clean image, which has unit variance at every t.
    (Plain x-prediction left the network copying the input noise at high t: measured, after 1,450
    steps it still drew nothing from the layout alone.)"""
    b, _, h, w = images.shape
    # Half logit-normal (most weight mid-way), half uniform (the ends matter for few-step sampling).
    t = torch.where(
        torch.rand(b, generator=generator) < 0.5,
        torch.sigmoid(torch.randn(b, generator=generator)),
        torch.rand(b, generator=generator),
    ).clamp(1e-3, 1.0)
    noise = torch.randn(images.shape, generator=generator)
    tt = t.view(-1, 1, 1, 1)
    noisy = (1 - tt) * images + tt * noise
    _, c_skip, c_out = preconditioning(tt)
    conditioning = pipe.layout.conditioning(layout, edit_channels, w, h)
    output = network_output(pipe.unet, noisy, conditioning, t)
    return F.mse_loss(output, (images - c_skip * noisy) / c_out)


def _learning_rate(config: TrainConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


# --- the loop -------------------------------------------------------------------------------------


def train(config: TrainConfig, out: Path, resume: bool = True, export: Path | None = None) -> Path:
    torch.set_num_threads(config.threads)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"
    pipe = build_pipeline(config)
    modules = _modules(pipe)
    parameters = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(
        [
            {"params": list(pipe.unet.parameters()), "base_lr": config.learning_rate},
            {
                "params": [*pipe.text_encoder.parameters(), *pipe.layout.parameters()],
                "base_lr": config.layout_learning_rate,
            },
        ],
        lr=config.learning_rate,
        weight_decay=0.01,
    )
    if config.init_from is not None:
        warm_start(modules, Path(config.init_from))
    ema = {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
    step, elapsed = 0, 0.0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        for name, module in modules.items():
            module.load_state_dict(state["model"][name])
        optimizer.load_state_dict(state["optimizer"])
        ema = state["ema"]
        step, elapsed = state["step"], state["elapsed"]
        print(f"resumed from step {step} ({elapsed / 60:.1f} min trained)", flush=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    generator = torch.Generator().manual_seed(config.seed * 7919 + step)
    loader = DataLoader(SceneStream(config, step), batch_size=None, num_workers=1, prefetch_factor=4)
    log_path = out / "log.jsonl"
    started = time.monotonic() - elapsed
    window_start, window_samples = time.monotonic(), 0
    for module in modules.values():
        module.train()
    for batch in loader:
        if step >= config.steps:
            break
        lr = _learning_rate(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["base_lr"] / config.learning_rate
        losses = layout_losses(pipe, batch)
        if not config.text_only:
            losses["flow"] = flow_loss(
                pipe, batch["images"], batch["image_layout"], batch["edit_channels"], generator
            )
        total = torch.stack(list(losses.values())).sum()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        with torch.no_grad():
            for name, module in modules.items():
                for key, value in module.state_dict().items():
                    if value.dtype.is_floating_point:
                        ema[name][key].mul_(config.ema_decay).add_(value, alpha=1 - config.ema_decay)
                    else:
                        ema[name][key].copy_(value)
        step += 1
        window_samples += len(batch["captions"]) + len(batch["instructions"]) + len(batch.get("images", ()))
        if step % config.log_every == 0 or step == config.steps:
            now = time.monotonic()
            record: dict[str, Any] = {
                "step": step,
                "elapsed_s": round(now - started, 1),
                "lr": lr,
                "samples_per_s": round(window_samples / (now - window_start), 1),
                "image_size": list(batch["images"].shape[-2:]) if "images" in batch else None,
                **{k: round(float(v.detach()), 4) for k, v in losses.items()},
            }
            with open(log_path, "a") as log:
                log.write(json.dumps(record) + "\n")
            print(
                f"step {step}/{config.steps}  flow {record.get('flow', float('nan')):.4f}  "
                f"layout {sum(record[k] for k in losses if k != 'flow'):.3f}  "
                f"{record['samples_per_s']} samples/s  {record['elapsed_s'] / 60:.1f} min",
                flush=True,
            )
            window_start, window_samples = now, 0
        if step % config.checkpoint_every == 0 or step == config.steps:
            _save_checkpoint(checkpoint_path, modules, optimizer, ema, step, time.monotonic() - started)
    final = out / "pipeline"
    export_pipeline(pipe, ema, final)
    if export is not None:
        export_pipeline(pipe, ema, export)
    summary = {
        "steps": step,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "config": asdict(config),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return final


ANALOGUES = {
    "hexagon": "circle",
    "pentagon": "circle",
    "ellipse": "circle",
    "diamond": "square",
    "rectangle": "square",
    "cross": "star",
    "crescent": "heart",
    "arrow": "triangle",
}
"""A shape the denoiser has not seen starts with the map embedding of the one it looks most like."""
TEXT_SIDE = ("text_encoder", "layout")


def earlier_weights(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The weights to start from: a checkpoint's EMA weights, or a pipeline folder's (the shipped
    weights are one)."""
    if (path / "model_index.json").is_file():
        from safetensors.torch import load_file

        return {
            name: load_file(next((path / name).glob("*.safetensors")))
            for name in ("text_encoder", "layout", "unet")
        }
    state: dict[str, dict[str, torch.Tensor]] = torch.load(path, weights_only=False)["ema"]
    return state


def warm_start(modules: dict[str, torch.nn.Module], path: Path, earlier_shapes: int | None = None) -> None:
    """Start from earlier weights (`earlier_weights`). Tensors of the same shape are copied. A
    denoiser trained before the conditioning gained channels (always appended last) is widened with
    zero weights for them, so it starts out drawing exactly what it drew before and learns to use
    them; the shape embedding gains rows for new shapes (copied from `ANALOGUES`). On the text side
    (encoder, layout heads, shape reader), which retrains in minutes, tensors whose shape changed
    with the vocabulary or the world start afresh and are listed. Any other mismatch is refused."""
    earlier = earlier_weights(path)
    fresh: list[str] = []
    for name, module in modules.items():
        own = module.state_dict()
        for key, value in earlier[name].items():
            if key not in own:
                continue
            target = own[key]
            if target.shape == value.shape:
                target.copy_(value)
            elif key == "conv_in.weight" and target.shape[1] > value.shape[1]:
                target.zero_()
                target[:, : value.shape[1]].copy_(value)
            elif key == "shape_embedding.weight" and target.shape[0] > value.shape[0]:
                old = value.shape[0]
                target[:old].copy_(value)
                for row, kind in enumerate(scenes.SHAPES[old:], start=old):
                    target[row].copy_(value[scenes.SHAPES.index(ANALOGUES.get(kind, "circle"))])
            elif name in TEXT_SIDE:
                fresh.append(f"{name}.{key}")
            else:
                shapes = f"{tuple(value.shape)}, not {tuple(target.shape)}"
                raise ValueError(f"{path}: {name}.{key} has shape {shapes}")
    print(f"started from the weights of {path}", flush=True)
    if fresh:
        print(f"trained afresh (the world or vocabulary changed): {', '.join(fresh)}", flush=True)


def _save_checkpoint(
    path: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    ema: dict[str, dict[str, torch.Tensor]],
    step: int,
    elapsed: float,
) -> None:
    state = {
        "step": step,
        "elapsed": elapsed,
        "model": {name: m.state_dict() for name, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "ema": ema,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def pipeline_from_checkpoint(path: Path) -> BuiltinPipeline:
    """The EMA weights of a training checkpoint as a pipeline (to evaluate a run while it trains)."""
    config_path = path.parent / "config.json"
    config = TrainConfig()
    if config_path.exists():
        values: dict[str, Any] = json.loads(config_path.read_text())
        config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})  # type: ignore[arg-type]
    pipe = build_pipeline(config)
    state = torch.load(path, weights_only=False)
    for name, module in _modules(pipe).items():
        module.load_state_dict(state["ema"][name])
        module.eval()
    return pipe


def export_pipeline(pipe: BuiltinPipeline, ema: dict[str, dict[str, torch.Tensor]], folder: Path) -> None:
    """Write the EMA weights as a diffusers pipeline folder (model_index.json + components)."""
    live = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in _modules(pipe).items()}
    for name, module in _modules(pipe).items():
        module.load_state_dict(ema[name])
        module.eval()
    pipe.save_pretrained(folder)
    for name, module in _modules(pipe).items():
        module.load_state_dict(live[name])


def main(
    out: Annotated[
        Path, typer.Option(help="Run folder: checkpoint, log.jsonl, the exported pipeline.")
    ] = Path("runs/builtin"),
    steps: Annotated[int, typer.Option(help="Total training steps.")] = TrainConfig.steps,
    seed: Annotated[int, typer.Option(help="Seed of the weights and of the data stream.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore an existing checkpoint.")] = False,
    export: Annotated[Path | None, typer.Option(help="Also write the final pipeline here.")] = None,
    image_batch: Annotated[int, typer.Option(help="Denoiser images per step.")] = TrainConfig.image_batch,
    init_from: Annotated[
        Path | None, typer.Option(help="Start from the weights of this checkpoint (fine-tuning).")
    ] = None,
    text_only: Annotated[
        bool, typer.Option("--text-only", help="Train the text encoder and layout heads only.")
    ] = False,
) -> None:
    """Train (or resume training) the built-in text-to-image and edit model."""
    config = TrainConfig(
        steps=steps,
        seed=seed,
        threads=threads,
        image_batch=image_batch,
        init_from=str(init_from) if init_from is not None else None,
        text_only=text_only,
    )
    final = train(config, out, resume=not fresh, export=export)
    typer.echo(f"pipeline written to {final}")


if __name__ == "__main__":
    typer.run(main)
