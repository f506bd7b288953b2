"""CallOnAlarm public API v1 simulator (seed 001; CONTRACTS Part A items 10-12, Part B §3 and §6).

Vendor API, every call with `Authorization: Bearer <API key>`:

- `POST /v1/alert/trigger` `{accountNumber, eventCode, message?, zone?}` → 201 `{alertId, requiresCalls,
  contactsToCall, language, delaySeconds, status, technicalEmailSent}`, `status` one of seed 001's five.
- `GET /v1/alert/{id}/status` → 200 `{alertId, accountNumber, eventCode, zone, status, createdAt,
  callsStartAt, acknowledgedAt, acknowledgedBy, cancelledAt, callsMade}`.
- `POST /v1/alert/{id}/acknowledge` `{phoneNumber}` → 200 with the status body; again → 400.
- `GET /v1/connection/test` → 200 `{valid: true, accountNumbers: [...]}`.

Control extras (never journaled, faulted or rate-limited): `GET /_sandbox/alerts[?accountNumber=&status=]`
lists every alert with its status computed now, the trigger answer, the message and the calls placed so
far; `GET /_sandbox/alerts/{id}` shows one; `GET /_sandbox/rate-limits` shows each key's window.

The five trigger statuses come from the connection's delay rule for the code (Part A item 11): Instant →
`call_immediate`; Delayed (10-300 s, step 5) → `call_delayed`; None → `ignored`, or `technical_only`
when Technical is ticked; an inactive connection → `logged_inactive` whatever the rule. The lifecycle
is computed from the simulated clock at request time: `call_delayed` until `callsStartAt`, then
`call_immediate` while calls are placed, `timeout` once every round has rung out, unless an
acknowledge (`acknowledged`) or a Cancel-ticked code on the same account (`cancelled` before the first
call, `cancelled_during_calls` after) ended it first.

Choices the documents leave open, made here and nowhere else (seed 001 lost its example bodies):

- Errors are `{"error": "<Title>", "message": "<detail>"}` with seed 001's codes only (400, 401, 404,
  429, 500). Titles: "Missing API Key", "Invalid API Key" (unknown key, a scheme other than Bearer,
  and an expired key), "Missing Required Fields", "Invalid eventCode", "Connection Not Found", "Alert
  Not Found", "Alert Already Acknowledged"; otherwise the status's name from seed 001's table ("Bad
  Request" for a field of the wrong type, unreadable JSON or an acknowledge of an ended alert). An
  unknown path or a wrong method is 404 "Not Found" `Cannot <METHOD> <path>` (Express's answer; seed
  001 lists no 405). Injected status faults use the same body.
- Order of checks: rate limit (429) → API key (401) → body (400) → connection (404) → eventCode (400)
  on a trigger; rate limit → key → alert (404) → body (400) → state (400) on an acknowledge.
- Body: a JSON object. A body that is not `application/json` is read as empty (so: 400 Missing Required
  Fields), as Express's JSON parser does; unreadable JSON or a non-object is 400 "Bad Request".
  `accountNumber`, `eventCode` and `phoneNumber` are required strings (absent, null, "" or blanks =
  missing); `message` and `zone` are optional strings (null = absent). Any other type is 400: no
  coercion of numbers. No length limit is documented and none is enforced. Unknown fields are ignored.
- Event codes are case-sensitive: an SIA code of seed 001's catalogue (`sandbox/callonalarm/codes.py`,
  the simulator's own list) or one of the connection's custom codes; anything else, lower case
  included, is 400 "Invalid eventCode", checked after the connection (custom codes are per connection).
- A key sees only its own account numbers: another key's account is 404 "Connection Not Found" and an
  alert on an account the key does not hold is 404 "Alert Not Found". Every trigger, whatever its
  status, gets an `alertId` (`alt_` + 20 hex digits) that can be polled.
- Trigger answer: `contactsToCall` is the connection's number of contacts when calls are planned, else
  0; `delaySeconds` is the rule's delay for `call_delayed`, else 0; `language` is the connection's
  language (contacts may have their own voice language, shown only in the control view);
  `technicalEmailSent` is true when Technical is ticked and the connection has a technical email (a
  Technical-only code without an address is still `technical_only`, with `technicalEmailSent: false`).
  An inactive connection logs only: no calls, no email, and its codes cancel nothing.
- A connection without a delay rule logs every SIA event as `ignored` (its custom codes keep their own
  rules). A code the rule set does not list is action None.
- Cancel is per connection: a Cancel-ticked code cancels every alert of that account number that is
  still in its delay or calling (any zone, any code, any key), before its own rule is applied (an
  Instant code with Cancel ticked cancels the older alerts and starts its own calls). Ended alerts are
  untouched.
- Calls: contacts in configured order, round after round (`rounds`, default 2); each call rings the
  contact's `ring_seconds` (default 30) and the next call is placed when it stops ringing. `callsMade`
  counts the calls placed so far (the first one at `callsStartAt`) and freezes at an acknowledge or a
  cancel; the procedure times out when the last call of the last round stops ringing, `callsMade` then
  being rounds times contacts. A connection with `out_of_credits = true` places no call and its alerts end
  `failed` at `callsStartAt` (the webhook page's "no credits").
- Acknowledge: any non-empty `phoneNumber` is accepted (it becomes `acknowledgedBy`; it need not be a
  contact). It works during the delay too (`callsMade` 0). An already acknowledged alert is 400 "Alert
  Already Acknowledged"; an ended one (timeout, failed, cancelled, or one that never called anyone) is
  400 "Bad Request".
- Times are ISO 8601 UTC with milliseconds and `Z`; `zone`, `callsStartAt`, `acknowledgedAt`,
  `acknowledgedBy` and `cancelledAt` are null until they apply.
- Rate limit: a sliding-window log of admitted requests per bucket: the presented bearer token (valid
  or not), else the client address. Every vendor-path request counts (status polls, 401s, 404s, unknown
  paths); a request refused with 429 does not, so `Retry-After` (whole seconds, at least 1) is when the
  oldest counted request leaves the window and one more is admitted. `X-RateLimit-Reset` is that same
  moment in epoch seconds (the current time when the window is empty). A request caught by an injected
  status or drop fault is not counted; its answer still carries the headers, and an injected 429
  without its own `Retry-After` gets one.
- An API key may have `expires_at`; from then on (simulated clock) it is 401 "Invalid API Key".
"""

