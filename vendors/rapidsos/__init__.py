"""RapidSOS: the 911 request. It leaves first on a life-safety alarm, is cancelled by API when the
alarm is stood down, and a create that failed for good (or no PSAP can take) calls a person by phone."""

from vendors.base import ByApi, Vendor
from vendors.rapidsos import refs, site, steps
from vendors.rapidsos.settings import RapidSOSSettings

VENDOR = Vendor(
    key="rapidsos",
    name="RapidSOS",
    steps=steps.ALL,
    plan_steps=(steps.CREATE_ALERT,),
    closing_steps=frozenset({steps.CANCEL_ALERT}),
    refs=refs.ALL,
    upstream_ids=((refs.ALERT_ID, "RapidSOS alert"),),
    site_table=site.TABLE,
    stand_down=ByApi(refs.ALERT_ID, steps.CANCEL_ALERT),
    falls_back=frozenset({steps.CREATE_ALERT}),
    emergency_request=steps.CREATE_ALERT,
    settings=RapidSOSSettings,
    dispatches={steps.CREATE_ALERT: steps.REACHED_NOBODY},
)
