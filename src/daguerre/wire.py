"""Luma's wire format: the names, values and detail strings of the Generations API, in one place.

Everything a client can see on the wire is defined here: enums, limits, the documented `detail`
strings and the pydantic models of requests and responses. Nothing here touches a database, a blob
store or HTTP; `daguerre.validation` turns a request body into a `GenerationCreate` using these
strings, and `daguerre.api` turns stored records into `Generation` objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

API_VERSION = "2026-04-01"
"""Value of the `X-API-Version` header on every response (Luma: the only version so far)."""

KEY_PREFIX = "luma-api-"
"""Every API key starts with this (Luma)."""


class State(StrEnum):
    """The four states of a generation (Luma). `completed` and `failed` are terminal."""

    QUEUED = "queued"
    """Accepted and waiting for a worker."""
    PROCESSING = "processing"
    """A worker holds the job's lease and is running it."""
    COMPLETED = "completed"
    """Finished; `output` carries presigned URLs."""
    FAILED = "failed"
    """Finished without an image; `failure_code` and `failure_reason` say why."""

    @property
    def terminal(self) -> bool:
        return self in (State.COMPLETED, State.FAILED)


class GenerationType(StrEnum):
    """The generation types daguerre serves."""

    IMAGE = "image"
    IMAGE_EDIT = "image_edit"


class FailureCode(StrEnum):
    """The nine failure codes of luma-agents 0.5.0. See the API spec, section 7, for when each is used."""

    CONTENT_MODERATED = "content_moderated"
    GENERATION_FAILED = "generation_failed"
    BUDGET_EXHAUSTED = "budget_exhausted"
    OUTPUT_NOT_FOUND = "output_not_found"
    IMAGE_TOO_LARGE = "image_too_large"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT_INPUT = "corrupt_input"
    INVALID_REQUEST = "invalid_request"
    RATE_LIMITED = "rate_limited"


