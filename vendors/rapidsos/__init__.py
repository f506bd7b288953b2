"""RapidSOS: the 911 request. It leaves first on a life-safety alarm, is cancelled by API when the
alarm is stood down, and a create that failed for good (or no PSAP can take) calls a person by phone."""

from app.domain import task_names
from vendors.base import ByApi, Vendor
from vendors.rapidsos import refs, site

VENDOR = Vendor(
    key="rapidsos",
    name="RapidSOS",
    steps=frozenset({task_names.RAPIDSOS_CREATE_ALERT, task_names.RAPIDSOS_CANCEL_ALERT}),
    plan_steps=(task_names.RAPIDSOS_CREATE_ALERT,),
    refs=refs.ALL,
    upstream_ids=((refs.ALERT_ID, "RapidSOS alert"),),
    site_table=site.TABLE,
    stand_down=ByApi(refs.ALERT_ID, task_names.RAPIDSOS_CANCEL_ALERT),
    falls_back=frozenset({task_names.RAPIDSOS_CREATE_ALERT}),
    emergency_request=task_names.RAPIDSOS_CREATE_ALERT,
)
