"""The stages of one generation: the same code however it is run, by the embedded queue
(worker.loop) or by a durable-execution engine's activities.

    prepared = prepare(ctx, record, token)          # budget, prompt and input checks
    generated = generate(ctx, prepared, on_progress)  # the engine; the output written to the blobs
    finalize(ctx, prepared.request, generated)      # output check, then the guarded completion

Each stage takes what the previous one returned. `EngineRequest` is plain data (ids, text, keys),
so it can cross a process or host boundary; the decoded images ride along only within one process
(`Prepared.inputs`, `Generated.image`), so the embedded queue decodes nothing twice, and a stage on
another host loads them from the blob store instead. `generate` needs no database: only the blob
store, the engine and the request. Stages raise JobFailure (and LeaseLost, Cancelled, Transient);
turning those into failure codes is the caller's one job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from daguerre import metrics
from daguerre.blobs import BlobNotFound, BlobStore
from daguerre.engine import DrawPreview, EngineJob, ModelRegistry, seed_for
from daguerre.errors import JobFailure
from daguerre.media import OUTPUT_EXTENSIONS, OUTPUT_MEDIA_TYPES, encode_image, load_input
from daguerre.moderation import Moderator
from daguerre.settings import Settings
from daguerre.store import Store
from daguerre.store.generations import GenerationRecord
from daguerre.store.schema import output_key
from daguerre.wire import FailureCode, GenerationType, Reason
from daguerre.worker.previews import Previews

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageContext:
    """What the stages run against. `store` is None where no database is reachable (an
    engine-only worker runs `generate` alone); `registry` is None where no engine runs."""

    settings: Settings
    blobs: BlobStore
    moderator: Moderator
    store: Store | None = None
    registry: ModelRegistry | None = None


@dataclass(frozen=True)
class EngineRequest:
    """Everything `generate` needs, as plain data."""

    generation_id: str
    token: str
    """The attempt's fencing token: it names the output key and guards the completion."""
    model: str
    type: str
    prompt: str
    aspect_ratio: str | None
    style: str
    output_format: str
    input_keys: tuple[str, ...]
    seed: int
    deadline: float | None = None
    """`Cancel-After`, as a POSIX timestamp: the run stops with "Deadline exceeded" past it."""


@dataclass(frozen=True)
class Prepared:
    request: EngineRequest
    inputs: list[Image.Image] | None = field(default=None, compare=False)
    """The decoded inputs, when `generate` runs in the same process."""


@dataclass(frozen=True)
class Generated:
    output_key: str
    image: Image.Image | None = field(default=None, compare=False)
    """The output, when `finalize` runs in the same process."""


def prepare(ctx: StageContext, record: GenerationRecord, token: str) -> Prepared:
    """The checks before any engine work: the deadline, the spending cap, the prompt, every input
    image."""
    assert ctx.store is not None, "prepare needs the store"
    deadline = record.deadline_at.timestamp() if record.deadline_at is not None else None
    _check_deadline(deadline)
    if record.price > 0 and not ctx.store.accounts.within_spend_cap(record.account_id, record.price):
        raise JobFailure(FailureCode.BUDGET_EXHAUSTED)
    if ctx.moderator.check_text(record.request.prompt, "prompt", record.id) is not None:
        raise JobFailure(FailureCode.CONTENT_MODERATED, Reason.INPUT_MODERATED)
    inputs = [load_input_blob(ctx, key) for key in record.input_keys]
    if any(ctx.moderator.check_image(image, "inputs", record.id) is not None for image in inputs):
        raise JobFailure(FailureCode.CONTENT_MODERATED, Reason.INPUT_MODERATED)
    request = EngineRequest(
        generation_id=record.id,
        token=token,
        model=record.model,
        type=record.type.value,
        prompt=record.request.prompt,
        aspect_ratio=record.aspect_ratio,
        style=record.request.style or "auto",
        output_format=record.output_format,
        input_keys=tuple(record.input_keys),
        seed=seed_for(record.id),
        deadline=deadline,
    )
    return Prepared(request, inputs)


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.time() >= deadline:
        raise JobFailure(FailureCode.GENERATION_FAILED, Reason.DEADLINE_EXCEEDED)


