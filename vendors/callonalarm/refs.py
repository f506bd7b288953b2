"""The ``alarm.refs`` keys the CallOnAlarm steps write (and read back)."""

from typing import Final

ALERT_ID: Final = "callonalarm_alert_id"
STATUS: Final = "callonalarm_status"
DELAY_S: Final = "callonalarm_delay_s"
CALLS_MADE: Final = "callonalarm_calls_made"
ACKNOWLEDGED_BY: Final = "callonalarm_acknowledged_by"
ACKNOWLEDGED_AT: Final = "callonalarm_acknowledged_at"
ACCOUNT: Final = "callonalarm_account"  # the connection called, when a step did not say
RESTORE_SENT: Final = "callonalarm_restore_sent"
RESTORE_CODE: Final = "callonalarm_restore_code"
RESTORE_ALERT_ID: Final = "callonalarm_restore_alert_id"

ALL: Final = frozenset(
    {
        ALERT_ID,
        STATUS,
        DELAY_S,
        CALLS_MADE,
        ACKNOWLEDGED_BY,
        ACKNOWLEDGED_AT,
        ACCOUNT,
        RESTORE_SENT,
        RESTORE_CODE,
        RESTORE_ALERT_ID,
    }
)
