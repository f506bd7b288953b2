"""Action plans: which steps an event calls for, and the rule that life-safety alarms are never held."""

from datetime import timedelta

import pytest

from app.domain.plans import (
    FAMILIES,
    KINDS,
    NEVER_HELD_FAMILIES,
    PLAN_KEYS,
    UNROUTED_PLAN,
    Plan,
    Step,
    format_duration,
    plan_problems,
)
from vendors.callonalarm import steps as callonalarm_steps
from vendors.rapidsos import steps as rapidsos_steps
from vendors.tracktik import steps as tracktik_steps

pytestmark = pytest.mark.unit

TRACKTIK = Step(tracktik_steps.CREATE_ALARM)
CALL = Step(callonalarm_steps.TRIGGER)
DELAYED_CALL = Step(callonalarm_steps.TRIGGER, after=timedelta(seconds=60), cancellable=True)
RAPIDSOS = Step(rapidsos_steps.CREATE_ALERT)

PLAN = Plan(
    key="commercial",
    steps_by_key={
        "fire": (TRACKTIK, RAPIDSOS),
        "burglary": (TRACKTIK, DELAYED_CALL),
        "test": (),
        "trouble": (CALL,),
        "default": (TRACKTIK,),
    },
)

# Kinds that act on alarms that already exist: they never start steps of their own.
FOLLOW_UP_KINDS = (
    "restore",
    "trouble_restore",
    "cancel",
    "opening",
    "closing",
    "bypass",
    "unbypass",
    "test",
    "status",
)


def test_an_alarm_takes_its_familys_steps_in_order() -> None:
    assert PLAN.steps_for("burglary", "alarm") == (TRACKTIK, DELAYED_CALL)


def test_an_alarm_of_a_family_without_a_list_takes_the_default_steps() -> None:
    assert PLAN.steps_for("water", "alarm") == (TRACKTIK,)


def test_an_unknown_code_runs_nothing_without_an_unknown_list() -> None:
    # PLAN has a default list: an unknown code must not take it (no dispatch on a guess).
    assert PLAN.steps_for("unknown", "unknown") == ()
    assert PLAN.steps_for("unknown", "alarm") == ()
    assert PLAN.steps_for("fire", "unknown") == ()


def test_an_unknown_code_runs_only_the_unknown_list_when_the_plan_opts_in() -> None:
    plan = Plan(key="opt-in", steps_by_key={"unknown": (RAPIDSOS,), "default": (TRACKTIK,)})

    assert plan.steps_for("unknown", "unknown") == (RAPIDSOS,)
    assert plan.steps_for("burglary", "alarm") == (TRACKTIK,)


def test_a_family_the_plan_does_not_know_takes_the_default_steps() -> None:
    assert PLAN.steps_for("not-a-family", "alarm") == (TRACKTIK,)


def test_an_empty_family_list_means_nothing_rather_than_the_default() -> None:
    assert PLAN.steps_for("test", "alarm") == ()


def test_an_alarm_with_no_family_list_and_no_default_calls_for_nothing() -> None:
    plan = Plan(key="fire-only", steps_by_key={"fire": (TRACKTIK,)})

    assert plan.steps_for("burglary", "alarm") == ()


@pytest.mark.parametrize("kind", ["trouble", "supervisory"])
def test_troubles_take_the_trouble_steps_whatever_the_family(kind: str) -> None:
    assert PLAN.steps_for("fire", kind) == (CALL,)
    assert PLAN.steps_for("power", kind) == (CALL,)


def test_troubles_never_fall_back_to_the_default_steps() -> None:
    plan = Plan(key="no-trouble", steps_by_key={"default": (TRACKTIK,)})

    assert plan.steps_for("power", "trouble") == ()


@pytest.mark.parametrize("kind", FOLLOW_UP_KINDS)
def test_restores_cancels_openings_and_other_follow_ups_start_no_steps(kind: str) -> None:
    assert PLAN.steps_for("burglary", kind) == ()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("kind", ["alarm", "trouble", "unknown", "restore"])
def test_the_unrouted_plan_calls_for_nothing_so_a_person_decides(family: str, kind: str) -> None:
    assert UNROUTED_PLAN.steps_for(family, kind) == ()


@pytest.mark.parametrize("family", sorted(NEVER_HELD_FAMILIES))
def test_a_cancellable_step_on_a_life_safety_family_is_refused(family: str) -> None:
    with pytest.raises(ValueError, match=f"{family} alarms are never held for a cancel window"):
        Plan(key="unsafe", steps_by_key={family: (DELAYED_CALL,)})


