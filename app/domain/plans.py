"""Action plans: which steps an alarm of a given family and kind calls for, and when.

A site's plan is what the integrator wrote in the sites file: per alarm family, an ordered list of
steps, each an action kind (a task name from ``vendors.PLAN_STEP_KINDS``, the steps the vendors
declare a plan may name) with an optional delay and a flag saying whether a cancel stops it. Intake
turns the steps into action rows with ``due_at``; running them is the workers' business. This module
holds only the model and its invariants, so that a plan built in code obeys the same safety rules as
one read from the file. The words a plan is written in (families, kinds, plan keys) live in
``app.domain.plan_keys`` and are re-exported here.

The one rule that must never bend: life-safety alarms (``NEVER_HELD_FAMILIES``) are never held for a
cancel window. A user who opens the panel seconds after a fire alarm has not put out the fire, so a
step on those families may not be cancellable, and neither may a ``default`` step that those
families would fall back to.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from app.domain.plan_keys import ALARM_KINDS as ALARM_KINDS
from app.domain.plan_keys import DEFAULT_KEY as DEFAULT_KEY
from app.domain.plan_keys import FAMILIES as FAMILIES
from app.domain.plan_keys import KINDS as KINDS
from app.domain.plan_keys import NEVER_HELD_FAMILIES as NEVER_HELD_FAMILIES
from app.domain.plan_keys import PLAN_KEYS as PLAN_KEYS
from app.domain.plan_keys import TROUBLE_KEY as TROUBLE_KEY
from app.domain.plan_keys import TROUBLE_KINDS as TROUBLE_KINDS
from app.domain.plan_keys import UNKNOWN_KEY as UNKNOWN_KEY
from app.domain.plan_keys import format_duration as format_duration
from vendors import PLAN_STEP_KINDS

# A delay longer than this is a typo (an alarm does not wait a day for its first call).
MAX_STEP_DELAY = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Step:
    """One action a plan calls for.

    ``kind`` is the task name the action runs under, ``after`` its delay from the alarm's first event,
    and ``cancellable`` whether it is held for the site's cancel window (a call after 60 s that a
    user's cancel is expected to stop). A cancel in time stops every step not started, marked or not
    (app.domain.intake); the mark says which steps wait for it, and life-safety steps never may.
    """

    kind: str
    after: timedelta = timedelta(0)
    cancellable: bool = False


@dataclass(frozen=True, slots=True)
class PlanProblem:
    """A broken plan invariant: ``where`` is relative to the plan (``"fire[1].cancellable"``)."""

    where: str
    message: str


def plan_problems(steps_by_key: Mapping[str, tuple[Step, ...]]) -> list[PlanProblem]:
    """Every invariant ``steps_by_key`` breaks, in file order; empty when it is a valid plan.

    The sites-file loader reports these with the file and plan name in front; ``Plan`` refuses to be
    built when there is any, so both ways of making a plan obey the same rules.
    """
    problems: list[PlanProblem] = []
    # Families with no list of their own fall back to the default steps, so those steps inherit the
    # never-held rule for each of them ("unknown" never falls back: it runs its own list or nothing).
    exposed = sorted(NEVER_HELD_FAMILIES - steps_by_key.keys() - {UNKNOWN_KEY})
    for key, steps in steps_by_key.items():
        if key not in PLAN_KEYS:
            problems.append(PlanProblem(key, f'"{key}" is not a family, "trouble" or "default"'))
            continue
        seen: set[str] = set()
        for index, step in enumerate(steps):
            where = f"{key}[{index}]"
            if step.kind not in PLAN_STEP_KINDS:
                known = ", ".join(sorted(PLAN_STEP_KINDS))
                problems.append(PlanProblem(where, f'"{step.kind}" is not a step kind ({known})'))
            elif step.kind in seen:
                problems.append(PlanProblem(where, f'"{step.kind}" is already a step of {key}'))
            seen.add(step.kind)
            if step.after < timedelta(0) or step.after > MAX_STEP_DELAY:
                shown = format_duration(step.after)
                problems.append(PlanProblem(f"{where}.after", f'"{shown}" is not between "0s" and "24h"'))
            if step.cancellable and key in NEVER_HELD_FAMILIES:
                problems.append(
                    PlanProblem(
                        f"{where}.cancellable",
                        f'"{step.kind}" cannot be cancellable: '
                        f"{key} alarms are never held for a cancel window",
                    )
                )
            elif step.cancellable and key == DEFAULT_KEY and exposed:
                problems.append(
                    PlanProblem(
                        f"{where}.cancellable",
                        f'"{step.kind}" cannot be cancellable: the default steps also run for '
                        f"{', '.join(exposed)} (no list of their own), which are never held for a "
                        "cancel window; give them their own lists or drop cancellable",
                    )
                )
    return problems


@dataclass(frozen=True, slots=True)
class Plan:
    """A named action plan: per plan key (a family, ``trouble`` or ``default``), ordered steps.

    Which steps an event calls for (``steps_for``):

    - kind ``alarm``: the family's own list if the plan has one (even an empty one, which means "do
      nothing for this family"), else the ``default`` list, else nothing. A family the plan does not
      name therefore takes the default steps.
    - kind ``unknown`` (a code outside the catalogue): the ``unknown`` list if the plan has one, else
      nothing. Never ``default``: the bridge cannot know what the code means, so nothing is
      dispatched on a guess unless the integrator opted in; a person is asked either way.
    - kind ``trouble`` or ``supervisory``: the ``trouble`` list, else nothing. Troubles never fall
      back to ``default``: a low battery must not dispatch a guard because the default says so.
    - every other kind (``restore``, ``trouble_restore``, ``cancel``, ``opening``, ``closing``,
      ``bypass``, ``unbypass``, ``test``, ``status``): nothing. Those events act on alarms that
      already exist (closing pending work, stopping cancellable steps); intake handles that.
    """

    key: str
    # Excluded from the hash (a mapping is not hashable); equal plans still hash equal by key.
    steps_by_key: Mapping[str, tuple[Step, ...]] = field(hash=False)

    def __post_init__(self) -> None:
        problems = plan_problems(self.steps_by_key)
        if problems:
            raise ValueError(f"plan {self.key!r}: " + "; ".join(f"{p.where}: {p.message}" for p in problems))
        # A read-only copy, so a frozen Plan cannot change through the caller's dict.
        object.__setattr__(
            self, "steps_by_key", MappingProxyType({k: tuple(v) for k, v in self.steps_by_key.items()})
        )

    def steps_for(self, family: str, kind: str) -> tuple[Step, ...]:
        """The steps an event of ``family`` and ``kind`` calls for, by the rules in the class docstring."""
        if kind == UNKNOWN_KEY or family == UNKNOWN_KEY:
            return self.steps_by_key.get(UNKNOWN_KEY, ())
        if kind in ALARM_KINDS:
            if family in self.steps_by_key:
                return self.steps_by_key[family]
            return self.steps_by_key.get(DEFAULT_KEY, ())
        if kind in TROUBLE_KINDS:
            return self.steps_by_key.get(TROUBLE_KEY, ())
        return ()


# The plan of an alarm that no site claims (an account or zone nobody configured). It has no steps on
# purpose: with no site there is no address and no vendor table (organization, phone connection,
# emergency contacts) to act with, and guessing would send a guard or a 911 request to the wrong place.
# The alarm is still recorded and shown to an operator, who decides; "no silent drop" holds.
UNROUTED_PLAN = Plan(key="unrouted", steps_by_key={})
