"""TrackTik: a guard dispatched by an alarm raised in the guard-tour system.

TrackTik has no API to cancel an alarm (CONTRACTS Part A 9): a dispatch is stood down by a person,
and a create that failed for good calls a person by phone instead.
"""

from vendors.base import ByHand, Vendor
from vendors.tracktik import refs, site, steps
from vendors.tracktik.settings import TrackTikSettings

VENDOR = Vendor(
    key="tracktik",
    name="TrackTik",
    steps=steps.ALL,
    plan_steps=(steps.CREATE_ALARM,),
    refs=refs.ALL,
    upstream_ids=((refs.DISPATCH_TASK_ID, "TrackTik dispatch task"), (refs.ALARM_ID, "TrackTik alarm")),
    site_table=site.TABLE,
    stand_down=ByHand(refs.ALARM_ID, "TrackTik", "dispatch", create=steps.CREATE_ALARM),
    falls_back=frozenset({steps.CREATE_ALARM}),
    settings=TrackTikSettings,
    dispatches={steps.CREATE_ALARM: {}},
)
