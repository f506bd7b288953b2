"""The CallOnAlarm steps' task names: the wire names queued messages and ledger rows (``action.kind``)
carry.

Never rename one: a message already queued, or an action already planned, would find no task.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

TRIGGER: Final = "callonalarm.trigger"
FOLLOW_STATUS: Final = "callonalarm.follow_status"
SEND_RESTORE: Final = "callonalarm.send_restore"

ALL: Final = frozenset({TRIGGER, FOLLOW_STATUS, SEND_RESTORE})

# A trigger's ``action.result`` when it placed no call: CallOnAlarm answered ``ignored``,
# ``technical_only`` or ``logged_inactive`` (the trigger task's ``NO_CALL_STATUSES``; the vendor's
# ``dispatches`` declaration, for an operator's End without an outcome).
REACHED_NOBODY: Final[Mapping[str, frozenset[object]]] = MappingProxyType(
    {"status": frozenset({"ignored", "technical_only", "logged_inactive"})}
)
