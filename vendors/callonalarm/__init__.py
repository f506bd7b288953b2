"""CallOnAlarm: people called by phone, for a site's plan or as the fallback when a dispatch fails.

A call still held (in CallOnAlarm's own delay) is stopped with the restore code (CONTRACTS Part A 11),
even before its alert id is recorded: the restore then waits for the trigger in flight.
"""

from vendors.base import ByApi, HasTables, PhoneFallback, Vendor
from vendors.callonalarm import refs, site, steps
from vendors.callonalarm.settings import CallOnAlarmSettings
from vendors.callonalarm.site import CallOnAlarmSite


def _site_account(tables: HasTables) -> str | None:
    """The site's own CallOnAlarm connection, if it has one (else the monitoring centre's is called)."""
    table = tables.table(CallOnAlarmSite)
    return table.account_number if table is not None else None


VENDOR = Vendor(
    key="callonalarm",
    name="CallOnAlarm",
    steps=steps.ALL,
    plan_steps=(steps.TRIGGER,),
    closing_steps=frozenset({steps.SEND_RESTORE}),
    refs=refs.ALL,
    upstream_ids=((refs.ALERT_ID, "CallOnAlarm alert"), (refs.STATUS, "CallOnAlarm status")),
    site_table=site.TABLE,
    stand_down=ByApi(
        refs.ALERT_ID,
        steps.SEND_RESTORE,
        maybe_engaged_by=steps.TRIGGER,
        takes_cancel_code=True,
    ),
    phone_fallback=PhoneFallback(
        step=steps.TRIGGER,
        account=_site_account,
        default_account=lambda settings: settings.vendor(CallOnAlarmSettings).fallback_account,
    ),
    settings=CallOnAlarmSettings,
    dispatches={steps.TRIGGER: steps.REACHED_NOBODY},
)
