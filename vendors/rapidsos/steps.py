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

# A create's ``action.result`` when nobody will dispatch from its alert: 216 (no PSAP takes RapidSOS
# alerts there) and 217 (supplemental data only) still create one (the phone fallback calls instead).
REACHED_NOBODY: Final[Mapping[str, frozenset[object]]] = MappingProxyType(
    {"status_code": frozenset({216, 217})}
)