ProgressHook = Callable[[int, int, "bytes | None"], None]
"""on_progress(step, total, preview): after every engine step, with a JPEG preview of the picture
so far when one is due (worker.previews); may raise to stop the run (a lost lease, a cancel)."""


def generate(ctx: StageContext, prepared: Prepared, on_progress: ProgressHook) -> Generated:
    """Run the engine and write its image under the attempt's own output key. `on_progress` is
    called after every engine step and may raise to stop the run (a lost lease, a cancel)."""
    assert ctx.registry is not None, "generate needs an engine"
    request = prepared.request
    inputs = prepared.inputs
    if inputs is None:
        inputs = [load_input_blob(ctx, key) for key in request.input_keys]
    is_edit = request.type == GenerationType.IMAGE_EDIT
    job = EngineJob(
        id=request.generation_id,
        model=request.model,
        type=GenerationType(request.type),
        prompt=request.prompt,
        aspect_ratio=request.aspect_ratio,
        style=request.style,
        source=inputs[0] if is_edit and inputs else None,
        references=tuple(inputs[1:] if is_edit else inputs),
        seed=request.seed,
    )

    step_seconds = metrics.ENGINE_STEP_SECONDS.labels(request.model)
    last_step = time.perf_counter()

    def step(done: int, total: int, preview: DrawPreview | None = None) -> None:
        nonlocal last_step
        now = time.perf_counter()
        step_seconds.observe(now - last_step)
        on_progress(done, total, previews.take(preview))
        last_step = time.perf_counter()  # a preview drawn here is not the engine's time
        _check_deadline(request.deadline)

    _check_deadline(request.deadline)
    engine = ctx.registry.engine(request.model)
    previews = Previews(request.generation_id, ctx.settings.preview_every_s, ctx.moderator)
    last_step = time.perf_counter()
    image = engine.generate(job, step)
    key = output_key(request.generation_id, request.token, 0, OUTPUT_EXTENSIONS[request.output_format])
    try:
        ctx.blobs.put(
            key, encode_image(image, request.output_format), OUTPUT_MEDIA_TYPES[request.output_format]
        )
    except OSError as exc:
        log.error("writing the output of %s failed: %s", request.generation_id, exc)
        raise JobFailure(FailureCode.OUTPUT_NOT_FOUND) from exc
    return Generated(key, image)


def finalize(ctx: StageContext, request: EngineRequest, generated: Generated) -> bool:
    """Check the output, then complete the generation (capturing its price) if this attempt still
    owns it. A flagged output is deleted before the failure is raised, so it is never served; an
    attempt that was superseded deletes its output and answers False."""
    assert ctx.store is not None, "finalize needs the store"
    image = generated.image
    if image is None and ctx.moderator.image is not None and "output" in ctx.moderator.stages:
        try:
            image = load_input(ctx.blobs.get(generated.output_key), ctx.settings.max_input_pixels)
        except BlobNotFound:
            raise JobFailure(FailureCode.OUTPUT_NOT_FOUND) from None
    if image is not None and ctx.moderator.check_image(image, "output", request.generation_id) is not None:
        ctx.blobs.delete(generated.output_key)
        raise JobFailure(FailureCode.CONTENT_MODERATED, Reason.OUTPUT_MODERATED)
    if ctx.store.generations.complete(request.generation_id, request.token, (generated.output_key,)):
        return True
    ctx.blobs.delete(generated.output_key)
    return False


def load_input_blob(ctx: StageContext, key: str) -> Image.Image:
    """An input image from the blob store, decoded within the deployment's limits."""
    try:
        data = ctx.blobs.get(key)
    except BlobNotFound:
        raise JobFailure(FailureCode.INVALID_REQUEST, "An input image of this request is gone") from None
    return load_input(data, ctx.settings.max_input_pixels, ctx.settings.max_input_aspect_ratio)
