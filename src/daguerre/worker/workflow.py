"""The Temporal workflow of one generation: prepare → generate → finalize (or fail).

Workflow code is replayed by Temporal and must be deterministic: this module does no I/O, reads
no settings and imports nothing with side effects (which is why worker.temporal may run it outside
Temporal's sandbox).

`prepare`, `finalize` and `fail` are local activities: they run in the worker that runs the
workflow, right after the workflow task that asks for them, instead of going through the task
queue as activities of their own. They are short (the database and the blobs) and every one of
them is fenced by the row, so running one again after a crash is harmless; `generate` stays a
regular activity on the model's own queue, with heartbeats. Activities are called by name (they live in
worker.temporal); their arguments and results are plain data. What the workflow needs of the
deployment (the engine's task queue, attempts, the active-job TTL, the heartbeat timeout) comes
in its argument, made by dispatch.workflow_input.

Failures become Luma failure codes in one place, `failure_of`: a JobFailure raised by an activity
arrives as a non-retryable ApplicationError of type "JobFailure" whose details are (code, reason),
a Transient one (retryable) as type "Transient" with the same details; anything else (timeouts,
unknown errors once the retries are spent, a worker that never came) is generation_failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeout

GENERATION_FAILED = "generation_failed"
JOB_FAILURE = "JobFailure"
TRANSIENT = "Transient"


@dataclass
class GenerationJob:
    generation_id: str
    model: str
    engine_task_queue: str
    max_attempts: int
    active_job_ttl_s: float
    heartbeat_timeout_s: float


def failure_of(error: BaseException) -> tuple[str, str]:
    """The (failure code, reason) a failed activity ends its generation with."""
    cause = error.cause if isinstance(error, ActivityError) else error
    if isinstance(cause, ApplicationError) and cause.type in (JOB_FAILURE, TRANSIENT):
        details = cause.details
        if len(details) == 2 and all(isinstance(item, str) for item in details):
            return str(details[0]), str(details[1])
    if isinstance(cause, ActivityTimeout):
        return GENERATION_FAILED, "Generation failed: it did not finish within the active-job limit"
    return GENERATION_FAILED, "Generation failed"


@workflow.defn(name="Generation")
class Generation:
    @workflow.run
    async def run(self, job: GenerationJob) -> str:
        ttl = timedelta(seconds=job.active_job_ttl_s)
        # prepare, finalize and fail only touch the database and the blobs: retried until the TTL.
        steady = RetryPolicy(initial_interval=timedelta(seconds=0.5), maximum_interval=timedelta(seconds=10))
        request: dict[str, Any] | None = await workflow.execute_local_activity(
            "prepare",
            job.generation_id,
            schedule_to_close_timeout=ttl,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=steady,
            result_type=dict,
        )
        if request is None:  # already decided, or failed by its checks
            return "decided"
        token = str(request["token"])
        try:
            output_key: str = await workflow.execute_activity(
                "generate",
                request,
                task_queue=job.engine_task_queue,
                schedule_to_close_timeout=ttl,
                heartbeat_timeout=timedelta(seconds=job.heartbeat_timeout_s),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=0.2),
                    maximum_interval=timedelta(seconds=5),
                    maximum_attempts=job.max_attempts,
                    non_retryable_error_types=[JOB_FAILURE],
                ),
                result_type=str,
            )
            outcome: str = await workflow.execute_local_activity(
                "finalize",
                args=[request, output_key],
                schedule_to_close_timeout=ttl,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=steady,
                result_type=str,
            )
            return outcome
        except ActivityError as error:
            code, reason = failure_of(error)
        await workflow.execute_local_activity(
            "fail",
            args=[job.generation_id, token, code, reason],
            start_to_close_timeout=timedelta(minutes=1),
            schedule_to_close_timeout=ttl,
            retry_policy=steady,
        )
        return "failed"
