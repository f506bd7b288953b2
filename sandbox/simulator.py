"""The wiring every simulator shares: journal, faults, clock, reset, and the `/_sandbox/` control API.

A simulator module builds its Flask app with `make_simulator` and adds only its vendor's routes::

    def create_app(config: dict[str, Any] | None = None, clock: Clock | None = None) -> Flask:
        app, state = make_simulator("cad", error_body=_spring_error, config=config, clock=clock)
        store = IncidentStore(state.settings, state.clock)
        state.on_reset(store.reset)          # POST /_sandbox/reset puts the data back to its seed
        app.extensions["sandbox.cad"] = store
        app.register_blueprint(bp)           # the vendor API
        return app

What `make_simulator` installs:

- For every request outside `/_sandbox/`: a journal entry (secrets masked, `sandbox.journal`), then the
  oldest matching fault, if any, is applied (`sandbox.faults`). A status fault answers with
  `error_body(status, message)` — the vendor's own error shape — unless the fault carries a body.
- Every HTTP error the app raises outside `/_sandbox/` (an unknown path, a wrong method, unreadable
  JSON, a crash) is answered with `error_body` too, so a client never sees Flask's HTML pages.
- The control API, never journaled and never faulted: `GET|DELETE /_sandbox/journal` (filters
  `?path=<prefix>&method=`), `GET|POST|DELETE /_sandbox/faults`, `POST /_sandbox/reset`, and
  `GET|POST /_sandbox/clock` (`{"advance_s": 60}`). Simulators may add their own read-only views under
  `/_sandbox/` (e.g. `GET /_sandbox/incidents`); they are control routes too.
- `app.extensions["sandbox"]` is the `SimulatorState`, the same object from Python.

Paths are always simulator-relative: mounted under `/cad` by the combined server, the CAD's journal
still shows `/api/v1/external/incident` and faults match that path.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from sandbox.clock import Clock
from sandbox.config import vendor_table
from sandbox.faults import Fault, FaultQueue, drop_connection, hold_connection
from sandbox.journal import Journal, JournalEntry, mask_body, mask_headers, mask_query

# (status, message) -> the vendor's JSON error body. Called inside the request context, so it may read
# `flask.request` (e.g. for a `path` field).
ErrorBody = Callable[[int, str], Any]
ResetHook = Callable[[], None]

STATE_KEY = "sandbox"
CONTROL_PREFIX = "/_sandbox"

_ENTRY_KEY = "sandbox.journal_seq"
_SOCKET_FAULT_KEY = "sandbox.socket_fault"


@dataclass(slots=True)
class SimulatorState:
    """Everything a simulator shares with its tests: settings, clock, journal, faults and reset hooks."""

    name: str
    settings: dict[str, Any]
    clock: Clock
    error_body: ErrorBody
    journal: Journal = field(default_factory=Journal)
    faults: FaultQueue = field(default_factory=FaultQueue)
    _reset_hooks: list[ResetHook] = field(default_factory=list)

    def on_reset(self, hook: ResetHook) -> ResetHook:
        """Register a function that puts the simulator's own data back to its configured seed."""
        self._reset_hooks.append(hook)
        return hook

    def reset(self) -> None:
        """Clear the journal and the faults, return the clock to real time and reseed the vendor data.

        A clock shared by several simulators is reset for all of them.
        """
        self.journal.clear()
        self.faults.clear()
        self.clock.reset()
        for hook in self._reset_hooks:
            hook()

    def error_response(
        self, status: int, message: str | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        """The vendor's error answer for `status` (call inside a request)."""
        response = jsonify(self.error_body(status, message or reason_phrase(status)))
        response.status_code = status
        response.headers.update(headers or {})
        return response


def make_simulator(
    name: str,
    *,
    error_body: ErrorBody,
    config: dict[str, Any] | None = None,
    clock: Clock | None = None,
    import_name: str | None = None,
) -> tuple[Flask, SimulatorState]:
    """Create a simulator's Flask app with the shared journal, faults, clock and control API.

    Args:
        name: the vendor name, also the key of its table in the configuration (`"cad"`).
        error_body: builds the vendor's error body from (status, message).
        config: the whole loaded configuration (`sandbox.config.load_config()`); None = the default.
            `state.settings` is this vendor's table of it.
        clock: a clock to share with other simulators; None = a new one.
        import_name: Flask's import name; defaults to `sandbox.<name>`.
    """
    app = Flask(import_name or f"sandbox.{name}")
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the vendor's field order
    state = SimulatorState(
        name=name, settings=vendor_table(config, name), clock=clock or Clock(), error_body=error_body
    )
    app.extensions[STATE_KEY] = state
    app.before_request(_journal_and_apply_fault)
    app.register_error_handler(HTTPException, _answer_http_error)
    app.register_blueprint(control_bp)
    app.wsgi_app = _SocketFaults(app.wsgi_app, state)  # type: ignore[method-assign]
    return app, state


def current_state() -> SimulatorState:
    """The `SimulatorState` of the app handling the current request."""
    state: SimulatorState = current_app.extensions[STATE_KEY]
    return state


def is_control_path(path: str) -> bool:
    """Whether a simulator-relative path belongs to the control API (never journaled nor faulted)."""
    return path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")


def reason_phrase(status: int) -> str:
    """The standard reason phrase of a status, or a generic one for non-standard codes (RapidSOS 216)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Sandbox Injected Status"


def _journal_and_apply_fault() -> ResponseReturnValue | None:
    if is_control_path(request.path):
        return None
    state = current_state()
    fault = state.faults.take(request.method, request.path)
    entry = state.journal.record(
        JournalEntry(
            at=state.clock.now(),
            simulator=state.name,
            method=request.method,
            path=request.path,
            query=mask_query(request.args.items(multi=True)),
            headers=mask_headers(request.headers.items()),
            body=mask_body(request.get_data(cache=True), request.content_type),
            fault=fault.kind if fault else None,
        )
    )
    request.environ[_ENTRY_KEY] = entry.seq
    if fault is None:
        return None
    if fault.kind == "status":
        return _status_fault_response(state, fault)
    if fault.kind == "delay":
        time.sleep(fault.delay())  # the fault itself: a slow upstream
        return None
    request.environ[_SOCKET_FAULT_KEY] = fault
    if fault.kind == "drop":
        return Response(status=204)  # never sent: the middleware drops the connection instead
    return None  # timeout_after_commit: handle normally, the middleware withholds the answer


def _status_fault_response(state: SimulatorState, fault: Fault) -> Response:
    assert fault.status is not None
    if fault.body is None:
        return state.error_response(fault.status, headers=fault.headers)
    response = jsonify(fault.body) if not isinstance(fault.body, str) else Response(fault.body)
    response.status_code = fault.status
    response.headers.update(fault.headers)
    return response


def _answer_http_error(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    if is_control_path(request.path):
        return jsonify(error=exc.description), status
    headers = {"Allow": exc.get_response().headers["Allow"]} if status == 405 else None
    return current_state().error_response(status, exc.description, headers=headers)


class _SocketFaults:
    """WSGI middleware: withholds the answer of a request that a drop / timeout fault caught.

    It sits outside Flask because a dropped connection must surface as an exception the werkzeug
    server recognises, not as a 500. It also records each answer's status in the journal.
    """

    def __init__(self, wsgi_app: WSGIApplication, state: SimulatorState) -> None:
        self.wsgi_app = wsgi_app
        self.state = state

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        captured: list[Any] = []

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            captured[:] = [status, headers, exc_info]
            return _refuse_write

        body = self.wsgi_app(environ, capture)
        seq: int | None = environ.get(_ENTRY_KEY)
        fault: Fault | None = environ.get(_SOCKET_FAULT_KEY)
        status = int(captured[0].split(None, 1)[0])
        if fault is None:
            if seq is not None:
                self.state.journal.complete(seq, status=status)
            start_response(*captured)
            return body
        try:
            if fault.kind == "timeout_after_commit":
                for _ in body:  # let a streamed answer finish its work too
                    pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if fault.kind == "timeout_after_commit":
            if seq is not None:
                self.state.journal.complete(seq, status=status)
            hold_connection(environ, fault.hold_s)
        raise drop_connection(environ)


def _refuse_write(data: bytes) -> object:
    raise RuntimeError("the sandbox does not support the WSGI write() callable")


control_bp = Blueprint("sandbox_control", __name__, url_prefix=CONTROL_PREFIX)


@control_bp.get("/journal")
def list_journal() -> ResponseReturnValue:
    """The journal, oldest first; `?path=` keeps paths starting with it, `?method=` one method."""
    entries = current_state().journal.entries(
        path_prefix=request.args.get("path") or None, method=request.args.get("method") or None
    )
    return jsonify([entry.to_json() for entry in entries])


@control_bp.delete("/journal")
def clear_journal() -> ResponseReturnValue:
    """Forget the journal."""
    current_state().journal.clear()
    return "", 204


@control_bp.get("/faults")
def list_faults() -> ResponseReturnValue:
    """The faults still waiting, oldest first, each with its remaining `count`."""
    return jsonify([fault.to_json() for fault in current_state().faults.pending()])


@control_bp.post("/faults")
def add_fault() -> ResponseReturnValue:
    """Register a fault, e.g. `{"method": "PUT", "path": "/api/v1/x", "count": 1, "status": 503}`."""
    try:
        fault = Fault.from_json(request.get_json(silent=True))
    except (TypeError, ValueError) as exc:
        return jsonify(error=str(exc)), 400
    return jsonify(current_state().faults.add(fault).to_json()), 201


@control_bp.delete("/faults")
def clear_faults() -> ResponseReturnValue:
    """Forget every waiting fault."""
    current_state().faults.clear()
    return "", 204


@control_bp.post("/reset")
def reset_simulator() -> ResponseReturnValue:
    """Clear journal and faults, return the clock to real time and reseed the vendor data."""
    current_state().reset()
    return "", 204


@control_bp.get("/clock")
def read_clock() -> ResponseReturnValue:
    """The simulated time: `{now (ISO, UTC), time (epoch s), offset_s}`."""
    return jsonify(_clock_json(current_state().clock))


@control_bp.post("/clock")
def advance_clock() -> ResponseReturnValue:
    """Move simulated time forward: `{"advance_s": 60}`."""
    data = request.get_json(silent=True)
    advance_s = data.get("advance_s") if isinstance(data, dict) else None
    if isinstance(advance_s, bool) or not isinstance(advance_s, int | float):
        return jsonify(error='expected {"advance_s": <seconds >= 0>}'), 400
    clock = current_state().clock
    try:
        clock.advance(advance_s)
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    return jsonify(_clock_json(clock))


def _clock_json(clock: Clock) -> dict[str, Any]:
    now = clock.now()
    return {"now": now.isoformat(), "time": now.timestamp(), "offset_s": clock.offset_s}
