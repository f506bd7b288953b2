"""The CAD step's task name: the wire name queued messages and ledger rows (``action.kind``) carry.

Never rename it: a message already queued, or an action already planned, would find no task.
"""

from typing import Final

UPLOAD_INCIDENT: Final = "cad.upload_incident"

ALL: Final = frozenset({UPLOAD_INCIDENT})
