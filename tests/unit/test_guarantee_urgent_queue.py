"""DESIGN.md "Running it": `urgent` runs the life-safety queue alone, so fire never waits behind a storm
of troubles; and a life-safety step always travels on that queue.

Read from the Procfile the deployment runs and from where intake and the operator API route steps:
if the urgent process also consumed the default or bulk queue, its threads could all be busy with
property or trouble steps when a fire alarm's step arrives.
"""

from __future__ import annotations

import shlex

import pytest

from app.domain import sia
from config.celery import BULK_QUEUE, DEFAULT_QUEUE, LIFE_SAFETY_QUEUE
from tests.processes import procfile

pytestmark = pytest.mark.unit


def consumed_queues() -> dict[str, set[str]]:
    """Each Celery worker line of the Procfile and the queues it consumes (``--queues a,b``)."""
    found: dict[str, set[str]] = {}
    for name, command in procfile().items():
        argv = shlex.split(command)
        if "worker" not in argv or "celery" not in argv[0]:
            continue
        queues = next(
            (argv[i + 1] for i, arg in enumerate(argv) if arg in ("--queues", "-Q")),
            None,
        )
        assert queues is not None, f"{name}: a worker without --queues consumes every queue"
        found[name] = set(queues.split(","))
    return found


def test_the_urgent_process_consumes_no_property_or_trouble_queue() -> None:
    workers = consumed_queues()

    assert LIFE_SAFETY_QUEUE in workers["urgent"]
    assert not workers["urgent"] & {DEFAULT_QUEUE, BULK_QUEUE}


def test_only_the_urgent_process_consumes_the_life_safety_queue() -> None:
    takers = {name for name, queues in consumed_queues().items() if LIFE_SAFETY_QUEUE in queues}
    assert takers == {"urgent"}


@pytest.mark.parametrize("code", ["FA", "MA", "PA", "HA", "GA", "QZ"])
def test_life_safety_steps_travel_on_the_life_safety_queue(code: str) -> None:
    # QZ is outside the catalogue: it might be a fire.
    assert sia.is_life_safety(code)
    assert sia.queue_for(code) == LIFE_SAFETY_QUEUE