from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from sandbox.callonalarm.settings import Account, ApiKey, Settings
from sandbox.callonalarm.store import Alert, AlertError, AlertStore, RateLimiter, RateState
from sandbox.clock import Clock
from sandbox.simulator import current_state, is_control_path, make_simulator, reason_phrase

NAME = "callonalarm"
TRIGGER_PATH = "/v1/alert/trigger"
CONNECTION_TEST_PATH = "/v1/connection/test"
STORE_KEY = "sandbox.callonalarm"
_RATE_STATE_KEY = "callonalarm_rate_state"


class CallOnAlarmError(Exception):
    """A request the vendor refuses; answered as `{"error": title, "message": message}`."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class CallOnAlarm:
    """The simulator's data: parsed settings, alerts and the rate windows."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.alerts = AlertStore()
        self.limiter = RateLimiter(limit=settings.rate_limit, window_s=settings.rate_window_s)

    def reset(self) -> None:
        """Forget every alert and every counted request."""
        self.alerts.reset()
        self.limiter.reset()


def error_body(status: int, message: str) -> dict[str, Any]:
    """The vendor's error body for an injected fault or a Flask-level error: the status's name as title."""
    return {"error": reason_phrase(status), "message": message}


bp = Blueprint(NAME, __name__)


@bp.errorhandler(CallOnAlarmError)
def _answer_error(exc: CallOnAlarmError) -> Response:
    return _error_response(exc.status, exc.title, exc.message)


