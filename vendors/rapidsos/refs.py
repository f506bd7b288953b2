"""The ``alarm.refs`` keys the RapidSOS steps write."""

from typing import Final

ALERT_ID: Final = "rapidsos_alert_id"
SOURCE_ID: Final = "rapidsos_source_id"
STATUS_CODE: Final = "rapidsos_status_code"
POSSIBLE_DUPLICATE: Final = "rapidsos_possible_duplicate"
CANCELLED: Final = "rapidsos_cancelled"

ALL: Final = frozenset({ALERT_ID, SOURCE_ID, STATUS_CODE, POSSIBLE_DUPLICATE, CANCELLED})
