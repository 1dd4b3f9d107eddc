"""The error tree. Each kind of failure becomes a wire term in exactly one place.

DaguerreError
  + ApiError      rejected synchronously (.status, .detail)        -> HTTP, in daguerre.api.app
  + JobFailure    failed asynchronously (.code, .reason)           -> state "failed", in daguerre.worker
    - Transient   worth another attempt: the job is handed back, not failed
  + LeaseLost     another worker owns the job now (or it was reaped): drop the result
  + Cancelled     raised from an engine's step hook to stop a run at once (no decode)
"""

from __future__ import annotations

from collections.abc import Mapping

from daguerre.wire import FailureCode, Reason


class DaguerreError(Exception):
    """Base of every error daguerre raises on purpose."""


class ApiError(DaguerreError):
    """A request rejected synchronously; becomes `{"detail": ...}` with `status`."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


class JobFailure(DaguerreError):
    """A generation that cannot succeed; becomes `state: failed` with this code and reason."""

    def __init__(self, code: FailureCode, reason: str | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason or _DEFAULT_REASONS.get(code, code.value.replace("_", " ").capitalize())


class Transient(JobFailure):
    """A failure worth another attempt (the job goes back to the queue until attempts run out)."""


class LeaseLost(DaguerreError):
    """The worker no longer holds the job's lease: it must not write any result."""


class Cancelled(DaguerreError):
    """Raised from an engine's step hook to stop the run at once."""


_DEFAULT_REASONS: dict[FailureCode, str] = {
    FailureCode.GENERATION_FAILED: Reason.GENERATION_FAILED,
    FailureCode.OUTPUT_NOT_FOUND: Reason.OUTPUT_NOT_FOUND,
    FailureCode.BUDGET_EXHAUSTED: Reason.BUDGET_EXHAUSTED,
    FailureCode.CONTENT_MODERATED: Reason.OUTPUT_MODERATED,
}
