"""The diffusers adapter with a tiny Stable Diffusion pipeline built offline at test time."""

from __future__ import annotations

import time

import numpy as np
import pytest

from daguerre.engine import EngineJob, ModelRegistry, load_models_file
from daguerre.engine.config import ModelsConfigError
from daguerre.errors import Cancelled, JobFailure
from daguerre.settings import Settings
from daguerre.wire import ASPECT_RATIOS, FailureCode, GenerationType, State
from support.helpers import make_worker, tiny_sd_models, write_models_file


@pytest.fixture(scope="module")
def engine(tiny_sd_folder, tmp_path_factory):
    specs = load_models_file(tiny_sd_models(tmp_path_factory.mktemp("m") / "models.toml", tiny_sd_folder))
    return ModelRegistry(specs).engine("uni-1")


def job(**fields):
    values = {
        "id": "00000000-0000-4000-8000-000000000000",
        "model": "uni-1",
        "type": GenerationType.IMAGE,
        "prompt": "a red fox in the snow",
        "aspect_ratio": "1:1",
        "seed": 7,
    }
    return EngineJob(**{**values, **fields})


def noop(step, total, preview=None):
    pass


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_every_ratio_gets_its_size(engine, ratio):
    from daguerre.sizing import size_for_ratio

    image = engine.generate(job(aspect_ratio=ratio), noop)
    assert image.size == size_for_ratio(ratio, 64 * 64, 8)
    assert image.mode == "RGB"


def test_same_seed_same_image_other_seed_other_image(engine):
    a = np.asarray(engine.generate(job(seed=1), noop))
    b = np.asarray(engine.generate(job(seed=1), noop))
    c = np.asarray(engine.generate(job(seed=2), noop))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_the_step_hook_sees_every_step(engine):
    steps = []
    engine.generate(job(), lambda step, total, preview=None: steps.append((step, total)))
    assert steps == [(1, 2), (2, 2)]


def test_cancelled_from_the_step_hook_stops_the_run(engine):
    calls = []

    def cancel(step, total, preview=None):
        calls.append(step)
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        engine.generate(job(), cancel)
    assert calls == [1]


@pytest.mark.parametrize(
    "error",
    ["torch.OutOfMemoryError", "MPS backend out of memory (MPS allocated: 17.82 GB)"],
    ids=["cuda", "mps"],
)
def test_running_out_of_memory_fails_the_job_and_gives_the_memory_back(engine, monkeypatch, error):
    import weakref

    import torch

    seen = []  # a weak reference to the run's latents, taken where the device gives out

    def out_of_memory(step, total, preview=None):
        # the latents the engine's preview would draw: the run's last tensors
        latents = next(
            c.cell_contents for c in preview.__closure__ if isinstance(c.cell_contents, torch.Tensor)
        )
        seen.append(weakref.ref(latents))
        if error == "torch.OutOfMemoryError":  # the device gives out mid-run, as CUDA does
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise RuntimeError(error)

    released = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU is pretended, not used
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: released.append(seen[0]() is None))
    with pytest.raises(JobFailure) as failure:
        engine.generate(job(), out_of_memory)
    assert failure.value.code == FailureCode.GENERATION_FAILED
    assert failure.value.reason == "Generation failed: out of memory at 64x64"
    # the cache is emptied once, after the run's tensors became unreachable; no chained exception
    # keeps the failed run's frames (and their tensors) alive
    assert released == [True]
    assert failure.value.__cause__ is None and failure.value.__context__ is None


def test_other_runtime_errors_are_not_taken_for_memory(engine):
    def broken(step, total, preview=None):
        raise RuntimeError("expected scalar type Float but found Half")

    with pytest.raises(RuntimeError, match="expected scalar type"):
        engine.generate(job(), broken)


def test_image_edit_is_refused_cleanly_by_a_text_to_image_pipeline(engine):
    from PIL import Image

    with pytest.raises(JobFailure) as failure:
        engine.generate(
            job(type=GenerationType.IMAGE_EDIT, aspect_ratio=None, source=Image.new("RGB", (8, 8))), noop
        )
    assert failure.value.code == FailureCode.INVALID_REQUEST


