"""Deleting what nothing needs any more: generations past the retention period, and orphaned blobs.

    sweeper = Sweeper(settings, store, blobs)
    report = sweeper.sweep()              # one pass (`daguerre gc`); dry_run=True deletes nothing
    sweeper.run(stop_event)               # a pass every gc_interval_s (a WorkerPool's `gc` thread)

**Retention.** A completed or failed generation that finished more than `retention_days` ago is
purged: its row is kept (usage and billing count it) with `purged_at` set and `output_keys`
emptied, then every blob under `outputs/<id>/` and `inputs/<id>/` is deleted. Uploaded files
(`files/<id>`) have their own expiry, and the output of another generation reused as an input
belongs to that generation. The row is marked before the blobs go, so a crash in between leaves
orphans (deleted below), never a row that points at nothing; and a generation whose output a
queued or processing job uses as an input waits for a later pass.

**Orphans.** A blob older than `gc_grace_s` is deleted when nothing can ever refer to it:

* `outputs/<id>/<token>/<n>.<ext>`, written by the attempt that holds lease `<token>` just before
  it commits (`complete` is guarded by `state = 'processing' AND lease_token = <token>`):
  - kept when the row is completed and the key is one of its `output_keys`;
  - kept when the row is processing with that same token: the attempt may still commit, even with
    its lease lapsed, as long as nobody claimed the job since;
  - deleted otherwise. A terminal row never changes its outputs again (every change of state needs
    `processing`); a token that is not the row's current one never becomes current again (every
    claim draws a new random token), so its attempt can never commit; and with no row there is
    nothing to commit to.
* `inputs/<id>/<n>`: deleted when the generation has no row (the API stores inputs before it
  inserts the row, and a create lasts seconds, far less than the grace) or was purged.
* `uploads/<file id>`, what a presigned PUT wrote: kept while the file is pending (its ingest
  moves the bytes to `files/<id>`); otherwise deleted. On S3 a PUT can still land there after the
  upload was completed or the file deleted, and nothing reads it.

The rows are read after the blobs are listed, so a row can only be newer than the blob: a blob
written under a token exists only after the claim that drew the token was committed.

Every step is safe to run in several processes at once: marking a row purged is one guarded
UPDATE (only one process wins it and deletes its blobs), the orphan rules hold whoever applies
them, and deleting a missing blob is not an error. Within a process a second sweep started while
one runs does nothing. Across processes a marker blob (`gc/last-sweep`) keeps the periodic task
to about one pass per interval; `daguerre gc` ignores it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from daguerre.blobs import BlobInfo, BlobStore
from daguerre.settings import Settings
from daguerre.store import Store
from daguerre.store.clock import utcnow
from daguerre.store.generations import BlobOwner
from daguerre.store.idempotency import KEEP as IDEMPOTENCY_KEEP
from daguerre.store.schema import (
    input_prefix,
    output_prefix,
    parse_input_key,
    parse_output_key,
    parse_upload_key,
    upload_key,
)
from daguerre.wire import State

log = logging.getLogger(__name__)

MARKER_KEY = "gc/last-sweep"
"""Written when a periodic pass starts; processes that see it younger than half an interval skip."""
FIRST_PASS_DELAY_S = 60.0
"""A process's first periodic pass waits this long (or one interval, when shorter) after start."""
FULL_PASS_EVERY = timedelta(days=1)
"""How often a process's retention pass reads every generation created before the cutoff; the
passes in between read only those created from a day before the previous pass's cutoff."""
BATCH = 500
UPLOAD_PREFIX = upload_key("")
"""Blobs judged per lookup of their rows."""


@dataclass
class SweepReport:
    """What one pass deleted (or, in a dry run, would have deleted)."""

    dry_run: bool = False
    purged_generations: int = 0
    purged_blobs: int = 0
    purged_bytes: int = 0
    orphan_outputs: int = 0
    orphan_inputs: int = 0
    orphan_uploads: int = 0
    orphan_bytes: int = 0

    @property
    def deleted_anything(self) -> bool:
        return bool(
            self.purged_generations or self.orphan_outputs or self.orphan_inputs or self.orphan_uploads
        )

    def describe(self) -> str:
        purge, delete = ("would purge", "would delete") if self.dry_run else ("purged", "deleted")
        return (
            f"retention: {purge} {self.purged_generations} generation(s): {self.purged_blobs} blob(s), "
            f"{_size(self.purged_bytes)}\n"
            f"orphans: {delete} {self.orphan_outputs} output(s), {self.orphan_inputs} input(s) and "
            f"{self.orphan_uploads} upload(s), "
            f"{_size(self.orphan_bytes)}"
        )


