"""Self-test: a round trip through web → ledger → broker → worker → ledger with no upstream.

An operator (or a deploy check) asks for it to prove that the pipeline that carries alarms is
moving, without sending anything to a vendor.
"""

from __future__ import annotations

import os
import socket

from celery import shared_task

from app.domain import task_names
from workers.perform import Job, Outcome, perform
from workers.step_task import ActionTask, StepTask


@shared_task(name=task_names.SYSTEM_SELFTEST, base=StepTask, bind=True, ignore_result=True)
def selftest(self: ActionTask, action_id: int) -> str:
    """Complete a self-test action, recording which worker process did it."""
    return perform(self.runtime, action_id, _selftest)


def _selftest(job: Job) -> Outcome:
    worker = f"{socket.gethostname()}:{os.getpid()}"
    return Outcome(
        external_id=worker,
        result={"worker": worker, "attempt": job.action.attempts},
        message=f"self-test completed by worker {worker}",
    )
