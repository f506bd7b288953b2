"""DESIGN.md "Record": an open alarm for the same site, zone and category (family) inside the grouping
window absorbs repeats, and nothing else does. On both ledgers, through record_event.

Each test here kills a mutant of intake's join that the other tests let live: the join without its
family test, without its site test, joining an alarm that has ended, or joining an alarm of a lower
priority (a supervisory absorbed by a trouble's alarm).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.domain import operations
from app.domain.events import Event
from app.domain.intake import IntakeRules, Receipt, record_event
from app.domain.sites import Sites
from app.domain.sites_file import load_sites
from app.ledger.models import Action, Alarm, Outcome
from app.ledger.session import make_sessionmaker
from tests.sites_fixture import EXAMPLE_SITES, MONTREAL_ACCOUNT, SOURCE_ENV, example_sites
from vendors.callonalarm import steps as callonalarm_steps
from vendors.tracktik import steps as tracktik_steps

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)
SITES = example_sites()

# A second tenant whose panels report, through a source of its own, the same account number as
# Montreal HQ (account numbers are only unique per receiver line, i.e. per source).
OTHER_TENANT = """
[sources.other-panels]
kind = "panel"
token_env = "OTHER_PANELS_TOKEN"

[plans.calls]
burglary = ["callonalarm.trigger"]

[sites.other-tenant]
name = "Other tenant"
sources = ["other-panels"]
accounts = ["ab-95367"]
timezone = "America/New_York"
site_type = "COMMERCIAL"
plan = "calls"
callonalarm = { account_number = "1009" }

[sites.other-tenant.location]
address_line1 = "350 5th Ave"
city = "New York"
state = "NY"
country = "US"
postal_code = "10118"
"""


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def panel(code: str, *, after_s: float = 0, source: str = "acme-panels", event_id: str) -> Event:
    at = T0 + timedelta(seconds=after_s)
    return Event(
        source_key=source, source_kind="panel", received_at=at, account=MONTREAL_ACCOUNT,
        code=code, zone="3", occurred_at=at, sender_event_id=event_id, payload={"code": code},
    )  # fmt: skip


def record(sessions: sessionmaker[Session], event: Event, sites: Sites = SITES) -> Receipt:
    with sessions.begin() as session:
        return record_event(session, event, sites=sites, rules=RULES)


def alarm(sessions: sessionmaker[Session], alarm_id: int | None) -> Alarm:
    with sessions() as session:
        return session.get_one(Alarm, alarm_id)


def step_kinds(sessions: sessionmaker[Session], alarm_id: int | None) -> set[str]:
    with sessions() as session:
        return set(session.execute(select(Action.kind).where(Action.alarm_id == alarm_id)).scalars())


def test_a_burglary_after_a_water_alarm_of_its_zone_opens_a_burglary_alarm_with_its_plan(
    sessions: sessionmaker[Session],
) -> None:
    """Same site, zone and priority (both property), another family: not a repeat."""
    water = record(sessions, panel("WA", event_id="w1"))
    burglary = record(sessions, panel("BA", after_s=30, event_id="b1"))

    assert burglary.alarm_id != water.alarm_id
    assert burglary.opened == ("burglary", "property")
    opened = alarm(sessions, burglary.alarm_id)
    assert (opened.family, opened.code, opened.event_count) == ("burglary", "BA", 1)
    # The burglary plan (a guard now, a held call), not nothing as a repeat of the water alarm.
    assert step_kinds(sessions, burglary.alarm_id) == {tracktik_steps.CREATE_ALARM, callonalarm_steps.TRIGGER}
    assert alarm(sessions, water.alarm_id).event_count == 1


def test_a_burglary_after_a_fire_alarm_of_its_zone_is_not_absorbed_by_the_fire(
    sessions: sessionmaker[Session],
) -> None:
    """A lower priority may join a higher one only within its own family (a fire trouble joins a
    fire alarm); a burglary is another category and gets its own response."""
    fire = record(sessions, panel("FA", event_id="f1"))
    burglary = record(sessions, panel("BA", after_s=30, event_id="b1"))

    assert burglary.alarm_id != fire.alarm_id
    assert alarm(sessions, burglary.alarm_id).family == "burglary"
    assert [d.task_name for d in burglary.due_actions] == [tracktik_steps.CREATE_ALARM]
    assert alarm(sessions, fire.alarm_id).event_count == 1


def test_a_signal_after_the_operator_ended_the_alarm_opens_a_new_one_with_its_plan(
    sessions: sessionmaker[Session],
) -> None:
    first = record(sessions, panel("BA", event_id="b1"))
    with sessions.begin() as session:
        operations.end(
            session, first.alarm_id or 0, Outcome.FALSE_ALARM, now=T0 + timedelta(seconds=20), max_attempts=8
        )

    again = record(sessions, panel("BA", after_s=60, event_id="b2"))

    assert again.alarm_id != first.alarm_id and again.opened is not None
    assert [d.task_name for d in again.due_actions] == [tracktik_steps.CREATE_ALARM]
    ended = alarm(sessions, first.alarm_id)
    assert (ended.state, ended.event_count) == ("ended", 1)
    assert alarm(sessions, again.alarm_id).state == "open"


def test_one_account_number_at_two_sites_groups_per_site(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The other tenant's alarm must not be absorbed by Montreal HQ's open alarm of the same account,
    zone and family: it would get Montreal's response (or none) instead of its own."""
    path = tmp_path / "sites.toml"
    path.write_text(EXAMPLE_SITES.read_text(encoding="utf-8") + OTHER_TENANT, encoding="utf-8")
    sites = load_sites(path, {**SOURCE_ENV, "OTHER_PANELS_TOKEN": "other-panels-token-0123456789"})

    montreal = record(sessions, panel("BA", event_id="m1"), sites)
    other = record(sessions, panel("BA", after_s=10, source="other-panels", event_id="o1"), sites)

    assert other.alarm_id != montreal.alarm_id
    assert alarm(sessions, other.alarm_id).site_key == "other-tenant"
    assert [d.task_name for d in other.due_actions] == [callonalarm_steps.TRIGGER]
    assert alarm(sessions, montreal.alarm_id).event_count == 1


