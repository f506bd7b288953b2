"""RapidSOS Alert Management API for Tech Partners simulator (seed 004; CONTRACTS Part A 13-15, Part B §4).

Vendor API (paths relative to `https://api-sandbox.rapidsos.com`):

- `POST /oauth/token` — form `client_id`, `client_secret`, `grant_type=client_credentials` → 200
  `{access_token, token_type: "BearerToken", issued_at, expires_in}`. Seed 004 prints the path
  `POST /OAUTH/TOKEN/`, so it is answered in any letter case, with or without the trailing slash.
- `POST /v1/alerts/` (also without the slash) with `Authorization: Bearer <access_token>` and the alert
  body of seed 004 → 201 / 216 / 217, or 400 / 401 / 429.
- `GET /v1/alerts/{alert_id}` → 200 with the alert; `PATCH /v1/alerts/{alert_id}` `{"status": ...}` →
  200 `{status, disposition, last_updated_time}`.
- Control extra: `GET /_sandbox/alerts[?source_id=]` lists every stored alert (expired ones too).

The body's constraints are data in `sandbox/rapidsos/schema.py`; settings, tokens, rate windows and
alerts live in `sandbox/rapidsos/store.py`. Choices the documents leave open, made here and nowhere
else:

- Errors. Every error (and injected status) is `{"message": str, "errors": {path: [str, ...]}}`;
  `errors` names each bad field by dotted path (`variables.event.location.geodetic.latitude`,
  `variables.emergency_contacts[0].phone`) and is `{}` when no field is at fault. A 401 also carries
  `WWW-Authenticate: Bearer error="invalid_token"`; a 429 carries `Retry-After` (seconds).
- Token endpoint. Only a form body is read (`Content-Type: application/x-www-form-urlencoded`, else
  400); HTTP Basic client authentication is not offered because seed 004 documents only the form.
  `grant_type` missing or not `client_credentials` → 400; `client_id` or `client_secret` missing → 400;
  an unknown client or a wrong secret → 401. Extra fields (`scope`) are ignored. Success is 200 with
  `issued_at` = the simulated time in epoch **ms** and `expires_in` = `[rapidsos] token_ttl_s`, both
  as **strings** (Part A item 13), plus `Cache-Control: no-store`. Each call issues a new token; older
  ones stay valid until they expire. The token endpoint is not rate-limited.
- Tokens. `Authorization: Bearer <token>` (scheme case-insensitive). The `BearerToken` of `token_type`
  is not accepted as a scheme: seed 004 says "Bearer". A token is refused (401) from
  `issued_at + token_ttl_s` on, on the simulator clock. A reset forgets every token.
- Order of checks on `/v1/alerts`: token (401) → rate limit (429) → for GET/PATCH the alert (404) →
  media type and JSON (400) → body (400, every bad field at once) → coverage (201/216/217). A body that
  is not JSON (`Content-Type` other than application/json, malformed, not an object) is a 400: seed
  004 lists no 415.
- Rate limit: `[rapidsos] rate_limit` requests per `rate_window_s` (sliding) per client, counting every
  answered `/v1/alerts` call of that client (400s included, 401s and 429s not); 0 = unlimited.
- Body rules beyond the field table. Required = the seed's asterisks, `blocking` included (its "by
  default false" is not relied on). `null` is refused wherever a value is given (leave a field out
  instead). `incident_time` / `dispatch_requested_time` are JSON integers (not 1.0, not strings);
  besides the documented minimum 0 the sandbox refuses values below `[rapidsos] min_timestamp_ms`
  (default 10^11, i.e. before 1973) as "epoch seconds, not milliseconds" — set 0 for the vendor's bare
  rule. `callflow` is a non-empty string, and one of `[rapidsos] callflows` when that list is not empty.
  `zip_code` is 5 digits, as a string or a JSON integer (`02134` must therefore be a string); an
  emergency contact's `phone` is E.164 (optional `+`, up to 15 digits), string or integer (Part A 14).
  `country` is any 1-30 character string. `source` and `dispatch_requested_time` sit in
  `variables.event` (Part B §4.2). Unknown fields are accepted, stored and not echoed. The "at most 3
  contacts" advice is not enforced. `source_id` is not a dedupe key: each POST creates a new alert.
- Coverage. `[[rapidsos.psaps]]` lists PSAPs, each `mode = "full"` (→ 201) or `"supplemental"` (→ 217:
  "Supplemental Support Only", a 10-digit call is still required), with `states` (civic ISO 3166-2
  codes) and `boxes` (`{south, west, north, east}`; west > east crosses the antimeridian). The alert is
  located by its geodetic point when it has one (seed 004: geodetic takes precedence) — then only boxes
  can match, there is no geocoding — else by its civic `state`. The first PSAP that matches wins; no
  match → **216** "Unsupported Location". 201, 216 and 217 all create the alert and, with `blocking:
  true`, answer the same AlertMetaDataResponse (`covering_psap` is `null` on a 216).
- `blocking: false` → always 201 `{source_id, status: {name: "RECEIVED"}}`: the job runs (the alert is
  stored, with an `alert_id` and a coverage outcome visible in `/_sandbox/alerts`) but the client
  learns neither.
- AlertMetaDataResponse: the fields of seed 004's example in its order. `location` echoes what was sent
  (both parts when both were sent, `zip_code` as sent); `status` starts `RECEIVED`; `disposition`
  starts at `[rapidsos] initial_disposition` (`DISPATCHED`, as in the example); `last_updated_time` is
  the simulated time in ms; `alert_id` a bare UUID4; `sla_expiration_time` = creation + `sla_ms` (the
  example's 300 reads as a 300 s window written in ms; default 300000); `emergency_type` / `site_type`
  as `{name, display_name}`; `covering_psap` the matched PSAP's `{id, name, phone}`; `authorized_entity`
  and `followers` come from the client's configuration.
- Alerts live `[rapidsos] alert_retention_s` (seed 004: "Data is available for 12 hours"): from then on,
  and for an unknown id or another client's alert, GET and PATCH answer 404.
- PATCH. The body is a JSON object with only `status`, one of `CANCELED`, `DISPATCH_REQUESTED`,
  `IGNORED` (the central-station values, Part B §4.3); anything else, `disposition` included (the PSAP
  sets it), → 400. `CANCELED` is final: cancelling again is 200 (a retried cancel succeeds) and any
  other status afterwards is 400. Cancelling sets the disposition to `CANCELED`.
"""

