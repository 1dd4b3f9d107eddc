"""Engines: turn an EngineJob into an image, per the models configuration.

    registry = ModelRegistry(load_models_file(path), allow_downloads=False)
    image = registry.engine("uni-1").generate(job, on_step)

A registry belongs to one worker: each engine is built on first use and reused for every later job,
so pipelines load once per worker. A model that cannot be built (missing weights, say) raises a
`JobFailure` that names the model and how to fix it, and is tried again on the next job.
"""

from __future__ import annotations

import importlib
import sys
import threading

from daguerre.engine.base import DrawPreview, Engine, EngineJob, StepHook, seed_for
from daguerre.engine.config import DEFAULT_MODELS_FILE, ModelsConfigError, ModelSpec, load_models_file
from daguerre.errors import JobFailure
from daguerre.wire import FailureCode


class ModelRegistry:
    def __init__(self, specs: dict[str, ModelSpec], *, allow_downloads: bool = False) -> None:
        self.specs = specs
        self.allow_downloads = allow_downloads
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def engine(self, model: str) -> Engine:
        with self._lock:
            engine = self._engines.get(model)
            if engine is None:
                engine = self._engines[model] = build_engine(self.specs[model], self.allow_downloads)
            return engine


def set_engine_threads(count: int) -> None:
    """Use `count` CPU threads for each engine call of this process from now on (torch's intra-op
    threads; process-wide). Nothing to do while torch is not loaded: engines without it (remote,
    scripted) have no threads to size."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != count:
        torch.set_num_threads(count)


def build_engine(spec: ModelSpec, allow_downloads: bool) -> Engine:
    if spec.engine == "builtin":
        from daguerre.engine.builtin import BuiltinEngine

        return BuiltinEngine(
            spec.name,
            weights=spec.weights,
            steps=spec.steps,
            pixels=spec.pixels,
            output_pixels=spec.output_pixels or spec.pixels,
            temperature=spec.temperature,
        )
    if spec.engine == "remote":
        from daguerre.engine.remote import RemoteEngine

        assert spec.base_url is not None
        return RemoteEngine(
            spec.name,
            spec.base_url,
            api_key_env=spec.api_key_env,
            model=spec.upstream_model,
            poll_s=spec.poll_s,
            max_retries=spec.max_retries,
            retry_wait_cap_s=spec.retry_wait_cap_s,
        )
    if spec.engine == "diffusers":
        from daguerre.engine.diffusers import DiffusersEngine

        return DiffusersEngine(spec, allow_downloads=allow_downloads)
    assert spec.entrypoint is not None
    module_name, _, attribute = spec.entrypoint.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise JobFailure(
            FailureCode.GENERATION_FAILED,
            f"Model '{spec.name}' cannot be loaded: entrypoint {spec.entrypoint!r} not found ({exc})",
        ) from exc
    engine: Engine = factory(**spec.options)
    return engine


__all__ = [
    "DEFAULT_MODELS_FILE",
    "DrawPreview",
    "Engine",
    "EngineJob",
    "ModelRegistry",
    "ModelSpec",
    "ModelsConfigError",
    "StepHook",
    "build_engine",
    "load_models_file",
    "seed_for",
    "set_engine_threads",
]
