"""Deployment settings: built once by the CLI (or a test) and passed down, never a global.

Sources, strongest first: explicit values (CLI options), `DAGUERRE_*` environment variables, the
config file (TOML), defaults. The config file is `--config FILE`, else `$DAGUERRE_CONFIG`, else
`<data_dir>/daguerre.toml` when it exists. Keys in the file are the field names below.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from daguerre.wire import MAX_IMAGE_REFS, MAX_INPUT_IMAGE_BYTES, MODELS

CONFIG_FILE_NAME = "daguerre.toml"
_config_file: ContextVar[Path | None] = ContextVar("daguerre_config_file", default=None)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "daguerre"


def _default_max_request_bytes() -> int:
    # Large enough for a maximal request: nine base64 images of 50 MB each, plus the JSON around them.
    base64_image = (MAX_INPUT_IMAGE_BYTES + 2) // 3 * 4
    return MAX_IMAGE_REFS["image"] * base64_image + 1024 * 1024


class Settings(BaseSettings):
    """Every knob of a deployment. See docs/configuration.md for the meaning of each."""

    model_config = SettingsConfigDict(env_prefix="DAGUERRE_", extra="forbid", validate_default=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    """SQLite database, local blobs, the signing secret and the first key live here."""
    database_url: str | None = None
    """SQLAlchemy URL; default `sqlite:///<data_dir>/daguerre.db`."""
    blob_dir: Path | None = None
    """Root of the local blob store; default `<data_dir>/blobs`."""
    blob_secret: str | None = None
    """Secret that signs local blob URLs; default a random one kept in `<data_dir>/blob-secret`.
    Set it when API and workers run on different hosts with a shared blob directory."""
    public_url: str | None = None
    """Base URL clients use to reach this server (for presigned blob URLs); default: the URL
    of the request being answered. Local blob store only."""
    blob_url: str | None = None
    """Where blobs live. Unset, or `file:///PATH`: the local store (in blob_dir, or PATH), whose
    URLs daguerre serves and checks. `s3://BUCKET[/PREFIX]`: any S3-compatible object store,
    endpoint, region and credentials from the standard AWS variables and config
    (AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID, ...); clients talk to it directly."""
    blob_addressing_style: Literal["auto", "path", "virtual"] | None = None
    """S3 only: `path` (ENDPOINT/BUCKET/KEY), `virtual` (BUCKET.ENDPOINT/KEY) or `auto` (boto3's
    choice) URLs; default: the AWS config's `s3.addressing_style`, else path style when an
    endpoint URL is configured and virtual-hosted at the region's host on AWS."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=0, le=64)
    """In-process workers started by `daguerre serve`."""
    engine_threads: int | None = Field(default=None, ge=1, le=1024)
    """CPU threads each engine worker may use; default: the CPUs this process may run on divided
    by the engine workers of all daguerre processes on this host (see docs/operations.md)."""
    models_file: Path | None = None
    """Models configuration (TOML); default: the one shipped with daguerre."""
    allow_downloads: bool = False
    """Let engines download missing weights from the Hugging Face Hub on first use."""

    prices: dict[str, int] = Field(default_factory=lambda: {"uni-1": 40_400, "uni-1-max": 100_000})
    """Base price per model in micro-dollars (Luma's: $0.0404 and $0.1000)."""
    price_per_input: int = Field(default=3_000, ge=0)
    """Added per input image (the source of an edit counts as one), in micro-dollars ($0.0030)."""
    default_rpm: int = Field(default=30, ge=1)
    """Creates per minute per account (sliding window), unless the account has its own limit."""
    default_concurrency: int = Field(default=10, ge=1)
    """Generations per account not yet completed or failed, unless the account has its own limit."""
    rate_limit_window_s: int = Field(default=60, ge=1, le=3600)
    """The sliding window of the per-minute limit (Luma: 60 s; shorter only for tests)."""
    rate_limit_storage: str = "memory://"
    """Where request counts live: memory:// for one API process, redis://host:port/db for several."""
    key_cache_s: float = Field(default=2.0, ge=0)
    """How long an API process trusts a successful key lookup; revoking a key or suspending an
    account reaches other processes within this time (at once in the process that made the change)."""
    max_input_pixels: int = Field(default=40_000_000, ge=64 * 64, le=89_000_000)
    """Largest input image, in pixels (a decompression-bomb guard): larger ones fail with
    image_too_large. Checked from the image header before decoding."""
    max_input_aspect_ratio: float = Field(default=20.0, ge=1, le=1000)
    """Most elongated input image (long side over short side): more elongated ones fail with
    unsupported_format. Checked from the image header before decoding."""
    url_ingestion: bool = True
    """Fetch `url` image references server-side; off: such requests get 503."""
    url_allow_http: bool = False
    """Also fetch plain http:// URLs (https only by default)."""
    url_allow_private: bool = False
    """Also fetch from loopback, private and link-local addresses (off by default: SSRF)."""
    url_allowed_networks: list[str] = Field(default_factory=list)
    """Networks (CIDR) fetched from even though they are private, e.g. an internal image host."""
    url_ca_bundle: Path | None = None
    """CA certificates for https fetches (default: the system's)."""
    url_timeout_s: float = Field(default=18.0, gt=0, le=120)
    """Total time for fetching one URL, redirects included."""
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    """How long one webhook delivery attempt may take (the url_* rules apply to callback URLs too)."""
    webhook_retry_base_s: float = Field(default=10.0, gt=0)
    """The first retry of a failed webhook delivery comes about this long after it; each next one
    twice as long (capped at an hour), with jitter."""
    webhook_give_up_s: float = Field(default=86_400.0, gt=0)
    """A webhook not delivered this long after its generation ended is given up (failed)."""
    preview_every_s: float = Field(default=1.0, ge=0)
    """A running job's events stream shows a preview of the picture about this often (the first
    one this long after the engine starts, so quicker jobs show none); 0: no previews. Under
    execution = "temporal" previews travel in heartbeats, at most every 0.8 x the heartbeat timeout."""
    metrics_token: str | None = None
    """When set, `/metrics` answers only requests with `Authorization: Bearer <metrics_token>`."""
    moderation: bool = True
    """Check prompts, input images, outputs and uploads; a hit fails the generation with
    content_moderated (refunded)."""
    moderation_stages: list[str] = Field(default_factory=lambda: ["prompt", "inputs", "output", "files"])
    moderation_text_categories: list[str] = Field(
        default_factory=lambda: ["sexual", "violence", "self_harm", "hate"]
    )
    """Text categories checked; sexual content involving minors is always checked."""
    moderation_thresholds: dict[str, float] = Field(default_factory=dict)
    """Semantic thresholds per category, overriding the policy's tuned ones."""
    moderation_image_classes: list[str] = Field(
        default_factory=lambda: [
            "FEMALE_BREAST_EXPOSED",
            "FEMALE_GENITALIA_EXPOSED",
            "MALE_GENITALIA_EXPOSED",
            "BUTTOCKS_EXPOSED",
            "ANUS_EXPOSED",
        ]
    )
    """NudeNet classes that block an image."""
    moderation_image_threshold: float = Field(default=0.45, ge=0, le=1)
    max_request_bytes: int = Field(default_factory=_default_max_request_bytes, ge=1024)
    lease_s: float = Field(default=8.0, gt=0)
    """How long a claimed job stays owned without a renewal; renewed every lease_s/3 (a cheap
    guarded UPDATE). A killed worker's job is claimed again within lease_s plus an idle worker's
    wake-up (at most a second): within 10 s by default."""
    max_attempts: int = Field(default=3, ge=1)
    """Claims per job (worker crashes count); then it fails with generation_failed."""
    active_job_ttl_s: float = Field(default=3600.0, gt=0)
    """A job still processing this long after it first started fails with generation_failed."""
    http_head_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """A request's line and headers must arrive within this time of the connection opening (or of
    the request's first byte); otherwise the connection is closed (idle and slow-header clients)."""
    http_keep_alive_s: int = Field(default=5, ge=1, le=300)
    """An idle keep-alive connection is closed this long after its last answer."""
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    """On SIGTERM a worker finishes its job within this time, or hands it back to the queue."""
    idle_poll_s: float = Field(default=0.005, gt=0)
    """How often an idle worker checks the database for changes made by other processes."""
    reap_interval_s: float = Field(default=5.0, gt=0)
    retention_days: int = Field(default=30, ge=0)
    """Generations finished longer ago than this lose their output and input images (the row is
    kept, for usage and billing; a GET answers 404); 0 keeps everything for ever."""
    gc_interval_s: float = Field(default=3600.0, ge=0)
    """How often a process running workers applies the retention policy and deletes orphaned blobs
    (one sweep per interval across all processes that share the blobs); 0: never (`daguerre gc`)."""
    gc_grace_s: float = Field(default=3600.0, ge=60)
    """Blobs younger than this are never deleted as orphans."""
    execution: Literal["embedded", "temporal"] = "embedded"
    """Who runs the generations: `embedded`, the generations table as a queue claimed by daguerre's
    own workers; `temporal`, one Temporal workflow per generation (see docs/operations.md)."""
    temporal_address: str = "127.0.0.1:7233"
    """The Temporal frontend, host:port (execution = "temporal")."""
    temporal_namespace: str = "default"
    temporal_task_queue: str = "daguerre"
    """Task-queue prefix: workflows, prepare and finalize run on `<prefix>`, the engine of each model
    on `<prefix>.engine.<model>`."""
    temporal_tls: bool = False
    """Reach Temporal over TLS, checking its certificate against the system's CAs (or
    `temporal_tls_ca`). Implied by any other temporal_tls_* setting and by `temporal_api_key`."""
    temporal_tls_ca: Path | None = None
    """A PEM file of the CA(s) that signed the Temporal frontend's certificate."""
    temporal_tls_cert: Path | None = None
    """This process's client certificate (PEM) for mutual TLS; with `temporal_tls_key`."""
    temporal_tls_key: Path | None = None
    """The private key (PEM) of `temporal_tls_cert`."""
    temporal_tls_server_name: str | None = None
    """The server name to ask for (TLS SNI) and to expect on the frontend's certificate, when it is
    not the address's host."""
    temporal_api_key: SecretStr | None = None
    """An API key for Temporal Cloud (sent as `Authorization: Bearer ...` on every call, over TLS).
    Better set in the environment (DAGUERRE_TEMPORAL_API_KEY) than in a file."""
    temporal_heartbeat_timeout_s: float = Field(default=5.0, gt=0)
    """A generate activity not heard from for this long is re-run elsewhere (its worker died)."""
    worker_id: str | None = None
    log_level: str = "info"

    @field_validator("prices")
    @classmethod
    def _every_model_priced(cls, value: dict[str, int]) -> dict[str, int]:
        missing = [m for m in MODELS if m not in value]
        if missing:
            raise ValueError(f"no price for {', '.join(missing)}")
        return value

    @field_validator("blob_url")
    @classmethod
    def _known_blob_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if value.lower().startswith("s3:"):
            parse_s3_url(value)
        else:
            _file_url_path(value)
        return value

    @model_validator(mode="after")
    def _one_blob_directory(self) -> Settings:
        path = _file_url_path(self.blob_url) if self.blob_url else None
        if path is not None and self.blob_dir is not None and path != self.blob_dir:
            raise ValueError(f"blob_dir ({self.blob_dir}) and blob_url ({self.blob_url}) name two places")
        return self

    @model_validator(mode="after")
    def _temporal_tls_files(self) -> Settings:
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            raise ValueError("temporal_tls_cert and temporal_tls_key go together: set both or neither")
        if self.execution == "temporal":
            for name in ("temporal_tls_ca", "temporal_tls_cert", "temporal_tls_key"):
                path = getattr(self, name)
                if path is not None and not path.is_file():
                    raise ValueError(f"{name}: no such file: {path}")
                if path is not None and not os.access(path, os.R_OK):
                    raise ValueError(f"{name}: this process may not read {path}")
        return self

    @property
    def temporal_uses_tls(self) -> bool:
        return (
            self.temporal_tls
            or self.temporal_api_key is not None
            or any(
                value is not None
                for value in (
                    self.temporal_tls_ca,
                    self.temporal_tls_cert,
                    self.temporal_tls_server_name,
                )
            )
        )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        levels = ("critical", "error", "warning", "info", "debug")
        if value.lower() not in levels:
            raise ValueError(f"must be one of {', '.join(levels)}")
        return value.lower()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **values: Any) -> Settings:
        """Build settings from CLI values, the environment and the config file.

        `values` whose value is None are treated as "not given" so CLI options can pass through.
        """
        given = {k: v for k, v in values.items() if v is not None}
        path = config_file or _env_path("DAGUERRE_CONFIG")
        if path is None:
            data_dir = Path(given.get("data_dir") or _env_path("DAGUERRE_DATA_DIR") or default_data_dir())
            candidate = data_dir / CONFIG_FILE_NAME
            path = candidate if candidate.is_file() else None
        elif not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        token = _config_file.set(path)
        try:
            return cls(**given)
        finally:
            _config_file.reset(token)

    # Derived locations -----------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'daguerre.db'}"

    @property
    def resolved_blob_dir(self) -> Path:
        """The local blob store's directory (unused with an S3 blob_url)."""
        from_url = _file_url_path(self.blob_url) if self.blob_url else None
        return self.blob_dir or from_url or self.data_dir / "blobs"

    @property
    def s3_location(self) -> S3Location | None:
        """The bucket and key prefix of an `s3://` blob_url; None: blobs are on local disk."""
        if self.blob_url is None or not self.blob_url.lower().startswith("s3:"):
            return None
        return parse_s3_url(self.blob_url)

    @property
    def first_key_file(self) -> Path:
        return self.data_dir / "api-key"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    """Put before every key: empty, or ending with `/`."""


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]*")
"""S3's "safe characters" for keys."""
_BLOB_URL_FORMS = "s3://BUCKET[/PREFIX] or file:///PATH"