class FileState(StrEnum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    DELETED = "deleted"


MODELS: tuple[str, ...] = ("uni-1", "uni-1-max")
"""Public model names daguerre serves."""
UNAVAILABLE_MODELS: tuple[str, ...] = ("ray-3.2",)
"""Real Luma models that daguerre does not serve (so "Unknown model" would be wrong)."""
OTHER_LUMA_TYPES: tuple[str, ...] = ("video", "video_edit", "video_reframe", "layering")

ASPECT_RATIOS: tuple[str, ...] = ("3:1", "2:1", "16:9", "3:2", "1:1", "2:3", "9:16", "1:2", "1:3")
"""The nine image aspect ratios, widest first."""
PORTRAIT_RATIOS: tuple[str, ...] = ("2:3", "9:16", "1:2", "1:3")
"""The ratios `style: manga` accepts."""
STYLES: tuple[str, ...] = ("auto", "manga")
OUTPUT_FORMATS: tuple[str, ...] = ("png", "jpeg")

PROMPT_MAX_CHARS = 6000
USER_ID_MAX_CHARS = 256
CALLBACK_URL_MAX_CHARS = 2048
MAX_IMAGE_REFS: dict[str, int] = {GenerationType.IMAGE: 9, GenerationType.IMAGE_EDIT: 8}
MAX_INPUT_IMAGE_BYTES = 50 * 1024 * 1024
"""50 MB per input image, measured after base64 decoding (Luma)."""
OUTPUT_URL_TTL_S = 3600
"""Presigned output and upload URLs are valid for one hour (Luma)."""

# Luma's message lists the ratios in this exact order (numeric within each leading digit).
_VALID_RATIOS_TEXT = "1:1, 1:2, 1:3, 16:9, 2:1, 2:3, 3:1, 3:2, 9:16"

ACCEPTED_MIME_TYPES: tuple[str, ...] = ("image/jpeg", "image/png", "image/webp", "image/gif")
"""The input formats daguerre takes (Luma): JPEG, PNG, WebP, still GIF."""
MIME_TYPE_ALIASES = {"image/jpg": "image/jpeg"}
"""Media type names clients use that mean an accepted one (read as it, everywhere)."""

IMAGE_REF_SOURCES: tuple[str, ...] = ("url", "data", "generation_id", "file_id")


class Detail:
    """Every `detail` string a client can receive, verbatim. Functions build the parameterised ones."""

    # 401 / 403 (Luma)
    MISSING_KEY = "Missing or invalid API key"
    INVALID_KEY = "Invalid API key"
    REVOKED_KEY = "API key has been revoked"
    EXPIRED_KEY = "API key has expired"
    SUSPENDED = "API client is suspended"
    DEACTIVATED = "API client is deactivated"

    # 404
    GENERATION_NOT_FOUND = "Generation not found"
    GENERATION_PURGED = "Generation output was deleted after the retention period"
    FILE_NOT_FOUND = "File not found"
    NOT_FOUND = "Not Found"

    # 400: request shape (daguerre) and values (Luma)
    BODY_NOT_OBJECT = "Request body must be a JSON object"
    BODY_NOT_JSON = "Request body is not valid JSON"
    BODY_TOO_DEEP = "Request body is nested too deeply"
    BODY_TOO_MANY_VALUES = "Request body has too many JSON values"
    PROMPT_LENGTH = f"Prompt must be between 1 and {PROMPT_MAX_CHARS} characters"
    SOURCE_REQUIRED = "source is required for type 'image_edit'"
    SOURCE_ONLY_FOR_EDIT = "source is only valid for type 'image_edit'"
    STYLE_VALUES = "style: must be one of auto, manga"
    OUTPUT_FORMAT_VALUES = "output_format: must be one of png, jpeg"
    MANGA_RATIO = "style: 'manga' requires aspect_ratio 2:3, 9:16, 1:2 or 1:3"
    TOO_MANY_REFS_IMAGE = "image supports up to 9 reference images"
    TOO_MANY_REFS_EDIT = "image_edit supports up to 8 reference images (source occupies one slot)"
    USER_ID_LENGTH = f"user_id: must be at most {USER_ID_MAX_CHARS} characters"

    # Files
    FILE_NOT_UPLOADED = "file upload has not been received"
    FILE_TOO_LARGE = "file: image exceeds 50 MB limit"
    FILE_REQUIRED = "file: field required"

    # Idempotency-Key (daguerre extension)
    IDEMPOTENCY_KEY_INVALID = "Idempotency-Key: must be 1 to 255 printable ASCII characters"
    IDEMPOTENCY_KEY_REUSED = "Idempotency-Key reused with a different request"
    IDEMPOTENCY_KEY_BUSY = "Idempotency-Key: a request with this key is still being processed"
    # Webhooks (daguerre extension)
    CALLBACK_URL_INVALID = "callback_url: must be an http(s) URL of at most 2048 characters"
    CALLBACK_URL_HTTPS = "callback_url: https required"

    # 402, 413, 429, 500, 503
    INSUFFICIENT_BALANCE = "Insufficient balance. Please add funds to continue."
    BODY_TOO_LARGE = "Request body too large"
    RATE_LIMITED = "Rate limit exceeded"
    TOO_MANY_JOBS = "Too many concurrent jobs"
    INTERNAL = "Internal server error"
    URL_INGESTION_OFF = "Image URL ingestion unavailable"

    @staticmethod
    def unknown_model(name: str) -> str:
        return f"Unknown model: {name}"

    @staticmethod
    def model_unavailable(name: str) -> str:
        return f"Model '{name}' is not available on this server"

    @staticmethod
    def type_not_supported(type_: str, model: str) -> str:
        return f"Type '{type_}' is not supported for model '{model}'"

    @staticmethod
    def invalid_aspect_ratio(value: str) -> str:
        return f"Invalid aspect_ratio '{value}'. Valid: {_VALID_RATIOS_TEXT}"

    @staticmethod
    def field_required(field: str) -> str:
        return f"{field}: field required"

    @staticmethod
    def wrong_type(field: str, json_type: str) -> str:
        article = "an" if json_type[0] in "aeiou" else "a"
        return f"{field}: must be {article} {json_type}"

    # ImageRef, prefixed with the field path `source` or `image_ref[i]`
    @staticmethod
    def ref_url_and_data(path: str) -> str:
        return f"{path}: provide either 'url' or 'data', not both"

    @staticmethod
    def ref_none(path: str) -> str:
        return f"{path}: provide either 'url' or 'data', not neither"

    @staticmethod
    def ref_several(path: str) -> str:
        return f"{path}: provide exactly one of 'url', 'data', 'generation_id', 'file_id'"

    @staticmethod
    def ref_media_type_required(path: str) -> str:
        return f"{path}: 'media_type' is required with 'data'"

    @staticmethod
    def ref_bad_base64(path: str) -> str:
        return f"{path}: invalid base64 data"

    @staticmethod
    def ref_too_large(path: str) -> str:
        return f"{path}: image exceeds 50 MB limit"

    @staticmethod
    def ref_fetch_failed(path: str, reason: str | None = None) -> str:
        return f"{path}: failed to fetch URL" + (f" ({reason})" if reason else "")

    @staticmethod
    def ref_not_image(path: str) -> str:
        return f"{path}: content-type is not an image"

    @staticmethod
    def ref_unsupported_format(path: str) -> str:
        return f"{path}: unsupported image format"

    @staticmethod
    def ref_generation_not_found(path: str) -> str:
        return f"{path}: generation not found"

    @staticmethod
    def ref_generation_not_completed(path: str) -> str:
        return f"{path}: generation is not completed"

    @staticmethod
    def ref_generation_purged(path: str) -> str:
        return f"{path}: generation output was deleted after the retention period"

    @staticmethod
    def ref_file_not_found(path: str) -> str:
        return f"{path}: file not found"

    @staticmethod
    def ref_file_not_ready(path: str) -> str:
        return f"{path}: file is not ready"


class Reason:
    """Documented `failure_reason` strings (Luma), used verbatim for their cases."""

    OUTPUT_MODERATED = "Generation output was flagged by our content moderation system."
    INPUT_MODERATED = "Prompt or input image violated content guidelines"
    BUDGET_EXHAUSTED = "Insufficient credits to complete this generation."
    GENERATION_FAILED = "Generation failed"
    OUTPUT_NOT_FOUND = "Output artifacts not found"
    CANCELLED = "Cancelled by request"
    """daguerre's: `POST /v1/generations/{id}/cancel` (an extension)."""
    DEADLINE_EXCEEDED = "Deadline exceeded"
    """daguerre's: the `Cancel-After` deadline of the create passed before the generation ended."""


# ---------------------------------------------------------------------------------------------
# Request models. `daguerre.validation` builds them after checking every rule with the documented
# detail strings; they are also what is stored as the request JSON of a generation row.


@dataclass(frozen=True)
class Progress:
    """A running generation's engine progress, as its events stream tells it (an extension)."""

    step: int
    total: int
    preview_step: int | None = None
    """The step the latest preview shows; None: no preview yet."""
    preview: bytes | None = None
    """That preview (JPEG) where it came along with the progress (a Temporal heartbeat); None when
    it is to be read on its own (store.generations.preview) once `preview_step` changes."""


class ImageRef(BaseModel):
    """A reference to an input image: exactly one of url, data, generation_id or file_id."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    generation_id: str | None = None
    file_id: str | None = None


class GenerationCreate(BaseModel):
    """Body of `POST /v1/generations` (Luma). Unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt: str = Field(min_length=1, max_length=PROMPT_MAX_CHARS)
    model: Literal["uni-1", "uni-1-max"] = "uni-1"
    type: GenerationType = GenerationType.IMAGE
    aspect_ratio: Literal["3:1", "2:1", "16:9", "3:2", "1:1", "2:3", "9:16", "1:2", "1:3"] | None = None
    style: Literal["auto", "manga"] | None = "auto"
    output_format: Literal["png", "jpeg"] | None = None
    web_search: bool | None = False
    image_ref: list[ImageRef] | None = None
    source: ImageRef | None = None
    user_id: str | None = Field(default=None, max_length=USER_ID_MAX_CHARS)
    callback_url: str | None = Field(
        default=None,
        max_length=CALLBACK_URL_MAX_CHARS,
        description="daguerre extension: where the ended generation is POSTed, signed (Standard Webhooks)",
    )


# ---------------------------------------------------------------------------------------------
# Response models. Every field is always sent (null when empty), so their schemas list every field
# as required, nullable ones included.

_ALWAYS_SENT = ConfigDict(json_schema_serialization_defaults_required=True)


class Output(BaseModel):
    model_config = _ALWAYS_SENT

    type: Literal["image"] = "image"
    url: str


class Generation(BaseModel):
    """The Generation object (Luma)."""

    model_config = _ALWAYS_SENT

    id: str
    type: GenerationType
    state: State
    model: str
    created_at: str = Field(description="ISO-8601 UTC with a trailing Z")
    output: list[Output] = Field(default_factory=list)
    failure_reason: str | None = None
    failure_code: FailureCode | None = None


FILE_PURPOSES: tuple[str, ...] = ("input", "reference")
FILENAME_MAX_CHARS = 255
FILE_LIST_MAX = 100
FILE_LIST_DEFAULT = 25


class FileCreate(BaseModel):
    """Body of `POST /v1/files` in the presigned (JSON) mode."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    mime_type: Literal["image/jpeg", "image/png", "image/webp", "image/gif"]
    size_bytes: int = Field(ge=1, le=MAX_INPUT_IMAGE_BYTES)
    expires_at: datetime | None = None
    filename: str | None = Field(default=None, max_length=FILENAME_MAX_CHARS)
    purpose: Literal["input", "reference"] = "input"
    user_id: str | None = Field(default=None, max_length=USER_ID_MAX_CHARS)


class File(BaseModel):
    """A file in the caller's namespace (Luma)."""

    model_config = _ALWAYS_SENT

    id: str
    created_at: str
    mime_type: str
    purpose: str
    size_bytes: int
    state: FileState
    deleted_at: str | None = None
    expires_at: str | None = None
    failure_reason: str | None = None
    filename: str | None = None
    user_id: str | None = None


class PresignedUpload(BaseModel):
    model_config = _ALWAYS_SENT

    expires_at: str
    method: Literal["PUT"] = "PUT"
    url: str
    headers: dict[str, str]


class CreateFileResponse(BaseModel):
    model_config = _ALWAYS_SENT

    id: str
    state: FileState
    file: File
    upload: PresignedUpload | None = None


class FileList(BaseModel):
    model_config = _ALWAYS_SENT

    data: list[File]
    has_more: bool
    next_cursor: str | None = None


class WebhookAttempt(BaseModel):
    model_config = _ALWAYS_SENT

    at: str
    status: int | None = None
    """The receiver's HTTP status; None when there was no answer (see `error`)."""
    error: str | None = None


class WebhookDelivery(BaseModel):
    """One notification owed for a generation (daguerre extension)."""

    model_config = _ALWAYS_SENT

    id: str
    """The `webhook-id` header of every attempt."""
    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: list[WebhookAttempt]
    """The latest attempts, oldest first."""
    next_attempt_at: str | None = None
    delivered_at: str | None = None
    created_at: str


class WebhookDeliveries(BaseModel):
    model_config = _ALWAYS_SENT

    data: list[WebhookDelivery]


GENERATION_LIST_MAX = 100
GENERATION_LIST_DEFAULT = 25


class GenerationList(BaseModel):
    """A page of the caller's generations, newest first (daguerre extension, shaped like FileList)."""

    model_config = _ALWAYS_SENT

    data: list[Generation]
    has_more: bool
    next_cursor: str | None = None


USAGE_GROUPS: tuple[str, ...] = ("model", "user_id", "day")


class UsageCounts(BaseModel):
    model_config = _ALWAYS_SENT

    total: int = 0
    queued: int = 0
    processing: int = 0
    completed: int = 0
    failed: int = 0


class UsageGroup(BaseModel):
    model_config = _ALWAYS_SENT

    group: str | None = Field(
        description="The model, the user_id (null: none given) or the day (YYYY-MM-DD, UTC)"
    )
    generations: UsageCounts
    spend_micro_usd: int = Field(description="Captured charges, in micro-dollars")


class UsageReport(BaseModel):
    """GET /v1/usage (daguerre's design): the caller's generations created in [from, to)."""

    model_config = ConfigDict(populate_by_name=True, json_schema_serialization_defaults_required=True)

    from_: str = Field(alias="from")
    to: str
    group_by: str
    data: list[UsageGroup]
    total: UsageGroup


class ErrorBody(BaseModel):
    """Every error body on every endpoint."""

    detail: str


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def parse_uuid(value: str) -> str | None:
    """The canonical (lower-case, hyphenated) form of a UUID id, or None for anything else."""
    return value.lower() if _UUID.fullmatch(value) else None


def format_timestamp(moment: datetime) -> str:
    """Luma's timestamp form: ISO-8601 in UTC with a trailing `Z`, whole seconds."""
    # isoformat is C and locale-free; 'YYYY-MM-DDTHH:MM:SS' then '+00:00', which Z replaces.
    return moment.astimezone(UTC).isoformat(timespec="seconds")[:19] + "Z"
