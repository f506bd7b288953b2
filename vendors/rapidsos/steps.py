"""The RapidSOS steps' task names: the wire names queued messages and ledger rows (``action.kind``)
carry.

Never rename one: a message already queued, or an action already planned, would find no task.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

CREATE_ALERT: Final = "rapidsos.create_alert"
CANCEL_ALERT: Final = "rapidsos.cancel_alert"

ALL: Final = frozenset({CREATE_ALERT, CANCEL_ALERT})

# The steps that send a responder (911 dispatch): an operator's End without an outcome records
# ``dispatched`` once one of them has succeeded with the responder's id (``app.domain.operations``),
# unless its ``action.result`` says nobody will dispatch from it: 216 (no PSAP takes RapidSOS alerts
# there) and 217 (supplemental data only) still create an alert (the phone fallback calls instead).
DISPATCHES: Final = frozenset({CREATE_ALERT})
REACHED_NOBODY: Final[Mapping[str, frozenset[object]]] = MappingProxyType(
    {"status_code": frozenset({216, 217})}
)
