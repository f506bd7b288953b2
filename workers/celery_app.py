"""The Celery application the worker and beat processes run (``celery --app workers.celery_app``).

A process entry point, so it is allowed to build things at import: it reads the settings once and
configures logging. It never builds the Flask app: workers need the ledger and the clients only.
The app holds the worker runtime (``workers.runtime.RuntimeHolder``): each worker process builds its
own (engine, clients) on first use and again after a fork, so nothing here touches the ledger at
import; the tasks reach it through their base class (``workers.step_task.StepTask``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import structlog
from celery import Celery, Task, bootsteps, signals
from click.core import ParameterSource

import vendors
from app import telemetry
from app.adapters import kombu_redis
from app.domain.sites_file import read_sites
from config.celery import BULK_QUEUE, LIFE_SAFETY_QUEUE, beat_schedule, celery_config
from config.logging import configure_logging
from config.settings import ConfigurationError, load_settings
from workers.runtime import RuntimeHolder, attach_runtime, runtime_holder

# The system's tasks, then every vendor's (``vendors.<key>.tasks``, from the registry).
TASK_MODULES = [
    "workers.dispatcher",
    "workers.tasks.system",
    "workers.tasks.watchdog",
    *vendors.TASK_MODULES,
]

settings = load_settings(vendors.SETTINGS)
Path(settings.var_dir).mkdir(parents=True, exist_ok=True)  # beat keeps its schedule file here
celery_app = Celery("alarm_bridge", include=TASK_MODULES)
celery_app.conf.update(celery_config(settings))
kombu_redis.use_shared_client(celery_app)  # one Redis client per channel for deliveries and acks
celery_app.conf.beat_schedule = beat_schedule(settings)
celery_app.conf.beat_schedule_filename = f"{settings.var_dir}/celerybeat-schedule"
attach_runtime(celery_app, RuntimeHolder(settings))
app = celery_app  # `celery --app workers.celery_app` looks for `app` or `celery`


class SizeForTheQueues(bootsteps.Step):
    """Before the pool starts: a worker that consumes the life-safety queue (the Procfile's `urgent`)
    runs URGENT_CONCURRENCY steps at once and one that consumes only the bulk queue (`bulk`)
    BULK_CONCURRENCY, unless ``--concurrency`` said otherwise, and the runtime's database and HTTP
    pools are sized to what the process runs at once."""

    requires = ("celery.worker.components:Pool",)  # after Pool.__init__, before the pool is created

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        consumed = parent.app.amqp.queues.consume_from
        serves_life_safety = consumed is None or LIFE_SAFETY_QUEUE in consumed
        serves_only_bulk = consumed is not None and set(consumed) == {BULK_QUEUE}
        if not _concurrency_given():
            if serves_life_safety:
                parent.concurrency = parent.min_concurrency = settings.urgent_concurrency
            elif serves_only_bulk:
                parent.concurrency = parent.min_concurrency = settings.bulk_concurrency
        runtime_holder(parent.app).set_concurrency(int(parent.concurrency or 1))
        super().__init__(parent, **kwargs)


celery_app.steps["worker"].add(SizeForTheQueues)


def _concurrency_given() -> bool:
    """Whether the `celery worker` command line (or its CELERY_ environment) set ``--concurrency``.

    Asked of click, not read from the value: Celery fills an absent flag in with WORKER_CONCURRENCY,
    so comparing values took an explicit ``--concurrency 48`` on `urgent` for no flag at all.
    """
    context = click.get_current_context(silent=True)
    if context is None:  # a worker started from code, not from the command line
        return False
    source = context.get_parameter_source("concurrency")
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


@signals.setup_logging.connect
def _configure_logging(**_: Any) -> None:
    configure_logging(settings)


def _refuse_what_cannot_work() -> None:
    """At a worker's or beat's start: exit with the reason (as the web and the receiver do) without a
    broker (Celery would try amqp://localhost instead) or on a sites file that cannot be loaded, rather
    than report ready and fail every dispatcher and watchdog run. The runtime loads the file again on
    first use; this is the same load, done before anything starts."""
    try:
        settings.check_broker()
    except ConfigurationError as exc:
        sys.exit(f"alarm-bridge: invalid configuration: {exc}")
    read_sites(settings.sites_file, settings.environ)


@signals.worker_init.connect
def _check_worker_start(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "app", None) is celery_app:  # not a worker some test built on its own app
        _refuse_what_cannot_work()


@signals.beat_init.connect
def _check_beat_start(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "app", None) is celery_app:
        _refuse_what_cannot_work()


@signals.worker_init.connect
def _share_metrics(sender: Any = None, **_: Any) -> None:
    """Before the pool forks: every child records its metrics where this host's /metrics reads them."""
    if getattr(sender, "app", None) is not celery_app:
        return  # a worker some test built on its own app
    telemetry.use_multiprocess_metrics(settings.prometheus_dir)
    if settings.worker_metrics_port is not None:
        telemetry.serve_metrics(settings.worker_metrics_port)


@signals.task_prerun.connect
def _bind_task(task_id: str, task: Task[..., object], kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    structlog.contextvars.bind_contextvars(
        task_id=task_id, task=task.name, action_id=(kwargs or {}).get("action_id")
    )


@signals.task_postrun.connect
def _unbind_task(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
