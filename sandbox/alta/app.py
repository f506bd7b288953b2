"""Avigilon Alta Video (Alta Protect) simulator (seed 002; CONTRACTS Part A items 1-5, Part B §1).

Vendor API, under `/api/v1` as on `https://<deployment>.<region>.alta.avigilon.com`:

- `POST /dologin {username, password}` → 200 `{}` + `Set-Cookie: va=<opaque>`; wrong credentials 401.
  `POST /logout` ends the session. Every other call needs `Cookie: va=<value>`, else 401.
- `GET /ongoingAlerts` → bare array of alerts `{guid, alarm_zone_id, merged, origin_name, origin_id,
  alarm_zone_name, acknowledgment_code, start_time, site_id}`.
- `GET /alerts/{guid}/bookmarks` → array of `{id, guest_token, device_id, start, end}`; the guest link
  `<base>/cloud?t=<guest_token>` is served too (`GET /cloud?t=`, a small HTML page).
- `POST /alerts/{guid} {acknowledgment_code, guid, merged, origin_name}` (verify) and
  `POST /alerts/{guid}/end` → 200 with the alert.
- `GET /alarmZones`, `GET /alarmZones/{id}`.

Control extras (under `/_sandbox/`): `POST /detections {"alarm_zone_id", "device_id"?}` plays a camera
detection: it creates or merges the zone's alert and fires the zone's Webhook action synchronously,
answering with the alert, `merged`, the bookmark and the delivery (what was sent, the receiver's status
or the connection error). Optional keys: `detection`, `trigger_phase`, `fire_webhook` (bool),
`webhook_url` / `webhook_base_url` (this call only), `listing_delay_s`, `bookmark_delay_s`.
`GET|POST|DELETE /webhook-target` reads / sets / forgets a lasting override of the zones' webhook URL
(`{"url"}` whole or `{"base_url"}` scheme and host only, optionally for one `alarm_zone_id`); it
survives `POST /_sandbox/reset` because it is wiring, not vendor data. `GET /alerts` lists every alert
with its internals (listed or not, ended or not); `GET /webhooks` every delivery. The command line's
`--alta-webhook-base-url` (`add_arguments`, `configure`) sets the same override for every zone.

Choices the documents leave open, made here and nowhere else:

- Errors are `{"status", "error" (reason phrase), "message"}`; Alta publishes no error shape. Order of
  checks: session (401) → permission (403) → guid (404) → body (400).
- Login: the body must be a JSON object with string `username` and `password` (else 400); the username
  is an email, compared ignoring case; the password exactly. 2FA (`/totp`) is not simulated.
- The cookie: a JWT-shaped opaque value, `Path=/; HttpOnly`, `Secure` only over HTTPS (so that plain
  loopback HTTP clients keep it), `Expires` = login time + `cookie_ttl_s` on the simulated clock. The
  lifetime is absolute: calls do not extend it and no new cookie is issued; a new login gives a new
  cookie and leaves older ones valid until they expire. `POST /logout` invalidates the cookie (200 `{}`).
- Permissions: an account lists its role's permissions (no list = every permission). Only
  `Share video` is checked: bookmarks need it (403 without), because guest tokens share video.
- Late listing: a new alert is listed `listing_delay_s` (2 s) after its detection; until then it does
  not exist for the API (404 on verify, end and bookmarks), as if Alta had not written it yet. The
  webhook fires at the detection, so by default it arrives BEFORE the alert is listed.
- Merge: a detection within the zone's `merge_window_s` (60 s, inclusive) of the start of the zone's
  newest open alert joins it (`merged: true`, origin unchanged); later, or after the alert ended, a
  new alert opens. The webhook fires on merged detections too (`webhook_on_merge = true`): seed 002
  tells the receiver to look at `merged` when the webhook triggers.
- Bookmarks: one per detection when the zone has an External link action (`external_link = true`),
  shown `bookmark_delay_s` (5 s) after the detection, covering `bookmark_pre_s` before to
  `bookmark_post_s` after it; `start`/`end` in epoch ms; `id` a UUID string. None without the action.
- Verify: `acknowledgment_code` must be the integer 101, 201 or 202; `guid` must equal the path's;
  `merged` must be a boolean and `origin_name` a string (not compared with the alert, which may have
  merged since it was read); anything else is 400. 202 (false) also ends the alert, as in the UI.
  Verifying or ending an ended alert is 200 and it stays ended. Unknown guid → 404 on both.
- Lists are oldest first. `alarm_zone_id` and device ids are strings. `start_time` is epoch ms.
- Webhook values: `$time` epoch seconds (`time_unit = "ms"` for ms); `$timeIso` UTC with ms and `Z`;
  `$timePretty` like "Tuesday, January 06, 2026 05:25:00 EST" in the zone's `time_zone`;
  `$triggerPhase` "Alarm"; `$verification` None/Valid/False from the alert's acknowledgment code;
  `$url` the detection's guest link (missing without External link); `$jpg` a base64 8x8 grey JPEG
  (missing with `thumbnail = false`); `$dispatch` is not simulated (missing); `$deviceSiteId/Name` are
  the zone's site; other codes come from the zone and device tables and are missing when not set.
  Missing values become `missing_value` ("N/A"). The rendering rules are in `sandbox.alta.webhook`.
- A detection in a zone configured `armed = false` raises no alert and sends nothing.
- No rate limit is documented, so none is simulated. The other paths seed 002 lists (arm/disarm,
  muting, alarmZoneAlerts, publicIntrusion*, `GET /alerts`) are not simulated: 404 with the error body
  (`GET /alerts/{guid}` is 405: only the verify POST exists there).
"""

