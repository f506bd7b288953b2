"""Every task the worker registers is named in app/domain/task_names.py, and the web can reach it."""

from __future__ import annotations

import pytest

from app.domain import task_names

pytestmark = pytest.mark.unit


def test_worker_tasks_are_all_named_constants() -> None:
    from workers.celery_app import celery_app

    celery_app.loader.import_default_modules()
    ours = {name for name in celery_app.tasks if not name.startswith("celery.")}
    constants = {v for k, v in vars(task_names).items() if k.isupper() and isinstance(v, str)}
    assert ours <= constants
    assert {task_names.SYSTEM_SELFTEST, task_names.DISPATCHER_SEND_DUE_ACTIONS} <= ours
