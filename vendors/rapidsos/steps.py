"""The RapidSOS steps' task names: the wire names queued messages and ledger rows (``action.kind``)
carry.

Never rename one: a message already queued, or an action already planned, would find no task.
"""

from typing import Final

CREATE_ALERT: Final = "rapidsos.create_alert"
CANCEL_ALERT: Final = "rapidsos.cancel_alert"

ALL: Final = frozenset({CREATE_ALERT, CANCEL_ALERT})