import argparse
import threading
from datetime import UTC, datetime
from html import escape
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from sandbox.alta.alerts import (
    ACKNOWLEDGMENT_CODES,
    AlarmZone,
    AlertBook,
    DetectionOutcome,
    Device,
    Timing,
    UnknownAlertError,
)
from sandbox.alta.sessions import Account, SessionBook
from sandbox.alta.webhook import Delivery, WebhookAction, deliver, masked_url, target_url, template_values
from sandbox.clock import Clock
from sandbox.simulator import SimulatorState, current_state, make_simulator, reason_phrase

NAME = "alta"
STORE_KEY = "sandbox.alta"
API = "/api/v1"
COOKIE = "va"
SHARE_VIDEO = "Share video"


class AltaError(Exception):
    """A request Alta refuses; answered with the error body by the blueprint's handler."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def alta_error_body(status: int, message: str) -> dict[str, Any]:
    """The error body of every Alta error (and injected status)."""
    return {"status": status, "error": reason_phrase(status), "message": message}


class AltaDeployment:
    """The simulated deployment: accounts, zones, alerts, webhook actions and deliveries."""

    def __init__(self, settings: dict[str, Any]) -> None:
        accounts = []
        for raw in settings.get("accounts", []):
            if not raw.get("username") or "password" not in raw:
                raise ValueError("[[alta.accounts]]: every account needs a username and a password")
            permissions = raw.get("permissions")
            accounts.append(
                Account(
                    username=str(raw["username"]),
                    password=str(raw["password"]),
                    permissions=None if permissions is None else frozenset(map(str, permissions)),
                )
            )
        self.sessions = SessionBook(accounts, float(settings.get("cookie_ttl_s", 3600)))
        merge_window_s = float(settings.get("merge_window_s", 60))
        zones = [AlarmZone.from_settings(raw, merge_window_s) for raw in settings.get("alarm_zones", [])]
        if len({zone.id for zone in zones}) != len(zones):
            raise ValueError("[[alta.alarm_zones]]: two zones share an id")
        timing = Timing(
            listing_delay_s=float(settings.get("listing_delay_s", 2)),
            bookmark_delay_s=float(settings.get("bookmark_delay_s", 5)),
            bookmark_pre_s=float(settings.get("bookmark_pre_s", 10)),
            bookmark_post_s=float(settings.get("bookmark_post_s", 20)),
        )
        self.alerts = AlertBook({zone.id: zone for zone in zones}, timing)
        default_webhook = dict(settings.get("webhook", {}))
        self.actions: dict[str, WebhookAction | None] = {}
        for zone in zones:
            try:
                self.actions[zone.id] = WebhookAction.from_settings(default_webhook, zone.webhook)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"alarm zone {zone.id!r}: {exc}") from None
        self.webhook_on_merge = bool(settings.get("webhook_on_merge", True))
        self.public_base_url = str(settings.get("public_base_url") or "").rstrip("/")
        self._lock = threading.Lock()
        self._targets: dict[str | None, tuple[str | None, str | None]] = {}  # zone id (None = all)
        self._deliveries: list[Delivery] = []

    def reset(self) -> None:
        """Forget sessions, alerts and deliveries; the webhook target override stays."""
        self.sessions.reset()
        self.alerts.reset()
        with self._lock:
            self._deliveries = []

    def set_target(self, zone_id: str | None, url: str | None, base_url: str | None) -> None:
        """Override the webhook URL of one zone (or of all with None); both None forgets it."""
        with self._lock:
            if url or base_url:
                self._targets[zone_id] = (url, base_url)
            else:
                self._targets.pop(zone_id, None)

    def clear_targets(self) -> None:
        """Forget every webhook URL override."""
        with self._lock:
            self._targets = {}

    def target(self, zone_id: str, url: str | None = None, base_url: str | None = None) -> str | None:
        """The URL the zone's webhook goes to: this call's override, the zone's, all zones', configured."""
        action = self.actions[zone_id]
        if action is None:
            return None
        if url or base_url:
            return target_url(action.url, url, base_url)
        with self._lock:
            override = self._targets.get(zone_id) or self._targets.get(None)
        return target_url(action.url, *override) if override else action.url

    def record(self, delivery: Delivery) -> None:
        """Keep a delivery for `GET /_sandbox/webhooks`."""
        with self._lock:
            self._deliveries.append(delivery)

    def deliveries(self) -> list[dict[str, Any]]:
        """Every delivery, oldest first."""
        with self._lock:
            return [delivery.to_json() for delivery in self._deliveries]


bp = Blueprint("alta", __name__)


@bp.errorhandler(AltaError)
def _answer_alta_error(exc: AltaError) -> Response:
    return current_state().error_response(exc.status, exc.message)


@bp.errorhandler(UnknownAlertError)
def _answer_unknown_alert(exc: UnknownAlertError) -> Response:
    return current_state().error_response(404, f"Alert {exc.args[0]} not found")


@bp.post(f"{API}/dologin")
def dologin() -> ResponseReturnValue:
    """Seed 002 "Authentication": the `va` cookie for a deployment login."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not all(
        isinstance(body.get(key), str) for key in ("username", "password")
    ):
        raise AltaError(400, 'The body must be JSON {"username": "<email>", "password": "<password>"}')
    state = current_state()
    session = deployment().sessions.login(body["username"], body["password"], state.clock.time())
    if session is None:
        raise AltaError(401, "Invalid username or password")
    cookie, expires_at = session
    response = jsonify({})
    response.set_cookie(
        COOKIE,
        cookie,
        expires=datetime.fromtimestamp(expires_at, tz=UTC),
        path="/",
        httponly=True,
        secure=request.is_secure,
    )
    return response


