"""The training command: a few steps on CPU, checkpoint and resume, export, load, generate."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.model import SILHOUETTE_CHANNELS, UNSHUFFLE
from daguerre.engine.builtin.pipeline import BuiltinPipeline
from daguerre.engine.builtin.train import (
    ANALOGUES,
    UNKNOWN,
    TrainConfig,
    build_pipeline,
    pipeline_from_checkpoint,
    train,
    warm_start,
    with_unknown_words,
)

TINY = {
    "caption_batch": 4,
    "edit_batch": 2,
    "image_batch": 2,
    "image_areas": (32 * 32,),
    "image_area_weights": (1.0,),
    "log_every": 1,
    "checkpoint_every": 2,
    "hidden_size": 32,
    "text_layers": 1,
    "unet_channels": (16, 32, 32),
    "vocabulary_samples": 300,
    "warmup_steps": 2,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    train(TrainConfig(steps=3, **TINY), out)
    first = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train(TrainConfig(steps=5, **TINY), out)  # resumes from the checkpoint at step 3
    return out, first


def test_progress_is_logged_with_loss_and_throughput(run):
    _, first = run
    assert [r["step"] for r in first] == [1, 2, 3]
    record = first[-1]
    assert record["flow"] > 0 and record["samples_per_s"] > 0
    assert {"t2i_colour", "t2i_shape", "edit_background", "lr", "elapsed_s"} <= set(record)


def test_a_second_run_resumes_where_the_first_stopped(run):
    out, _ = run
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["config"]["seed"] == 0


def test_the_exported_pipeline_loads_and_draws_every_size(run):
    out, _ = run
    pipe = BuiltinPipeline.from_pretrained(out / "pipeline", local_files_only=True)
    for width, height in ((48, 48), (72, 24), (24, 72)):
        image = pipe(
            prompt="a red star on a blue background", width=width, height=height, num_inference_steps=2
        ).images[0]
        assert image.size == (width, height) and image.mode == "RGB"
    source = Image.new("RGB", (40, 24), (37, 99, 235))
    edited = pipe(
        prompt="make the background green", image=source, width=40, height=24, num_inference_steps=2
    )
    assert edited.images[0].size == (40, 24)


def test_same_seed_same_image(run):
    out, _ = run
    pipe = BuiltinPipeline.from_pretrained(out / "pipeline", local_files_only=True)

    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        return np.asarray(
            pipe(
                prompt="a green heart", width=32, height=32, num_inference_steps=2, generator=generator
            ).images[0]
        )

    assert np.array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))


def test_a_checkpoint_can_be_evaluated_while_training(run):
    out, _ = run
    pipe = pipeline_from_checkpoint(out / "checkpoint.pt")
    assert pipe(prompt="a circle", width=32, height=32, num_inference_steps=2).images[0].size == (32, 32)


def test_a_run_can_start_from_an_earlier_checkpoint_with_fewer_conditioning_channels(run, tmp_path):
    """`--init-from`: matching tensors are copied; a denoiser from before the silhouette channels
    existed is widened with zeros, so it draws what it drew before."""
    out, _ = run
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    full = state["ema"]["unet"]["conv_in.weight"]
    narrow = full[:, : full.shape[1] - SILHOUETTE_CHANNELS * UNSHUFFLE**2].clone()
    state["ema"]["unet"]["conv_in.weight"] = narrow
    earlier = tmp_path / "earlier.pt"
    torch.save(state, earlier)

    pipe = build_pipeline(TrainConfig(**TINY))
    warm_start({"text_encoder": pipe.text_encoder, "layout": pipe.layout, "unet": pipe.unet}, earlier)
    widened = pipe.unet.state_dict()["conv_in.weight"]
    assert torch.equal(widened[:, : narrow.shape[1]], narrow)
    assert not widened[:, narrow.shape[1] :].any()
    assert torch.equal(pipe.unet.state_dict()["conv_out.bias"], state["ema"]["unet"]["conv_out.bias"])

    tuned = tmp_path / "tuned"
    train(TrainConfig(steps=1, init_from=str(earlier), **TINY), tuned)
    assert json.loads((tuned / "summary.json").read_text())["config"]["init_from"] == str(earlier)


def test_a_run_can_start_from_a_smaller_world(run, tmp_path, capsys):
    """A model of the first world (five shapes, another vocabulary) warm-starts the second: new
    shapes take the map embedding of the shape they look most like, the text side starts afresh
    where its sizes changed, and the run says which tensors did."""
    out, _ = run
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    ema = state["ema"]
    ema["layout"]["shape_embedding.weight"] = ema["layout"]["shape_embedding.weight"][:5].clone()
    words = ema["text_encoder"]["embeddings.word_embeddings.weight"]
    ema["text_encoder"]["embeddings.word_embeddings.weight"] = words[:-7].clone()
    earlier = tmp_path / "five-shapes.pt"
    torch.save(state, earlier)

    pipe = build_pipeline(TrainConfig(**TINY))
    warm_start({"text_encoder": pipe.text_encoder, "layout": pipe.layout, "unet": pipe.unet}, earlier)
    embedding = pipe.layout.state_dict()["shape_embedding.weight"]
    old = ema["layout"]["shape_embedding.weight"]
    assert torch.equal(embedding[:5], old)
    for kind, like in ANALOGUES.items():
        assert torch.equal(embedding[scenes.SHAPES.index(kind)], old[scenes.SHAPES.index(like)])
    assert not torch.equal(
        pipe.text_encoder.state_dict()["embeddings.word_embeddings.weight"][:-7], words[:-7]
    )
    assert "text_encoder.embeddings.word_embeddings.weight" in capsys.readouterr().out


def test_a_run_can_start_from_a_pipeline_folder(run, tmp_path):
    out, _ = run
    tuned = tmp_path / "from-folder"
    train(TrainConfig(steps=1, init_from=str(out / "pipeline"), **TINY), tuned)
    exported = BuiltinPipeline.from_pretrained(out / "pipeline", local_files_only=True)
    before = exported.unet.state_dict()
    after = torch.load(tuned / "checkpoint.pt", weights_only=False)["model"]["unet"]
    # one step of AdamW moves every weight a little from where the folder's weights started
    assert all((after[k] - v).abs().max() < 0.01 for k, v in before.items() if v.dtype.is_floating_point)


def test_a_checkpoint_of_another_architecture_is_refused(run, tmp_path):
    out, _ = run
    pipe = build_pipeline(TrainConfig(**{**TINY, "unet_channels": (16, 16, 32)}))
    with pytest.raises(ValueError, match="unet"):
        warm_start({"unet": pipe.unet}, out / "checkpoint.pt")


def test_a_text_only_run_keeps_the_denoiser_and_trains_the_layout_heads(run, tmp_path):
    out, _ = run
    tuned = tmp_path / "text"
    train(TrainConfig(steps=2, init_from=str(out / "checkpoint.pt"), text_only=True, **TINY), tuned)
    before = torch.load(out / "checkpoint.pt", weights_only=False)["ema"]
    after = torch.load(tuned / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(after["unet"][k], v) for k, v in before["unet"].items())
    assert any(not torch.equal(after["layout"][k], v) for k, v in before["layout"].items())
    records = [json.loads(line) for line in (tuned / "log.jsonl").read_text().splitlines()]
    assert "flow" not in records[-1] and "t2i_colour" in records[-1]


def test_unknown_words_are_mixed_into_training_texts():
    rng = random.Random(0)
    text = "move the red star to the left"
    noisy = [with_unknown_words(text, rng) for _ in range(50)]
    assert all(set(n.split()) <= set(text.split()) | {UNKNOWN} for n in noisy)
    assert sum(UNKNOWN in n for n in noisy) > 25
    assert any(n.split().count(UNKNOWN) >= 2 for n in noisy)
