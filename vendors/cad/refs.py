"""The ``alarm.refs`` keys the CAD upload writes."""

from typing import Final

INCIDENT_ID: Final = "cad_incident_id"
SYS_ID: Final = "cad_sys_id"

ALL: Final = frozenset({INCIDENT_ID, SYS_ID})
