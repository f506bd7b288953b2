"""The web process's gunicorn worker: gevent, with read deadlines no slow client can stretch.

With gevent every connection is a greenlet, so a client that sends half a request ties up nothing
but its own greenlet: the door stays open for the fire alarm behind it (a sync worker waits on one
socket, and two of them silenced intake for 30 s). What remains is to close such connections:

- the request's head (request line and headers) must arrive complete within WEB_READ_TIMEOUT_S
  (gunicorn's keepalive deadline, which the async workers apply to reading each head);
- every read of the body must return within WEB_READ_TIMEOUT_S (a socket timeout), so a body that
  stops arriving ends in a 408 from the app (``app.web.bodies``), and the connection is closed.

psycopg 3 (3.1.14 and later), redis-py and requests all cooperate with gevent's monkey patching,
which gunicorn applies in each worker before it loads the app (no preload).
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker


class ReadTimeoutGeventWorker(GeventWorker):  # type: ignore[misc]  # gunicorn publishes no types
    """gunicorn's gevent worker, whose client sockets time out a read after the keepalive deadline."""

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        # GeventWorker.handle would make the socket blocking with no timeout; this one gives up.
        client.settimeout(self.cfg.keepalive)
        AsyncWorker.handle(self, listener, client, addr)
