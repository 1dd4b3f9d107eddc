"""Prometheus metrics of this process (`prometheus-client`), served at `/metrics` by the API and by
`daguerre worker --metrics-port`.

Counters and histograms count what this process did: a generation is counted as created by the API
process that committed it, and as finished by the process whose transaction ended it (a worker, or
an API process for cancels and reaped deadlines), so sum them over every process
(`sum by (model) (rate(daguerre_generations_finished_total[5m]))`). The queue gauges are read from
the database at each scrape and are the same in every process: take `max`.
docs/operations.md#metrics lists every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
"""daguerre's metrics plus the process and platform collectors."""

_DURATIONS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

GENERATIONS_CREATED = Counter(
    "daguerre_generations_created",
    "Generations created (committed), by model and type.",
    ("model", "type"),
    registry=REGISTRY,
)
GENERATIONS_FINISHED = Counter(
    "daguerre_generations_finished",
    "Generations that ended, by model, state (completed/failed) and failure code ('' when completed).",
    ("model", "state", "failure_code"),
    registry=REGISTRY,
)
QUEUED_SECONDS = Histogram(
    "daguerre_generation_queued_seconds",
    "From creation to a worker's first start, observed when the generation ends.",
    ("model",),
    buckets=_DURATIONS,
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "daguerre_generation_processing_seconds",
    "From a worker's first start to the end, observed when the generation ends.",
    ("model",),
    buckets=_DURATIONS,
    registry=REGISTRY,
)
ENGINE_STEP_SECONDS = Histogram(
    "daguerre_engine_step_seconds",
    "Seconds per engine (denoising) step.",
    ("model",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "daguerre_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ("route", "method", "status"),
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "daguerre_http_request_seconds",
    "Time to answer an HTTP request (to the start of the body), by route template and method.",
    ("route", "method"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "daguerre_webhook_attempts",
    "Webhook delivery attempts by outcome: delivered, failed (retried later), given_up.",
    ("outcome",),
    registry=REGISTRY,
)


def register_process_collectors() -> None:
    """CPU, memory, open files and the Python runtime of this process (once)."""
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        with suppress(ValueError):  # already registered
            REGISTRY.register(collector)


def generation_ended(
    model: str,
    state: str,
    failure_code: str | None,
    created_at: datetime,
    started_at: datetime | None,
    finished_at: datetime | None,
) -> None:
    GENERATIONS_FINISHED.labels(model, state, failure_code or "").inc()
    if started_at is not None:
        QUEUED_SECONDS.labels(model).observe(max((started_at - created_at).total_seconds(), 0.0))
        if finished_at is not None:
            PROCESSING_SECONDS.labels(model).observe(max((finished_at - started_at).total_seconds(), 0.0))


QueueReader = Callable[[], dict[str, tuple[int, float]]]
"""model -> (queued generations, age in seconds of the oldest)."""


class QueueCollector(Collector):
    """The queue per model, read from the database at each scrape."""

    def __init__(self, read: QueueReader) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("daguerre_queue_depth", "Queued generations, by model.", labels=("model",))
        age = GaugeMetricFamily(
            "daguerre_queue_oldest_age_seconds",
            "Age of the oldest queued generation, by model.",
            labels=("model",),
        )
        for model, (count, oldest) in sorted(self.read().items()):
            depth.add_metric((model,), count)
            age.add_metric((model,), oldest)
        yield depth
        yield age
