"""The TrackTik step's task name: the wire name queued messages and ledger rows (``action.kind``) carry.

Never rename it: a message already queued, or an action already planned, would find no task.
"""

from typing import Final

CREATE_ALARM: Final = "tracktik.create_alarm"

ALL: Final = frozenset({CREATE_ALARM})