# (family, trouble at technical priority, supervisory at property priority): neither is an alarm
# kind, so only the priority test of the join keeps the supervisory out of the trouble's alarm.
TROUBLE_THEN_SUPERVISORY = [
    ("fire", "FT", "FS"),
    ("sprinkler", "ST", "SS"),
    ("access", "DT", "CI"),
    ("access", "DT", "CT"),
]


@pytest.mark.parametrize(("family", "trouble_code", "supervisory_code"), TROUBLE_THEN_SUPERVISORY)
def test_a_supervisory_after_a_trouble_of_its_zone_opens_its_own_alarm_on_its_own_queue(
    sessions: sessionmaker[Session], family: str, trouble_code: str, supervisory_code: str
) -> None:
    """An event joins only an alarm of its own priority or a higher one. A supervisory (property)
    after a trouble (technical) of its family and zone is not a repeat of the trouble: absorbed, it
    would ride the trouble's plan on the bulk queue instead of opening its own on the default queue."""
    trouble = record(sessions, panel(trouble_code, event_id="t1"))
    supervisory = record(sessions, panel(supervisory_code, after_s=30, event_id="s1"))

    assert trouble.opened == (family, "technical")
    assert [(d.task_name, d.queue) for d in trouble.due_actions] == [(callonalarm_steps.TRIGGER, "bulk")]
    assert supervisory.alarm_id != trouble.alarm_id
    assert supervisory.opened == (family, "property")
    opened = alarm(sessions, supervisory.alarm_id)
    assert (opened.family, opened.code, opened.priority, opened.event_count) == (
        family, supervisory_code, "property", 1,
    )  # fmt: skip
    # Its own plan (the site's trouble list), planned on the property queue, not the bulk one.
    assert [(d.task_name, d.queue) for d in supervisory.due_actions] == [
        (callonalarm_steps.TRIGGER, "default")
    ]
    assert step_kinds(sessions, supervisory.alarm_id) == {callonalarm_steps.TRIGGER}
    assert alarm(sessions, trouble.alarm_id).event_count == 1


def test_a_fire_trouble_after_a_fire_supervisory_of_its_zone_joins_it(
    sessions: sessionmaker[Session],
) -> None:
    """The other direction: a lower priority joins an open alarm of a higher one in its family (the
    supervisory's response is already more than the trouble's), and plans nothing of its own."""
    supervisory = record(sessions, panel("FS", event_id="fs1"))
    trouble = record(sessions, panel("FT", after_s=30, event_id="ft1"))

    assert trouble.alarm_id == supervisory.alarm_id
    assert trouble.opened is None and trouble.due_actions == ()
    joined = alarm(sessions, supervisory.alarm_id)
    assert (joined.code, joined.priority, joined.event_count) == ("FS", "property", 2)
    assert step_kinds(sessions, supervisory.alarm_id) == {callonalarm_steps.TRIGGER}
