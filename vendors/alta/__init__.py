"""Alta Video: the source of video alarms, told an operator's verdict and the alarm's end.

Its steps act on the ongoing Alta alert the signal came with, so they run only for alarms from an
alta source, and never wait for a 911 request. Collecting the video needs the alert found first.
"""

from collections.abc import Mapping
from types import MappingProxyType

from vendors.alta import refs, steps
from vendors.alta.settings import AltaSettings
from vendors.base import OperatorSteps, Vendor


def _from_alta(code: str | None, alarm_refs: Mapping[str, object]) -> bool:
    """An Alta webhook carries no SIA code; an alarm that found its Alta alert is Alta's too."""
    return code is None or refs.ALERT_GUID in alarm_refs


VENDOR = Vendor(
    key="alta",
    name="Alta",
    steps=steps.ALL,
    plan_steps=(steps.FIND_ONGOING_ALERT, steps.COLLECT_VIDEO),
    # ending an Alta alarm needs the alert's guid: the read-only lookup runs after the end too
    closing_steps=frozenset({steps.FIND_ONGOING_ALERT, steps.VERIFY, steps.END}),
    refs=refs.ALL,
    upstream_ids=((refs.ALERT_GUID, "Alta alert guid"),),
    video_links=refs.VIDEO_LINKS,
    waking_refs=frozenset({refs.ALERT_GUID, refs.VIDEO_LINKS}),
    source_kind="alta",
    prerequisites=MappingProxyType({steps.COLLECT_VIDEO: steps.FIND_ONGOING_ALERT}),
    operator=OperatorSteps(applies=_from_alta, verify=steps.VERIFY, end=steps.END),
    settings=AltaSettings,
)
