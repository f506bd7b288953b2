"""The CallOnAlarm steps' task names: the wire names queued messages and ledger rows (``action.kind``)
carry.

Never rename one: a message already queued, or an action already planned, would find no task.
"""

from typing import Final

TRIGGER: Final = "callonalarm.trigger"
FOLLOW_STATUS: Final = "callonalarm.follow_status"
SEND_RESTORE: Final = "callonalarm.send_restore"

ALL: Final = frozenset({TRIGGER, FOLLOW_STATUS, SEND_RESTORE})
