"""Alta Video: the source of video alarms, told an operator's verdict and the alarm's end.

Its steps act on the ongoing Alta alert the signal came with, so they run only for alarms from an
alta source, and never wait for a 911 request. Collecting the video needs the alert found first.
"""

from collections.abc import Mapping
from types import MappingProxyType

from app.domain import task_names
from vendors.alta import refs
from vendors.base import OperatorSteps, Vendor


def _from_alta(code: str | None, alarm_refs: Mapping[str, object]) -> bool:
    """An Alta webhook carries no SIA code; an alarm that found its Alta alert is Alta's too."""
    return code is None or refs.ALERT_GUID in alarm_refs


VENDOR = Vendor(
    key="alta",
    name="Alta",
    steps=frozenset(
        {
            task_names.ALTA_FIND_ONGOING_ALERT,
            task_names.ALTA_COLLECT_VIDEO,
            task_names.ALTA_VERIFY,
            task_names.ALTA_END,
        }
    ),
    plan_steps=(task_names.ALTA_FIND_ONGOING_ALERT, task_names.ALTA_COLLECT_VIDEO),
    refs=refs.ALL,
    upstream_ids=((refs.ALERT_GUID, "Alta alert guid"),),
    video_links=refs.VIDEO_LINKS,
    waking_refs=frozenset({refs.ALERT_GUID, refs.VIDEO_LINKS}),
    source_kind="alta",
    prerequisites=MappingProxyType({task_names.ALTA_COLLECT_VIDEO: task_names.ALTA_FIND_ONGOING_ALERT}),
    operator=OperatorSteps(applies=_from_alta, verify=task_names.ALTA_VERIFY, end=task_names.ALTA_END),
)