@bp.post(f"{API}/logout")
def logout() -> ResponseReturnValue:
    """End the session of the cookie sent."""
    _session()
    deployment().sessions.logout(request.cookies[COOKIE])
    return jsonify({})


@bp.get(f"{API}/ongoingAlerts")
def ongoing_alerts() -> ResponseReturnValue:
    """The alerts listed and not ended (CONTRACTS Part A item 2)."""
    _session()
    return jsonify(deployment().alerts.ongoing(current_state().clock.time()))


@bp.get(f"{API}/alerts/<guid>/bookmarks")
def alert_bookmarks(guid: str) -> ResponseReturnValue:
    """The alert's bookmarks that exist by now, each with its `guest_token`."""
    if not _session().may(SHARE_VIDEO):
        raise AltaError(403, f"The user's role lacks the '{SHARE_VIDEO}' permission")
    return jsonify(deployment().alerts.bookmarks(guid, current_state().clock.time()))


@bp.post(f"{API}/alerts/<guid>")
def verify_alert(guid: str) -> ResponseReturnValue:
    """Set the verification status: 101 none, 201 valid, 202 false (which also ends the alert)."""
    _session()
    alerts = deployment().alerts
    now = current_state().clock.time()
    alerts.alert(guid, now)  # 404 before the body is looked at
    code = _verification_code(guid, request.get_json(silent=True))
    return jsonify(alerts.verify(guid, code, now))


@bp.post(f"{API}/alerts/<guid>/end")
def end_alert(guid: str) -> ResponseReturnValue:
    """End the alert; 200 again when it has ended already."""
    _session()
    return jsonify(deployment().alerts.end(guid, current_state().clock.time()))


@bp.get(f"{API}/alarmZones")
def alarm_zones() -> ResponseReturnValue:
    """The deployment's alarm zones."""
    _session()
    return jsonify([zone.to_json() for zone in deployment().alerts.zones.values()])


