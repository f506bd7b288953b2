"""The Alta steps' task names: the wire names queued messages and ledger rows (``action.kind``) carry.

Never rename one: a message already queued, or an action already planned, would find no task.
"""

from typing import Final

FIND_ONGOING_ALERT: Final = "alta.find_ongoing_alert"
COLLECT_VIDEO: Final = "alta.collect_video"
VERIFY: Final = "alta.verify"
END: Final = "alta.end"

ALL: Final = frozenset({FIND_ONGOING_ALERT, COLLECT_VIDEO, VERIFY, END})
