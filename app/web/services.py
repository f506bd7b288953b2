"""The services a web process holds (settings, ledger, outbox, broker check), reached by one accessor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.domain.intake import IntakeRules
from app.domain.outbox import Outbox
from app.domain.sites import Sites
from app.web.admission import PriorityGate
from config.settings import Settings


@dataclass(frozen=True, slots=True)
class AppServices:
    """A small typed holder kept in ``app.extensions`` instead of loose keys or module globals."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    outbox: Outbox
    ping_broker: Callable[[], None]
    sites: Sites
    intake_rules: IntakeRules
    gate: PriorityGate


def services() -> AppServices:
    """The current app's services."""
    found: AppServices = current_app.extensions["alarm_bridge"]
    return found
