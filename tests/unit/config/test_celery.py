"""The Celery configuration that keeps work from being lost."""

from __future__ import annotations

import pytest

from config.celery import QUEUES, beat_schedule, celery_config
from config.settings import Settings

pytestmark = pytest.mark.unit


def test_configured_for_not_losing_work() -> None:
    conf = celery_config(Settings(redis_url="redis://127.0.0.1:6379/0"))
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["accept_content"] == ["json"]
    assert conf["task_serializer"] == "json"
    assert conf["broker_connection_retry_on_startup"] is True
    assert conf["task_soft_time_limit"] < conf["task_time_limit"]
    # Redis must not redeliver a message while its task may still legitimately run.
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"]
    names = [q.name for q in conf["task_queues"]]
    assert names == ["life_safety", "default", "bulk", "dispatch"] == list(QUEUES)


def test_the_dispatcher_tick_and_the_watchdog_have_their_own_queue_and_expire() -> None:
    # Behind a backlog of fire alarms on `life_safety`, the ticks would expire unread (issue 8).
    schedule = beat_schedule(Settings(dispatch_interval_s=1.0, watchdog_interval_s=30.0))
    entry = schedule["send-due-actions"]
    assert entry["task"] == "dispatcher.send_due_actions"
    assert entry["options"]["queue"] == "dispatch"
    assert entry["options"]["expires"] <= 10
    watchdog = schedule["watchdog"]
    assert (watchdog["task"], watchdog["options"]["queue"]) == ("system.watchdog", "dispatch")
    assert watchdog["options"]["expires"] <= 30


def test_a_key_prefix_isolates_deployments_sharing_one_redis() -> None:
    conf = celery_config(Settings(broker_key_prefix="site-a:"))
    assert conf["broker_transport_options"]["global_keyprefix"] == "site-a:"
