"""An unreachable ledger is a 503 the sender retries, never a 500 nor a 2xx; real bugs stay 500."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from app.domain.outbox import RecordingOutbox
from app.web import create_app
from app.web.errors import ledger_unreachable
from config.settings import Settings

pytestmark = pytest.mark.unit
UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # nothing listens on port 1


def test_an_unreachable_ledger_answers_503_with_retry_after(make_settings: Callable[..., Settings]) -> None:
    app = create_app(
        make_settings(database_url=UNREACHABLE, operator_api_keys=("test-operator-key",)),
        outbox=RecordingOutbox(),
        ping_broker=lambda: None,
    )
    try:
        response = app.test_client().get("/v1/alarms", headers={"Authorization": "Bearer test-operator-key"})
    finally:
        app.extensions["alarm_bridge"].engine.dispose()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json is not None
    assert response.json["error"] == "unavailable"
    assert "request id" in response.json["message"]


def _wrapped(cls: type[sa_exc.DBAPIError], *, invalidated: bool = False) -> sa_exc.DBAPIError:
    return cls("SELECT 1", {}, Exception("boom"), connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        (_wrapped(sa_exc.OperationalError), True),
        (_wrapped(sa_exc.InterfaceError), True),
        (_wrapped(sa_exc.DBAPIError, invalidated=True), True),
        (_wrapped(sa_exc.IntegrityError, invalidated=True), True),  # the connection died under it
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (_wrapped(sa_exc.IntegrityError), False),
        (_wrapped(sa_exc.ProgrammingError), False),
        (_wrapped(sa_exc.DBAPIError), False),
        (RuntimeError("a bug"), False),
    ],
)
def test_only_connection_failures_count_as_an_unreachable_ledger(
    error: BaseException, unreachable: bool
) -> None:
    assert ledger_unreachable(error) is unreachable