def test_fire_medical_holdup_panic_gas_and_emergency_are_never_held() -> None:
    assert {"fire", "medical", "holdup", "panic", "gas", "emergency"} <= NEVER_HELD_FAMILIES


def test_a_cancellable_default_step_is_refused_while_a_life_safety_family_falls_back_to_it() -> None:
    with pytest.raises(ValueError, match=r"default steps also run for .*fire"):
        Plan(key="unsafe", steps_by_key={"default": (DELAYED_CALL,)})


def test_a_cancellable_default_step_is_allowed_once_every_life_safety_family_has_its_own_list() -> None:
    own_lists: dict[str, tuple[Step, ...]] = {family: (TRACKTIK,) for family in NEVER_HELD_FAMILIES}

    plan = Plan(key="safe", steps_by_key={**own_lists, "default": (DELAYED_CALL,)})

    assert plan.steps_for("burglary", "alarm") == (DELAYED_CALL,)
    assert plan.steps_for("fire", "alarm") == (TRACKTIK,)


def test_a_cancellable_burglary_step_is_allowed() -> None:
    assert PLAN.steps_for("burglary", "alarm")[1].cancellable


@pytest.mark.parametrize(
    ("steps_by_key", "where", "message"),
    [
        ({"fire": (Step("tracktik.create_alarms"),)}, "fire[0]", "is not a step kind"),
        ({"fire": (TRACKTIK, TRACKTIK)}, "fire[1]", "is already a step of fire"),
        ({"fires": (TRACKTIK,)}, "fires", "is not a family"),
        (
            {"burglary": (Step(callonalarm_steps.TRIGGER, after=timedelta(hours=25)),)},
            "burglary[0].after",
            "25h",
        ),
        (
            {"burglary": (Step(callonalarm_steps.TRIGGER, after=timedelta(seconds=-1)),)},
            "burglary[0].after",
            "-1s",
        ),
        ({"fire": (Step(callonalarm_steps.SEND_RESTORE),)}, "fire[0]", "is not a step kind"),
    ],
)
def test_plan_problems_name_the_step_at_fault(
    steps_by_key: dict[str, tuple[Step, ...]], where: str, message: str
) -> None:
    problems = plan_problems(steps_by_key)

    assert [p.where for p in problems] == [where]
    assert message in problems[0].message


def test_a_plan_with_a_problem_cannot_be_built() -> None:
    with pytest.raises(ValueError, match=r"plan 'bad': fire\[0\]: \"nope\" is not a step kind"):
        Plan(key="bad", steps_by_key={"fire": (Step("nope"),)})


def test_a_plan_is_not_changed_by_changing_the_mapping_it_was_built_from() -> None:
    steps: dict[str, tuple[Step, ...]] = {"fire": (TRACKTIK,)}
    plan = Plan(key="p", steps_by_key=steps)

    steps["burglary"] = (CALL,)

    assert "burglary" not in plan.steps_by_key
    with pytest.raises(TypeError):
        plan.steps_by_key["burglary"] = (CALL,)  # type: ignore[index]


def test_plans_are_hashable_and_equal_by_content() -> None:
    same = Plan(key="p", steps_by_key={"fire": (TRACKTIK,)})
    other = Plan(key="p", steps_by_key={"fire": (TRACKTIK,)})

    assert same == other
    assert hash(same) == hash(other)


def test_a_bare_step_has_no_delay_and_is_not_cancellable() -> None:
    assert Step("callonalarm.trigger") == Step("callonalarm.trigger", after=timedelta(0), cancellable=False)


def test_the_families_kinds_and_never_held_families_agree_with_the_sia_catalogue() -> None:
    from app.domain import sia

    assert {family.value for family in sia.Family} == FAMILIES
    assert {kind.value for kind in sia.Kind} == KINDS
    assert {family.value for family in sia.NEVER_HELD_FAMILIES} == NEVER_HELD_FAMILIES


def test_plan_keys_are_the_families_plus_trouble_and_default() -> None:
    assert {"trouble", "default"} | FAMILIES == PLAN_KEYS


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(minutes=2), "2m"),
        (timedelta(hours=24), "24h"),
        (timedelta(seconds=-5), "-5s"),
    ],
)
def test_durations_are_written_the_way_the_sites_file_writes_them(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
