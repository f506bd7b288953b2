"""Hand due actions to the broker by task name, after the transaction that created them commits.

The web process and the dispatcher publish through here; neither imports a task. A broker that is
down loses nothing: the failed actions are marked unsent in the ledger and the dispatcher sends
them on its next tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog
from celery import Celery
from kombu.exceptions import OperationalError
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.adapters import kombu_redis
from app.domain.actions import DueAction
from app.ledger.models import Action, ActionState
from config.celery import celery_config
from config.settings import Settings

log = structlog.get_logger(__name__)

# One quick reconnect, then give up: the caller is answering an alarm sender, and the dispatcher
# re-sends anything left unsent within a second or two.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def make_producer(settings: Settings) -> Celery:
    """A Celery app with no tasks: it only sends messages by name."""
    producer = Celery("alarm_bridge_producer", set_as_current=False)
    producer.conf.update(celery_config(settings))
    return kombu_redis.use_shared_client(producer)  # one Redis client for every publish


class Outbox:
    """Publishes ``{"action_id": id}`` messages; the ledger row already holds everything else."""

    def __init__(self, producer: Celery, sessions: sessionmaker[Session] | None = None) -> None:
        self._producer = producer
        self._sessions = sessions

    def publish(self, due: Iterable[DueAction]) -> list[int]:
        """Send each action's message; returns the ids that could not be sent (the dispatcher will)."""
        failed: list[int] = []
        for action in due:
            try:
                self._producer.send_task(
                    action.task_name,
                    kwargs={"action_id": action.id},
                    queue=action.queue,
                    routing_key=action.queue,
                    retry=True,
                    retry_policy=PUBLISH_RETRY_POLICY,
                )
            except (OperationalError, OSError) as exc:
                failed.append(action.id)
                log.warning("outbox.broker_unavailable", action_id=action.id, error=str(exc))
            except Exception as exc:  # the row is committed: never fail the caller now
                failed.append(action.id)
                log.exception("outbox.publish_failed", action_id=action.id, error=str(exc))
        if failed and self._sessions is not None:
            self._mark_unsent(failed)
        return failed

    def _mark_unsent(self, action_ids: list[int]) -> None:
        assert self._sessions is not None
        try:
            with self._sessions.begin() as session:
                session.execute(
                    update(Action)
                    .where(Action.id.in_(action_ids), Action.state == ActionState.QUEUED)
                    .values(state=ActionState.PENDING, enqueued_at=None)
                )
                # A lease-expired row the dispatcher tried to re-send: re-send it on the next tick.
                session.execute(
                    update(Action)
                    .where(Action.id.in_(action_ids), Action.state == ActionState.RUNNING)
                    .values(enqueued_at=None)
                )
        except Exception as exc:  # noqa: BLE001 - the lease-expiry path still recovers these
            log.error("outbox.mark_unsent_failed", action_ids=action_ids, error=str(exc))


class RecordingOutbox(Outbox):
    """An outbox that records what would be sent, for unit tests of the web side."""

    def __init__(self, on_publish: Callable[[DueAction], None] | None = None) -> None:
        self.sent: list[DueAction] = []
        self._on_publish = on_publish

    def publish(self, due: Iterable[DueAction]) -> list[int]:
        for action in due:
            self.sent.append(action)
            if self._on_publish is not None:
                self._on_publish(action)
        return []