@bp.get(f"{API}/alarmZones/<zone_id>")
def alarm_zone(zone_id: str) -> ResponseReturnValue:
    """One alarm zone."""
    _session()
    zone = deployment().alerts.zones.get(zone_id)
    if zone is None:
        raise AltaError(404, f"Alarm zone {zone_id} not found")
    return jsonify(zone.to_json())


@bp.get("/cloud")
def shared_video() -> ResponseReturnValue:
    """The guest link of a bookmark (`/cloud?t=<guest_token>`): a page naming the shared video."""
    shared = deployment().alerts.shared_bookmark(request.args.get("t", ""))
    if shared is None:
        raise AltaError(404, "This shared link is invalid or has expired")
    alert, bookmark = shared
    start = datetime.fromtimestamp(bookmark.start_ms / 1000, tz=UTC).isoformat()
    page = (
        "<!doctype html><title>Alta shared video</title>"
        f"<h1>{escape(alert.zone.name)}</h1><p>Camera {escape(bookmark.device_id)}, from {start} "
        f"for {(bookmark.end_ms - bookmark.start_ms) // 1000} s (alert {escape(alert.guid)}).</p>"
    )
    return Response(page, mimetype="text/html")


# --- control API -----------------------------------------------------------------------------------


@bp.post("/_sandbox/detections")
def play_detection() -> ResponseReturnValue:
    """Play a camera detection in a zone: create or merge its alert, then fire the zone's webhook."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error='expected {"alarm_zone_id": "...", "device_id": "..."}'), 400
    site = deployment()
    zone = site.alerts.zones.get(str(body.get("alarm_zone_id")))
    if zone is None:
        return jsonify(error=f"unknown alarm_zone_id {body.get('alarm_zone_id')!r}"), 404
    device_id = body.get("device_id")
    device = zone.device(None if device_id is None else str(device_id))
    if device is None:
        return jsonify(error=f"device {device_id!r} is not in alarm zone {zone.id!r}"), 400
    try:
        options = _detection_options(body)
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    if not zone.armed:
        return jsonify(armed=False, alert=None, merged=False, bookmark=None, webhook=None)
    state = current_state()
    at = state.clock.time()
    outcome = site.alerts.detect(
        zone,
        device,
        at,
        listing_delay_s=options["listing_delay_s"],
        bookmark_delay_s=options["bookmark_delay_s"],
    )
    fire = options["fire_webhook"]
    if fire is None:
        fire = site.webhook_on_merge or not outcome.merged
    delivery = _fire_webhook(site, state, zone, device, outcome, at, options) if fire else None
    bookmark = outcome.bookmark
    return jsonify(
        armed=True,
        alert=outcome.alert,
        merged=outcome.merged,
        listed=at >= outcome.listed_at,
        listed_at=int(outcome.listed_at * 1000),
        bookmark=None
        if bookmark is None
        else {**bookmark.to_json(), "visible_at": int(bookmark.visible_at * 1000)},
        webhook=None if delivery is None else delivery.to_json(),
    )


@bp.get("/_sandbox/webhook-target")
def read_webhook_targets() -> ResponseReturnValue:
    """Where each zone's webhook goes now (token-like query values masked)."""
    return jsonify(_targets_json(deployment()))


@bp.post("/_sandbox/webhook-target")
def set_webhook_target() -> ResponseReturnValue:
    """`{"url": ...}` or `{"base_url": ...}`, optionally with `alarm_zone_id`; both empty forgets."""
    body = request.get_json(silent=True)
    site = deployment()
    if not isinstance(body, dict):
        return jsonify(error='expected {"url": "http://..."} or {"base_url": "http://host:port"}'), 400
    zone_id = body.get("alarm_zone_id")
    if zone_id is not None and zone_id not in site.alerts.zones:
        return jsonify(error=f"unknown alarm_zone_id {zone_id!r}"), 404
    url, base_url = body.get("url"), body.get("base_url")
    for value in (url, base_url):
        if value is not None and (
            not isinstance(value, str) or not value.startswith(("http://", "https://"))
        ):
            return jsonify(error=f"{value!r} is not an http(s) URL"), 400
    if url and base_url:
        return jsonify(error="give url or base_url, not both"), 400
    site.set_target(zone_id, url, base_url)
    return jsonify(_targets_json(site))


@bp.delete("/_sandbox/webhook-target")
def clear_webhook_targets() -> ResponseReturnValue:
    """Back to the configured webhook URLs."""
    deployment().clear_targets()
    return "", 204