def parse_s3_url(url: str) -> S3Location:
    """`s3://BUCKET[/PREFIX]` as a bucket and a prefix; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not url.startswith("s3://"):
        raise ValueError(f"must be {_BLOB_URL_FORMS}, got {url!r}")
    if "@" in parts.netloc:
        raise ValueError(
            "credentials do not belong in blob_url: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"s3:// URLs take no query or fragment, got {url!r}")
    if ":" in parts.netloc:
        raise ValueError(
            f"the part after s3:// is the bucket, not a host (set the endpoint in AWS_ENDPOINT_URL_S3), "
            f"got {parts.netloc!r}"
        )
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"bucket name {bucket!r} is not valid: 3 to 63 lower-case letters, digits, dots and hyphens, "
            "starting and ending with a letter or digit"
        )
    path = parts.path.strip("/")
    segments = path.split("/") if path else []
    if not _PREFIX.fullmatch(path) or any(segment in ("", ".", "..") for segment in segments):
        raise ValueError(
            f"key prefix {parts.path!r} is not valid: segments of letters, digits and !_.*'()- "
            "separated by single slashes"
        )
    return S3Location(bucket, path + "/" if path else "")


def _file_url_path(url: str | None) -> Path | None:
    """The directory of a `file:///PATH` blob_url (None for `file://`); ValueError when malformed."""
    if url is None or url.lower().startswith("s3:"):
        return None
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise ValueError(f"must be {_BLOB_URL_FORMS}, got {url!r}")
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise ValueError(f"file URLs name a local directory, as file:///PATH, got {url!r}")
    path = unquote(parts.path)
    return Path(path) if path.strip("/") else None


def write_private_file(path: Path, text: str) -> bool:
    """Create `path` readable only by the current user, atomically; False if it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    try:
        os.link(tmp, path)  # atomic: the file appears complete or not at all
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None