@bp.post(TRIGGER_PATH)
def trigger_alert() -> ResponseReturnValue:
    """Seed 001 "Trigger Alert": apply the connection's rule to the event, 201 with the outcome."""
    sim = simulator()
    api_key = _authenticate(sim.settings)
    body = _json_body()
    _require(body, "accountNumber", "eventCode")
    account_number, code = body["accountNumber"], body["eventCode"]
    zone, message = _optional_string(body, "zone"), _optional_string(body, "message")
    account = _account(sim.settings, api_key, account_number)
    rule = account.rule_for(code)
    if rule is None:
        raise CallOnAlarmError(
            400,
            "Invalid eventCode",
            f"'{code}' is neither an SIA event code nor a custom code of connection {account.number}",
        )
    alert = sim.alerts.trigger(account, code, rule, zone, message, current_state().clock.time())
    return jsonify(alert.trigger_body()), 201


@bp.get("/v1/alert/<alert_id>/status")
def alert_status(alert_id: str) -> ResponseReturnValue:
    """Seed 001 "Get Alert Status": the alert as of now."""
    sim = simulator()
    api_key = _authenticate(sim.settings)
    alert = _owned_alert(sim, api_key, alert_id)
    return jsonify(alert.status_body(current_state().clock.time()))


@bp.post("/v1/alert/<alert_id>/acknowledge")
def acknowledge_alert(alert_id: str) -> ResponseReturnValue:
    """Seed 001 "Acknowledge Alert": end a running procedure as acknowledged by `phoneNumber`."""
    sim = simulator()
    api_key = _authenticate(sim.settings)
    _owned_alert(sim, api_key, alert_id)
    body = _json_body()
    _require(body, "phoneNumber")
    now = current_state().clock.time()
    try:
        alert = sim.alerts.acknowledge(alert_id, body["phoneNumber"], now)
    except AlertError as exc:
        raise CallOnAlarmError(400, exc.title, exc.message) from None
    return jsonify(alert.status_body(now))


@bp.get(CONNECTION_TEST_PATH)
def connection_test() -> ResponseReturnValue:
    """Seed 001 "Test Connection": the key is valid; the account numbers it may use."""
    api_key = _authenticate(simulator().settings)
    return jsonify({"valid": True, "accountNumbers": list(api_key.accounts)})


@bp.get("/_sandbox/alerts")
def list_alerts() -> ResponseReturnValue:
    """Control view: every alert with its status now; `?accountNumber=` and `?status=` filter."""
    now = current_state().clock.time()
    views = [alert.sandbox_view(now) for alert in simulator().alerts.alerts()]
    for name in ("accountNumber", "status"):
        wanted = request.args.get(name)
        if wanted is not None:
            views = [view for view in views if view[name] == wanted]
    return jsonify(views)


@bp.get("/_sandbox/alerts/<alert_id>")
def show_alert(alert_id: str) -> ResponseReturnValue:
    """Control view: one alert as in the listing."""
    alert = simulator().alerts.get(alert_id)
    if alert is None:
        return jsonify(error=f"no alert {alert_id}"), 404
    return jsonify(alert.sandbox_view(current_state().clock.time()))


@bp.get("/_sandbox/rate-limits")
def rate_limits() -> ResponseReturnValue:
    """Control view: each bucket's window (keys shortened), with the values of its headers now."""
    usage = simulator().limiter.usage(current_state().clock.time())
    return jsonify(
        [
            {
                "bucket": _shorten(bucket),
                "used": state.limit - state.remaining,
                "remaining": state.remaining,
                "reset": state.reset_at,
            }
            for bucket, state in usage.items()
        ]
    )


def create_app(config: dict[str, Any] | None = None, clock: Clock | None = None) -> Flask:
    """The CallOnAlarm simulator; `config` is the whole sandbox configuration (None = the default)."""
    app, state = make_simulator(NAME, error_body=error_body, config=config, clock=clock)
    sim = CallOnAlarm(Settings.from_table(state.settings))
    state.on_reset(sim.reset)
    app.extensions[STORE_KEY] = sim
    app.before_request(_count_request)
    app.after_request(_add_rate_limit_headers)
    app.register_error_handler(NotFound, _answer_no_route)
    app.register_error_handler(MethodNotAllowed, _answer_no_route)
    app.register_blueprint(bp)
    return app


def simulator(app: Flask | None = None) -> CallOnAlarm:
    """The CallOnAlarm data (of `app`, or of the app handling the current request)."""
    sim: CallOnAlarm = (app or current_app).extensions[STORE_KEY]
    return sim