@bp.get("/_sandbox/alerts")
def list_all_alerts() -> ResponseReturnValue:
    """Every alert with the simulator's internals (listed_at, ended_at, bookmarks with visible_at)."""
    return jsonify(deployment().alerts.snapshot(current_state().clock.time()))


@bp.get("/_sandbox/webhooks")
def list_deliveries() -> ResponseReturnValue:
    """Every webhook call made, oldest first, with the receiver's status or the connection error."""
    return jsonify(deployment().deliveries())


def create_app(config: dict[str, Any] | None = None, clock: Clock | None = None) -> Flask:
    """The Alta simulator; `config` is the whole sandbox configuration (None = the default)."""
    app, state = make_simulator(NAME, error_body=alta_error_body, config=config, clock=clock)
    site = AltaDeployment(state.settings)
    state.on_reset(site.reset)
    app.extensions[STORE_KEY] = site
    app.register_blueprint(bp)
    return app


def deployment(app: Flask | None = None) -> AltaDeployment:
    """The Alta deployment (of `app`, or of the app handling the current request)."""
    site: AltaDeployment = (app or current_app).extensions[STORE_KEY]
    return site


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Alta's command-line option: where the zone webhooks go (`alarm-bridge dev` points them at the web)."""
    parser.add_argument(
        "--alta-webhook-base-url",
        metavar="URL",
        help="send Alta zone webhooks to this scheme://host:port (path and ?token= as configured)",
    )


def configure(app: Flask, args: argparse.Namespace) -> None:
    """Apply `--alta-webhook-base-url`: the same lasting override as POST /_sandbox/webhook-target."""
    if args.alta_webhook_base_url:
        deployment(app).set_target(None, None, args.alta_webhook_base_url)


def _session() -> Account:
    account = deployment().sessions.account(request.cookies.get(COOKIE), current_state().clock.time())
    if account is None:
        raise AltaError(401, "Not logged in or the session has expired: POST /api/v1/dologin")
    return account


def _verification_code(guid: str, body: Any) -> int:
    if not isinstance(body, dict):
        raise AltaError(
            400, "The body must be a JSON object {acknowledgment_code, guid, merged, origin_name}"
        )
    code = body.get("acknowledgment_code")
    if isinstance(code, bool) or not isinstance(code, int) or code not in ACKNOWLEDGMENT_CODES:
        raise AltaError(400, "acknowledgment_code must be 101 (none), 201 (valid) or 202 (false)")
    if body.get("guid") != guid:
        raise AltaError(400, "guid must be the guid of the alert in the path")
    if not isinstance(body.get("merged"), bool):
        raise AltaError(400, "merged must be a boolean")
    if not isinstance(body.get("origin_name"), str):
        raise AltaError(400, "origin_name must be a string")
    return code


def _detection_options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in ("listing_delay_s", "bookmark_delay_s"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise ValueError(f"{key} must be a number of seconds >= 0")
        options[key] = value
    for key in ("detection", "trigger_phase", "webhook_url", "webhook_base_url"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        options[key] = value
    fire = body.get("fire_webhook")
    if fire is not None and not isinstance(fire, bool):
        raise ValueError("fire_webhook must be a boolean")
    options["fire_webhook"] = fire
    return options


def _fire_webhook(
    site: AltaDeployment,
    state: SimulatorState,
    zone: AlarmZone,
    device: Device,
    outcome: DetectionOutcome,
    at: float,
    options: dict[str, Any],
) -> Delivery | None:
    action = site.actions[zone.id]
    url = site.target(zone.id, options["webhook_url"], options["webhook_base_url"])
    if action is None or url is None:
        return None
    link = None
    if outcome.bookmark is not None:
        base = site.public_base_url or request.url_root.rstrip("/")
        link = f"{base}/cloud?t={outcome.bookmark.guest_token}"
    values = template_values(
        action,
        zone,
        device,
        outcome,
        at,
        link=link,
        detection=options["detection"],
        trigger_phase=options["trigger_phase"],
    )
    delivery = deliver(
        action,
        url,
        action.render(values),
        at=datetime.fromtimestamp(at, tz=UTC),
        alarm_zone_id=zone.id,
        alert_guid=outcome.alert["guid"],
        journal=state.journal,
    )
    site.record(delivery)
    return delivery


def _targets_json(site: AltaDeployment) -> dict[str, Any]:
    targets = {zone_id: site.target(zone_id) for zone_id in site.alerts.zones}
    return {
        "targets": {zone_id: None if url is None else masked_url(url) for zone_id, url in targets.items()}
    }