import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import MethodNotAllowed

from sandbox.clock import Clock
from sandbox.rapidsos.schema import AlertValidator, Errors
from sandbox.rapidsos.store import (
    CREATED,
    PARTNER_STATUSES,
    SUPPLEMENTAL_ONLY,
    UNSUPPORTED_LOCATION,
    Client,
    RapidsosError,
    RapidsosStore,
    Settings,
    epoch_ms,
    new_alert,
    unauthorized,
)
from sandbox.simulator import make_simulator, reason_phrase

NAME = "rapidsos"
TOKEN_PATH = "/oauth/token"
ALERTS_PATH = "/v1/alerts/"
STORE_KEY = "sandbox.rapidsos"
TOKEN_TYPE = "BearerToken"
GRANT_TYPE = "client_credentials"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
_PHRASES = {UNSUPPORTED_LOCATION: "Unsupported Location", SUPPLEMENTAL_ONLY: "Supplemental Support Only"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """The simulator's error body (also for injected statuses): `{"message", "errors": {}}`."""
    if message == reason_phrase(status):
        message = _PHRASES.get(status, message)
    return {"message": message, "errors": {}}


# --- the vendor API --------------------------------------------------------------------------------

bp = Blueprint("rapidsos", __name__)


def _answer_rapidsos_error(exc: RapidsosError) -> Response:
    response = jsonify({"message": exc.message, "errors": exc.errors})
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response


def _route_token_path() -> ResponseReturnValue | None:
    """Answer `/oauth/token` in any case and with or without the slash (seed 004: `/OAUTH/TOKEN/`).

    A before-request hook rather than a route because Flask's routing is case-sensitive; it runs after
    the core's journal-and-fault hook, so the journal shows the path as the client wrote it.
    """
    if request.path.rstrip("/").lower() != TOKEN_PATH:
        return None
    if request.method != "POST":
        raise MethodNotAllowed(valid_methods=["POST"])
    return issue_token()


def issue_token() -> ResponseReturnValue:
    """Seed 004 "Getting an authentication token": client credentials in a form body."""
    store = rapidsos_store()
    media_type = (request.content_type or "").split(";", 1)[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise RapidsosError(400, f"Content-Type must be {FORM_MEDIA_TYPE}")
    form = request.form
    errors: Errors = {}
    grant_type = form.get("grant_type")
    if not grant_type:
        errors["grant_type"] = [f"is required (hardcode {GRANT_TYPE})"]
    elif grant_type != GRANT_TYPE:
        errors["grant_type"] = [f"unsupported grant type {grant_type!r}; use {GRANT_TYPE}"]
    for name in ("client_id", "client_secret"):
        if not form.get(name):
            errors[name] = ["is required"]
    if errors:
        raise RapidsosError(400, "Invalid token request: " + ", ".join(errors), errors)
    client = store.settings.clients.get(form["client_id"])
    if client is None or not secrets.compare_digest(client.client_secret, form["client_secret"]):
        raise RapidsosError(401, "Invalid client credentials")
    token, issued_at = store.issue_token(client.client_id)
    response = jsonify(
        access_token=token,
        token_type=TOKEN_TYPE,
        issued_at=str(epoch_ms(issued_at)),
        expires_in=str(store.settings.token_ttl_s),
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post(ALERTS_PATH, strict_slashes=False)
def create_alert() -> ResponseReturnValue:
    """Seed 004 "Create an Alert": 201 / 216 / 217 by the coverage map, or a short 201 when not blocking."""
    store = rapidsos_store()
    client = _authenticate(store)
    store.count_request(client.client_id)
    body = _json_object_body()
    errors = AlertValidator(
        min_timestamp_ms=store.settings.min_timestamp_ms, callflows=store.settings.callflows
    ).validate(body)
    if errors:
        raise RapidsosError(400, "Invalid alert: " + ", ".join(errors), errors)
    record = new_alert(store.settings, client, body, store.clock.time())
    store.add(record)
    if not record.blocking:
        return jsonify(source_id=record.alert["source_id"], status={"name": "RECEIVED"}), CREATED
    return jsonify(record.alert), record.http_status


@bp.get(f"{ALERTS_PATH}<alert_id>", strict_slashes=False)
def get_alert(alert_id: str) -> ResponseReturnValue:
    """The alert as it stands (Part A item 15); 404 once its 12 hours are over."""
    store = rapidsos_store()
    client = _authenticate(store)
    store.count_request(client.client_id)
    return jsonify(store.snapshot(store.live_alert(alert_id, client.client_id)))


@bp.patch(f"{ALERTS_PATH}<alert_id>", strict_slashes=False)
def update_alert(alert_id: str) -> ResponseReturnValue:
    """A central station's status change: CANCELED, DISPATCH_REQUESTED or IGNORED (Part A item 15)."""
    store = rapidsos_store()
    client = _authenticate(store)
    store.count_request(client.client_id)
    record = store.live_alert(alert_id, client.client_id)
    body = _json_object_body()
    errors: Errors = {}
    status = body.get("status")
    if "status" not in body:
        errors["status"] = ["is required"]
    elif status not in PARTNER_STATUSES:
        errors["status"] = [f"must be one of {', '.join(PARTNER_STATUSES)} (got {status!r})"]
    for name in body:
        if name != "status":
            errors[name] = ["cannot be set by a tech partner; only status can"]
    if errors:
        raise RapidsosError(400, "Invalid alert update: " + ", ".join(errors), errors)
    return jsonify(store.update_status(record, str(status)))


@bp.get("/_sandbox/alerts")
def list_alerts() -> ResponseReturnValue:
    """Control view: every stored alert (`?source_id=` filters), with what was sent and answered."""
    store = rapidsos_store()
    source_id = request.args.get("source_id")
    now = store.clock.time()
    listed = []
    for record in store.records():
        if source_id is not None and record.alert["source_id"] != source_id:
            continue
        expires_at = record.created_at + store.settings.alert_retention_s
        listed.append(
            {
                "alert_id": record.alert_id,
                "client_id": record.client_id,
                "blocking": record.blocking,
                "http_status": record.http_status,
                "created_at": _iso(record.created_at),
                "expires_at": _iso(expires_at),
                "expired": now >= expires_at,
                "request": record.request,
                "alert": record.alert,
            }
        )
    return jsonify(listed)


def create_app(config: dict[str, Any] | None = None, clock: Clock | None = None) -> Flask:
    """The RapidSOS simulator; `config` is the whole sandbox configuration (None = the default)."""
    app, state = make_simulator(NAME, error_body=error_body, config=config, clock=clock)
    store = RapidsosStore(Settings.from_table(state.settings), state.clock)
    state.on_reset(store.reset)
    app.extensions[STORE_KEY] = store
    app.register_error_handler(RapidsosError, _answer_rapidsos_error)
    app.before_request(_route_token_path)
    app.register_blueprint(bp)
    return app


def rapidsos_store(app: Flask | None = None) -> RapidsosStore:
    """The simulator's store (of `app`, or of the app handling the current request)."""
    store: RapidsosStore = (app or current_app).extensions[STORE_KEY]
    return store


# --- helpers ---------------------------------------------------------------------------------------


def _authenticate(store: RapidsosStore) -> Client:
    header = request.headers.get("Authorization")
    if not header:
        raise unauthorized("Missing Authorization header; send 'Bearer <access_token>'")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("Authorization must be 'Bearer <access_token>'")
    client_id = store.token_client(token.strip())
    client = store.settings.clients.get(client_id)
    if client is None:  # pragma: no cover - tokens are issued only to configured clients
        raise unauthorized("Invalid access token")
    return client


def _json_object_body() -> dict[str, Any]:
    if not request.is_json:
        raise RapidsosError(400, f"Content-Type must be application/json, not {request.content_type!r}")
    body = request.get_json(silent=True)
    if body is None:
        raise RapidsosError(400, "Malformed JSON in the request body")
    if not isinstance(body, dict):
        raise RapidsosError(400, "The request body must be a JSON object")
    return body


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds")
