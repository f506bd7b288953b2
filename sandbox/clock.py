"""The simulators' sense of time: real time plus an offset that tests move forward.

Vendor lifecycles in the simulators run on minutes (a CallOnAlarm call delayed 60 s, an Alta cookie
that lives an hour, a RapidSOS alert that disappears after 12 h). Tests cannot wait for them, so every
simulator reads time from one `Clock` and computes time-dependent state lazily, at request time, from
`now()`. There are no background timers: advancing the clock and then making a request is enough to
see the later state, and the outcome does not depend on how fast the machine is.
"""

import threading
import time as _time
from datetime import UTC, datetime


class Clock:
    """Wall-clock time shifted by an offset that only ever grows until `reset()`.

    One instance may be shared by several simulators (the combined server does this), so that one
    `advance()` moves every vendor forward together.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset_s = 0.0

    @property
    def offset_s(self) -> float:
        """How far this clock runs ahead of real time, in seconds."""
        with self._lock:
            return self._offset_s

    def time(self) -> float:
        """The simulated time as epoch seconds."""
        return _time.time() + self.offset_s

    def now(self) -> datetime:
        """The simulated time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), tz=UTC)

    def advance(self, seconds: float) -> None:
        """Move the clock forward; going backwards is refused so that simulated time stays monotonic."""
        if not seconds >= 0:  # also rejects NaN
            raise ValueError(f"the clock only moves forward (got {seconds!r} s)")
        with self._lock:
            self._offset_s += float(seconds)

    def reset(self) -> None:
        """Return to real time."""
        with self._lock:
            self._offset_s = 0.0
