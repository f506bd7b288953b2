"""Every task the worker registers is named: a system task in app/domain/task_names.py, or a step a
vendor declares (``vendors.<key>.steps``, through the registry); and every one of those names, which
the web or the dispatcher sends, is registered, so a queued message always finds its task."""

from __future__ import annotations

import importlib

import pytest

import vendors
from app.domain import task_names

pytestmark = pytest.mark.unit

SYSTEM = frozenset(v for k, v in vars(task_names).items() if k.isupper() and isinstance(v, str))


def test_worker_tasks_are_all_named_constants() -> None:
    from workers.celery_app import celery_app

    celery_app.loader.import_default_modules()
    ours = {name for name in celery_app.tasks if not name.startswith("celery.")}
    assert ours <= SYSTEM | vendors.STEPS
    assert {task_names.SYSTEM_SELFTEST, task_names.DISPATCHER_SEND_DUE_ACTIONS} <= ours
    assert ours >= vendors.STEPS


@pytest.mark.parametrize("vendor", vendors.VENDORS, ids=lambda vendor: vendor.key)
def test_each_vendor_s_package_is_named_by_its_key_and_declares_its_steps(vendor: vendors.Vendor) -> None:
    package = importlib.import_module(f"vendors.{vendor.key}")
    assert package.VENDOR is vendor
    assert vendor.steps == importlib.import_module(f"vendors.{vendor.key}.steps").ALL
    assert all(step.startswith(f"{vendor.key}.") for step in vendor.steps)
