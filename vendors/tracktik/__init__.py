"""TrackTik: a guard dispatched by an alarm raised in the guard-tour system.

TrackTik has no API to cancel an alarm (CONTRACTS Part A 9): a dispatch is stood down by a person,
and a create that failed for good calls a person by phone instead.
"""

from app.domain import task_names
from vendors.base import ByHand, Vendor
from vendors.tracktik import refs, site

VENDOR = Vendor(
    key="tracktik",
    name="TrackTik",
    steps=frozenset({task_names.TRACKTIK_CREATE_ALARM}),
    plan_steps=(task_names.TRACKTIK_CREATE_ALARM,),
    refs=refs.ALL,
    upstream_ids=((refs.DISPATCH_TASK_ID, "TrackTik dispatch task"), (refs.ALARM_ID, "TrackTik alarm")),
    site_table=site.TABLE,
    stand_down=ByHand(refs.ALARM_ID, "TrackTik", "dispatch", create=task_names.TRACKTIK_CREATE_ALARM),
    falls_back=frozenset({task_names.TRACKTIK_CREATE_ALARM}),
)