def _count_request() -> ResponseReturnValue | None:
    """Before every vendor request (after the core's fault check): count it or refuse it with 429."""
    if is_control_path(request.path):
        return None
    sim = simulator()
    state = sim.limiter.admit(_bucket(), current_state().clock.time())
    setattr(g, _RATE_STATE_KEY, state)
    if state.allowed:
        return None
    return _error_response(
        429,
        "Too Many Requests",
        f"Rate limit exceeded: {state.limit} requests per hour. Retry after {state.retry_after_s} seconds.",
    )


def _add_rate_limit_headers(response: Response) -> Response:
    """`X-RateLimit-*` on every vendor answer (errors and injected faults too), `Retry-After` on 429."""
    if is_control_path(request.path):
        return response
    state: RateState | None = g.get(_RATE_STATE_KEY)
    if state is None:  # an injected fault answered before the request was counted
        state = simulator().limiter.peek(_bucket(), current_state().clock.time())
    for name, value in state.headers().items():
        response.headers.setdefault(name, value)
    if response.status_code == 429 and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(state.retry_after_s)
    return response


def _answer_no_route(exc: HTTPException) -> ResponseReturnValue:
    if is_control_path(request.path):
        return jsonify(error=exc.description), exc.code or 404
    return _error_response(404, "Not Found", f"Cannot {request.method} {request.path}")


def _error_response(status: int, title: str, message: str) -> Response:
    response = jsonify({"error": title, "message": message})
    response.status_code = status
    return response


def _bearer_token() -> str | None:
    scheme, _, token = (request.headers.get("Authorization") or "").strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _bucket() -> str:
    token = _bearer_token()
    return f"key:{token}" if token else f"ip:{request.remote_addr}"


def _shorten(bucket: str) -> str:
    kind, _, value = bucket.partition(":")
    return f"{kind}:{value[:4]}***{value[-4:]}" if kind == "key" and len(value) > 8 else bucket


def _authenticate(settings: Settings) -> ApiKey:
    header = (request.headers.get("Authorization") or "").strip()
    token = _bearer_token()
    if not header or (token is None and header.lower() == "bearer"):
        raise CallOnAlarmError(
            401, "Missing API Key", "Send your API key in the Authorization header: Bearer YOUR_API_KEY"
        )
    api_key = settings.api_keys.get(token) if token is not None else None
    if api_key is None:
        raise CallOnAlarmError(401, "Invalid API Key", "The API key is not valid")
    if api_key.expired(current_state().clock.time()):
        raise CallOnAlarmError(
            401, "Invalid API Key", "The API key has expired; generate a new one in Settings → API Keys"
        )
    return api_key


def _json_body() -> dict[str, Any]:
    if not request.get_data(cache=True) or not request.is_json:
        return {}
    body = request.get_json(silent=True)
    if body is None:
        raise CallOnAlarmError(400, "Bad Request", "The request body is not valid JSON")
    if not isinstance(body, dict):
        raise CallOnAlarmError(400, "Bad Request", "The request body must be a JSON object")
    return body


def _require(body: dict[str, Any], *names: str) -> None:
    missing = [
        name
        for name in names
        if body.get(name) is None or (isinstance(body[name], str) and not body[name].strip())
    ]
    if missing:
        raise CallOnAlarmError(
            400, "Missing Required Fields", f"Missing required fields: {', '.join(missing)}"
        )
    for name in names:
        if not isinstance(body[name], str):
            raise CallOnAlarmError(400, "Bad Request", f"{name} must be a string")


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise CallOnAlarmError(400, "Bad Request", f"{name} must be a string")
    return value


def _account(settings: Settings, api_key: ApiKey, number: str) -> Account:
    account = settings.accounts.get(number)
    if account is None or number not in api_key.accounts:
        raise CallOnAlarmError(
            404, "Connection Not Found", f"No connection with account number {number} for this API key"
        )
    return account


def _owned_alert(sim: CallOnAlarm, api_key: ApiKey, alert_id: str) -> Alert:
    alert = sim.alerts.get(alert_id)
    if alert is None or alert.account.number not in api_key.accounts:
        raise CallOnAlarmError(404, "Alert Not Found", f"No alert {alert_id} for this API key")
    return alert
