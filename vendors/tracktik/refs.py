"""The ``alarm.refs`` keys the TrackTik create writes."""

from typing import Final

ALARM_ID: Final = "tracktik_alarm_id"
CUSTOM_ID: Final = "tracktik_custom_id"
DISPATCH_TASK_ID: Final = "tracktik_dispatch_task_id"

ALL: Final = frozenset({ALARM_ID, CUSTOM_ID, DISPATCH_TASK_ID})