def test_the_pipeline_loads_once_per_registry(tiny_sd_folder, tmp_path):
    registry = ModelRegistry(load_models_file(tiny_sd_models(tmp_path / "m.toml", tiny_sd_folder)))
    assert registry.engine("uni-1") is registry.engine("uni-1")


@pytest.mark.parametrize("weights", ["acme/not-downloaded-model", "/nonexistent/folder"])
def test_missing_weights_fail_fast_with_instructions(tmp_path, weights):
    models = tiny_sd_models(tmp_path / "m.toml", tmp_path, weights=weights)
    registry = ModelRegistry(load_models_file(models))
    started = time.monotonic()
    with pytest.raises(JobFailure) as failure:
        registry.engine("uni-1-max")
    assert time.monotonic() - started < 30  # never a hang on a network that is not there
    assert failure.value.code == FailureCode.GENERATION_FAILED
    reason = failure.value.reason
    assert "Model 'uni-1-max' has no weights" in reason and weights in reason
    if weights.startswith("/"):
        assert "save_pretrained" in reason
    else:
        assert f"hf download {weights}" in reason and "DAGUERRE_ALLOW_DOWNLOADS" in reason


def test_missing_weights_become_a_failed_generation(client, auth, tmp_path, store, blobs):
    models = tiny_sd_models(tmp_path / "m.toml", tmp_path, weights="acme/not-downloaded-model")
    worker = make_worker(Settings(data_dir=tmp_path / "data", models_file=models), store, blobs)
    generation_id = client.post("/v1/generations", json={"prompt": "x"}, headers=auth).json()["id"]
    worker.run_once()
    body = client.get(f"/v1/generations/{generation_id}", headers=auth).json()
    assert body["state"] == "failed" and body["failure_code"] == "generation_failed"
    assert "acme/not-downloaded-model" in body["failure_reason"]


def test_the_worker_runs_the_tiny_pipeline_end_to_end(client, auth, tmp_path, store, blobs, tiny_sd_folder):
    import io

    from PIL import Image

    models = tiny_sd_models(tmp_path / "m.toml", tiny_sd_folder)
    worker = make_worker(Settings(data_dir=tmp_path / "data", models_file=models), store, blobs)
    generation_id = client.post(
        "/v1/generations", json={"prompt": "a fox", "aspect_ratio": "9:16"}, headers=auth
    ).json()["id"]
    assert worker.run_once().state == State.COMPLETED
    url = client.get(f"/v1/generations/{generation_id}", headers=auth).json()["output"][0]["url"]
    image = Image.open(io.BytesIO(client.get(url).content))
    assert (image.format, image.size) == ("PNG", (48, 88))


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"*": {"engine": "diffusers", "weights": "x"}}, "needs `pipeline` and `weights`"),
        ({"*": {"engine": "python"}}, "entrypoint"),
        ({"*": {"engine": "tensorflow"}}, "engine"),
        ({"*": {"engine": "diffusers", "pipeline": "P", "weights": "w", "sizes": {"4:3": [64, 48]}}}, "4:3"),
        (
            {"*": {"engine": "diffusers", "pipeline": "P", "weights": "w", "sizes": {"1:1": [60, 60]}}},
            "multiple",
        ),
        ({"uni-1": {"engine": "python", "entrypoint": "a:b"}, "uni-1-max": {}}, "uni-1-max"),
    ],
)
def test_invalid_models_files_are_explained(tmp_path, tables, message):
    with pytest.raises(ModelsConfigError) as error:
        load_models_file(write_models_file(tmp_path / "m.toml", tables))
    assert message in str(error.value)


def test_the_production_example_maps_to_the_documented_models():
    from pathlib import Path

    specs = load_models_file(Path(__file__).parents[2] / "examples" / "models.production.toml")
    assert (specs["uni-1"].pipeline, specs["uni-1"].edit_pipeline) == ("Flux2KleinPipeline", None)
    assert specs["uni-1-max"].pipeline == "QwenImagePipeline"
    assert specs["uni-1-max"].edit_pipeline == "QwenImageEditPlusPipeline"
    assert specs["uni-1"].size_for("16:9") == (1360, 768)
