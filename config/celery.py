"""Celery settings shared by the producers (web, dispatcher) and the consumers (workers).

Configured for not losing work: a message is acknowledged only after its task returns, a killed
worker child puts its message back, each worker process holds one message at a time, and only JSON
crosses the broker. The ledger remains the source of truth; these settings only make the doorbell
reliable.
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from config.settings import Settings

LIFE_SAFETY_QUEUE = "life_safety"
DEFAULT_QUEUE = "default"
BULK_QUEUE = "bulk"
# The dispatcher's ticks have a queue of their own: behind a backlog of life-safety steps they would
# expire unread, and lost leases, delayed steps and unsent actions would wait for the backlog to drain.
DISPATCH_QUEUE = "dispatch"
QUEUES = (LIFE_SAFETY_QUEUE, DEFAULT_QUEUE, BULK_QUEUE, DISPATCH_QUEUE)


# The longest one broker operation (a publish, an ack) may take before it fails.
BROKER_SOCKET_TIMEOUT_S = 5.0


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration mapping for one process."""
    transport_options: dict[str, Any] = {
        # Redis redelivers an unacknowledged message after this. Delays never live in the broker (they
        # wait in the ledger), so this only bounds how long a message held by a dead worker stays hidden.
        "visibility_timeout": settings.broker_visibility_timeout_s,
        # kombu waits forever on a connection whose peer went silent (a failover, a dropped NAT entry):
        # a publish after commit would hang instead of failing, and a failed publish is what hands the
        # step back to the next dispatcher tick. Bounded here, above the consumers' 1 s BRPOP.
        "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_S,
        "socket_keepalive": True,
    }
    if settings.broker_key_prefix:
        # Lets several deployments (or test runs) share one Redis without seeing each other's queues.
        transport_options["global_keyprefix"] = settings.broker_key_prefix
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # outcomes are ledger rows, not results
        "task_acks_late": True,  # a message survives a worker that dies mid-task...
        "task_reject_on_worker_lost": True,  # ...including a killed child process
        "worker_prefetch_multiplier": 1,
        # Threads, many per process: a step spends its time waiting on a vendor, not on the CPU.
        # `urgent` and `bulk` take URGENT_CONCURRENCY and BULK_CONCURRENCY (workers/celery_app.py).
        # Celery enforces no time limit on threads: each step has a deadline of its own (the soft
        # limit, workers/perform.py).
        "worker_pool": settings.worker_pool,
        "worker_concurrency": settings.worker_concurrency,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_routing_key": DEFAULT_QUEUE,
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        # Off unless someone watches: Flower switches task events on in the workers while it runs
        # (its enable_events), and they cost every step a publish to Redis (8 % of a worker's CPU).
        "worker_send_task_events": False,
        # Not the "sent" event too: it doubled every publish on the intake path (a second message to
        # Redis, ~0.5 ms of CPU), and Flower lists a task from the moment a worker receives it.
        "task_send_sent_event": False,
        "enable_utc": True,
        "timezone": "UTC",
    }


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """The dispatcher tick and the watchdog: on their own queue, discarded if they go stale."""
    interval = settings.dispatch_interval_s
    return {
        "send-due-actions": {
            "task": "dispatcher.send_due_actions",
            "schedule": interval,
            # A backlog of old ticks is worthless: the next tick does the same work.
            "options": {
                "queue": DISPATCH_QUEUE,
                "routing_key": DISPATCH_QUEUE,
                "expires": interval * 5,
            },
        },
        "watchdog": {
            "task": "system.watchdog",
            "schedule": settings.watchdog_interval_s,
            "options": {
                "queue": DISPATCH_QUEUE,
                "routing_key": DISPATCH_QUEUE,
                "expires": settings.watchdog_interval_s,
            },
        },
    }
