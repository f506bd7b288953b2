"""The base class of every worker task: it gives the task its process's runtime.

Each task is declared ``@shared_task(name=..., base=StepTask, bind=True)`` and reads ``self.runtime``:
the runtime of the Celery app the task is bound to (``workers.runtime.RuntimeHolder``), built once per
process and again after a fork. Nothing is kept in a module global, so a test's worker app carries a
runtime of its own and removes it afterwards.
"""

from __future__ import annotations

from typing import ParamSpec, TypeVar

from celery import Task

from app import telemetry
from config.celery import BULK_QUEUE, LIFE_SAFETY_QUEUE
from workers.runtime import Runtime, runtime_holder

P = ParamSpec("P")
R_co = TypeVar("R_co", covariant=True)


class StepTask(Task[P, R_co]):
    """A task that runs with this process's worker runtime."""

    @property
    def runtime(self) -> Runtime:
        """This process's runtime for the task's app (built on first use, rebuilt after a fork)."""
        return runtime_holder(self.app).get()

    def before_start(self, task_id: str, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        """Celery's hook in the worker, just before the task body: a step delivered from the bulk
        queue first waits its turn while life-safety steps are being worked, and a life-safety step
        says it is (workers/bulk_gate.py). Run in the worker only, as the tracer calls it."""
        queue = (self.request.delivery_info or {}).get("routing_key")
        if queue == BULK_QUEUE:
            waited = self.runtime.bulk_gate.wait_turn()
            if waited > 0.0:
                telemetry.BULK_YIELD_SECONDS.inc(waited)
        elif queue == LIFE_SAFETY_QUEUE:
            self.runtime.bulk_gate.life_safety_seen()


# What every step task is: it takes an action id and returns the action's resulting state.
ActionTask = StepTask[[int], str]