class Sweeper:
    def __init__(self, settings: Settings, store: Store, blobs: BlobStore) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self._running = threading.Lock()
        self._last_full_pass: datetime | None = None
        self._last_cutoff: datetime | None = None
        self._would_purge: set[str] = set()
        """In a dry run: the generations the retention pass would purge (so that their blobs are
        not counted again as orphans)."""

    # The periodic task ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """A pass about every `gc_interval_s` until `stop` is set (slightly randomised, so that
        processes started together drift apart); errors are logged and the next pass comes."""
        interval = self.settings.gc_interval_s
        delay = min(FIRST_PASS_DELAY_S, interval)
        while not stop.wait(delay * random.uniform(1.0, 1.2)):
            delay = interval
            try:
                if not self._take_turn():
                    continue
                report = self.sweep(stop=stop)
                if report is not None and report.deleted_anything:
                    log.info("gc: %s", report.describe().replace("\n", "; "))
            except Exception:
                log.exception("gc: the sweep failed")

    def _take_turn(self) -> bool:
        """False when any process sharing these blobs started a pass less than half an interval
        ago; otherwise record that this one starts now."""
        now = utcnow()
        recent = timedelta(seconds=self.settings.gc_interval_s / 2)
        if any(
            b.key == MARKER_KEY and now - b.modified_at < recent for b in self.blobs.list_blobs(MARKER_KEY)
        ):
            return False
        self.blobs.put(MARKER_KEY, f"{now.isoformat()}\n".encode(), "text/plain")
        return True

    # One pass --------------------------------------------------------------------------------------

    def sweep(
        self, *, dry_run: bool = False, now: datetime | None = None, stop: threading.Event | None = None
    ) -> SweepReport | None:
        """Apply the retention policy, then delete orphaned blobs. None when a pass of this process
        is running already. `now` is the time the rules are applied at (tests move it)."""
        if not self._running.acquire(blocking=False):
            return None
        try:
            now = now or utcnow()
            report = SweepReport(dry_run=dry_run)
            self._purge_expired(now, report, stop)
            self._delete_orphans(now, report, stop)
            if not dry_run:  # Idempotency-Keys past their 24 hours (store.idempotency)
                self.store.idempotency.purge(now - IDEMPOTENCY_KEEP)
            return report
        finally:
            self._would_purge.clear()
            self._running.release()

    def _purge_expired(self, now: datetime, report: SweepReport, stop: threading.Event | None) -> None:
        if self.settings.retention_days == 0:
            return
        cutoff = now - timedelta(days=self.settings.retention_days)
        full = (
            self._last_full_pass is None
            or self._last_cutoff is None
            or now - self._last_full_pass >= FULL_PASS_EVERY
        )
        created_from = None if full or self._last_cutoff is None else self._last_cutoff - FULL_PASS_EVERY
        generations = self.store.generations
        in_use = generations.active_input_keys()
        for batch in generations.expired(cutoff, created_from):
            if stop is not None and stop.is_set():
                return
            chosen = [expired for expired in batch if in_use.isdisjoint(expired.output_keys)]
            ids = [expired.id for expired in chosen]
            if report.dry_run:
                self._would_purge.update(ids)
            won = set(ids) if report.dry_run else generations.mark_purged(ids, now)
            for generation_id in ids:
                if generation_id not in won:
                    continue
                report.purged_generations += 1
                for prefix in (output_prefix(generation_id), input_prefix(generation_id)):
                    for blob in list(self.blobs.list_blobs(prefix)):
                        self._delete(blob, report.dry_run)
                        report.purged_blobs += 1
                        report.purged_bytes += blob.size
        if not report.dry_run:
            self._last_cutoff = cutoff
            if full:
                self._last_full_pass = now

    def _delete_orphans(self, now: datetime, report: SweepReport, stop: threading.Event | None) -> None:
        horizon = now - timedelta(seconds=self.settings.gc_grace_s)
        for prefix in ("outputs/", "inputs/"):
            for blob in self._unneeded(prefix, horizon, stop):
                self._delete(blob, report.dry_run)
                if prefix == "outputs/":
                    report.orphan_outputs += 1
                else:
                    report.orphan_inputs += 1
                report.orphan_bytes += blob.size
        stale: list[BlobInfo] = []
        for blob in self.blobs.list_blobs(UPLOAD_PREFIX):
            if blob.modified_at < horizon and parse_upload_key(blob.key) is not None:
                stale.append(blob)
        for start in range(0, len(stale), BATCH):
            batch = stale[start : start + BATCH]
            pending = self.store.files.pending({parse_upload_key(blob.key) or "" for blob in batch})
            for blob in batch:
                if parse_upload_key(blob.key) not in pending:
                    self._delete(blob, report.dry_run)
                    report.orphan_uploads += 1
                    report.orphan_bytes += blob.size

    def _unneeded(self, prefix: str, horizon: datetime, stop: threading.Event | None) -> Iterator[BlobInfo]:
        """The blobs under `prefix`, written before `horizon`, that nothing can ever refer to;
        their rows are looked up a batch at a time, after the batch was listed."""
        batch: list[BlobInfo] = []
        for blob in self.blobs.list_blobs(prefix):
            owner = _generation_of(blob.key)
            if blob.modified_at < horizon and owner is not None and owner not in self._would_purge:
                batch.append(blob)
            if len(batch) >= BATCH:
                yield from self._judge(batch)
                batch = []
                if stop is not None and stop.is_set():
                    return
        if batch:
            yield from self._judge(batch)

    def _judge(self, batch: list[BlobInfo]) -> list[BlobInfo]:
        owners = self.store.generations.blob_owners({_generation_of(blob.key) or "" for blob in batch})
        return [blob for blob in batch if not _needed(blob.key, owners.get(_generation_of(blob.key) or ""))]

    def _delete(self, blob: BlobInfo, dry_run: bool) -> None:
        if not dry_run:
            self.blobs.delete(blob.key)


def _generation_of(key: str) -> str | None:
    """The generation an output or input key belongs to; None for a key of any other shape (such
    blobs are never touched)."""
    output = parse_output_key(key)
    return output[0] if output is not None else parse_input_key(key)


def _needed(key: str, owner: BlobOwner | None) -> bool:
    """Whether the blob under `key` is, or may still become, part of its generation (module docstring)."""
    output = parse_output_key(key)
    if output is None:  # an input
        return owner is not None and not owner.purged
    if owner is None:
        return False
    if owner.state == State.COMPLETED:
        return key in owner.output_keys
    return owner.state == State.PROCESSING and owner.lease_token == output[1]


def _size(count: int) -> str:
    return f"{count} bytes ({count / 1e6:.1f} MB)"


__all__ = ["SweepReport", "Sweeper"]
