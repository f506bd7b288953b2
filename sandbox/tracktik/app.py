"""TrackTik (Trackforce) REST API simulator: OAuth2 tokens and alarms (seed 000; CONTRACTS Part A
items 6-9, Part B §2).

Vendor API, under a portal root (`https://<portal>.staffr.net`; here the simulator's base URL):

- `POST /rest/oauth2/access_token` — OAuth2 `password` and `refresh_token` grants (`sandbox.tracktik.oauth`).
- `POST /rest/v1/alarms` — create an alarm (and its dispatch task) from seed 000's payload → 201.
- `GET /rest/v1/alarms/{id}[?include=notes,attachments]` — one alarm, bare object as in seed 000.
- `GET /rest/v1/alarms?alarmOrganization=&triggeredOn=&include=notes&limit=&offset=` — the list the
  client searches for its own alarm after an unknown outcome (Part A item 8).
- `GET /rest/v1/media/{id}/{sha1}` — an attachment's image bytes: the `url` of `include=attachments`.

Control extra: `GET /_sandbox/alarms` lists every stored alarm with its notes and attachments.

Choices the documents leave open, made here and nowhere else:

- Tokens. The token endpoint reads a form body (seed's PHP/VBA examples) and also a JSON object (the
  refresh example); client credentials may come as form fields or HTTP Basic. Success is league's
  `{token_type: "Bearer", expires_in, access_token (a JWT), refresh_token ("def502…")}` with
  `Cache-Control: no-store`. Access tokens live `token_ttl_s` (3600), refresh tokens
  `refresh_token_ttl_s` (30 days). A refresh token works once; exchanging it also revokes the access
  token issued with it (league does both). Users are not tied to OAuth clients: any configured client
  with any configured user. `scope` is ignored.
- Token errors are league/oauth2-server's `{error, error_description, hint?, message}`: no or unknown
  `grant_type` → 400 `unsupported_grant_type`; a missing parameter → 400 `invalid_request` (hint names
  it); an unknown client or wrong secret → 401 `invalid_client`; a wrong username or password → 400
  `invalid_grant` "The user credentials were incorrect."; an unknown, expired, reused or other-client
  refresh token → 400 `invalid_grant` "The refresh token is invalid." (hint says which). All are final:
  retrying cannot succeed.
- Lockout. Every token request answered 400 or 401 is a failed attempt of the caller's IP (the first
  `X-Forwarded-For` address, else the socket peer). The attempt that makes `login_block_failures` (40)
  within less than `login_block_window_s` (120) blocks the IP for `login_block_s` (7200): every token
  request from it, right or wrong, gets 429 `too_many_attempts` with `Retry-After` (s) until the block
  ends, and blocked requests do not count. Only the token endpoint is blocked; API calls with a live
  token still work.
- API auth: `Authorization: Bearer <access_token>` on every `/rest/v1` path, checked before anything
  else. Missing, unknown, expired or revoked → 401 with league's resource-server body (`error:
  access_denied`, a hint saying which; `message` is there too, like every TrackTik error).
- Rate limit: `rate_limit_per_minute` (3000, "usually in the thousands") authenticated `/rest/v1`
  requests per user in any sliding 60 s; more → 429 `{"message"}` with `Retry-After` (s). Refused
  requests do not count. No `X-RateLimit-*` headers (TrackTik documents none).
- Error body of the API: `{"message": "..."}`; a 422 adds `"errors": {"<field>": ["..."]}` naming every
  bad field at once, nested fields dotted (`location.latitude`, `notes.0.comment`,
  `attachments.0.base64EncodedData`). Injected status faults use the same shapes (league's on the token
  endpoint). A body that is not a JSON object is 400; an unknown alarm or media id is 404.
- `POST /rest/v1/alarms` → 201 with the bare alarm in seed 000's key order: `customId` (UUIDv7 from the
  simulated clock), the fields sent, `alarmConnection`, `dispatchTask` (a new id), `status: "ACTIVE"`,
  `id`. Ids count up from `first_alarm_id`, `first_dispatch_task_id`, `first_note_id`,
  `first_attachment_id` (the defaults reproduce seed 000's 22 / 683 / 102443 / 14103). Checks (422):
  - `alarmOrganization` required, an integer, one of `[[tracktik.organizations]]`;
  - `alarmTypeCode` required, a string, in that organization's `alarm_type_codes` (not checked when
    the organization is itself wrong);
  - `location` required, an object whose text fields are strings or null, `country` two letters
    (ISO 3166-1 alpha-2), `latitude` within ±90 and `longitude` within ±180 (numbers), and at least an
    `addressLine1` or both coordinates; all nine keys come back, null when not sent;
  - `triggeredOn` required and `registeredOn` optional (default: receipt time): ISO 8601 in UTC
    (`Z`, `+00:00` or `-00:00`; seed 000 asks for UTC). Both are stored and returned with seconds
    precision and `+00:00` (fractions dropped). A time without an offset, or with another offset (a
    local time), is refused;
  - `onSiteInformation` optional (Part A): an object of strings or null and `sla` a whole number
    >= 0 (minutes); when absent the alarm carries the four keys as null;
  - `alarmConnectionCustomId` optional, a string or null. It is matched against the connections of
    the alarm's organization: a match gives `alarmConnection: {id, customId}`, anything else
    `alarmConnection: null` and no error (seed 000's own example);
  - `notes`: an array of `{comment}` with a non-blank string; stored in order as `{comment, createdBy
    (the token's employee id), createdOn (receipt time), type: "COMMENT", sentFrom: "", id}`;
  - `attachments`: an array of `{base64EncodedData, mimeType}`. `base64EncodedData` must be a data URL
    `data:<type>;base64,<data>` whose type is JPEG, PNG, GIF or WebP, and whose data decodes to bytes
    starting with one of those signatures. The data is decoded like PHP's non-strict `base64_decode`
    (characters outside the alphabet are skipped, padding may be missing), which is how seed 000's
    own truncated example (`... AAQA etc.`) decodes to a JPEG header. `mimeType` is optional and, when
    given, must be an image type too. `format` comes from the signature. Each is stored as `{url, tag:
    "ATTACHMENT_<n>", format, name: "frombase64.<format>", id, uuid}`; `url` is absolute for the host
    the caller used and serves the bytes with their image content type (bearer token required, as for
    every `/rest/v1` path).
  Fields the simulator does not know are ignored. There is no idempotency and no cancel (Part A 8-9).
- `GET /rest/v1/alarms/{id}`: `include` is a comma list; `notes` and `attachments` are expanded
  (`attachments` first, as in seed 000); other relation names are ignored. An id that is not a
  positive integer is 404 like an unknown one.
- `GET /rest/v1/alarms`: filters `alarmOrganization` (an integer) and `triggeredOn` (an ISO time with
  an offset; the same instant matches however it is written) are exact matches; `include` as above;
  `limit` 1-1000 (default 100) and `offset` >= 0; ordered by id. Any other query parameter, or a filter
  value that cannot be read, is 400 — the simulator refuses what it would otherwise silently ignore, so
  a client never believes it filtered when it did not. Answer: `{"data": [...], "meta": {count,
  itemCount, limit, offset}}`.
- Reset forgets every alarm, token, failed attempt, block and rate-limit window.
"""

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from sandbox.clock import Clock
from sandbox.simulator import current_state, make_simulator
from sandbox.tracktik.alarms import INCLUDABLE, AlarmStore, AlarmValidationError, parse_utc_time
from sandbox.tracktik.oauth import (
    ACCESS_DENIED,
    DESCRIPTIONS,
    AccessToken,
    OAuthError,
    OAuthServer,
    oauth_error_body,
    oauth_error_type,
)

NAME = "tracktik"
TOKEN_PATH = "/rest/oauth2/access_token"
ALARMS_PATH = "/rest/v1/alarms"
MEDIA_PATH = "/rest/v1/media"
PORTAL_KEY = "sandbox.tracktik"

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
LIST_PARAMETERS = frozenset({"alarmOrganization", "triggeredOn", "include", "limit", "offset"})


class TrackTikError(Exception):
    """A refused API request: `{"message"}`, plus `errors` on a 422."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}


def tracktik_error_body(status: int, message: str) -> dict[str, Any]:
    """The error shape of the path being answered (used for injected faults and HTTP errors too)."""
    if request.path == TOKEN_PATH:
        error = oauth_error_type(status)
        return oauth_error_body(error, DESCRIPTIONS[error], hint=message)
    if status == 401:
        return oauth_error_body(ACCESS_DENIED, DESCRIPTIONS[ACCESS_DENIED], hint=message)
    body: dict[str, Any] = {"message": message}
    if status == 422:
        body["errors"] = {}
    return body


@dataclass(slots=True)
class MinuteRateLimit:
    """At most `limit` requests per key in any sliding 60 s; thread-safe."""

    limit: int
    window_s: float = 60.0
    _seen: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str, now: float) -> float | None:
        """Count a request; None when allowed, else the seconds until one is allowed again."""
        with self._lock:
            seen = self._seen.setdefault(key, deque())
            while seen and now - seen[0] >= self.window_s:
                seen.popleft()
            if len(seen) >= self.limit:
                return seen[0] + self.window_s - now
            seen.append(now)
            return None

    def clear(self) -> None:
        """Forget every window."""
        with self._lock:
            self._seen.clear()


@dataclass(slots=True)
class Portal:
    """One TrackTik portal: its authorization server, its alarms and its rate limit."""

    oauth: OAuthServer
    alarms: AlarmStore
    rate_limit: MinuteRateLimit

    def reset(self) -> None:
        """Back to the configured seed: no alarms, no tokens, no blocks, empty rate windows."""
        self.oauth.reset()
        self.alarms.reset()
        self.rate_limit.clear()


oauth_bp = Blueprint("tracktik_oauth", __name__)
api_bp = Blueprint("tracktik_api", __name__)
control_bp = Blueprint("tracktik_control", __name__)


@oauth_bp.post(TOKEN_PATH)
def issue_token() -> ResponseReturnValue:
    """Part A item 6: the password and refresh grants."""
    basic = request.authorization
    credentials = (
        (basic.username or "", basic.password or "") if basic is not None and basic.type == "basic" else None
    )
    body = portal().oauth.grant(_token_params(), credentials, client_ip())
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@api_bp.before_request
def _authenticate_and_count() -> None:
    token = portal().oauth.authenticate(request.headers.get("Authorization"))
    g.tracktik_token = token
    limit = portal().rate_limit
    retry_s = limit.take(token.username, current_state().clock.time())
    if retry_s is not None:
        raise TrackTikError(
            429,
            f"Too Many Requests: more than {limit.limit} requests in the past minute.",
            headers={"Retry-After": str(max(1, int(retry_s + 0.999)))},
        )


@api_bp.post(ALARMS_PATH)
def create_alarm() -> ResponseReturnValue:
    """Seed 000 "Creating an Alarm": 201 with the bare alarm and its new dispatch task id."""
    if not request.is_json:
        raise TrackTikError(400, "The request body must be JSON (Content-Type: application/json).")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise TrackTikError(400, "The request body must be a JSON object (an alarm).")
    token: AccessToken = g.tracktik_token
    return jsonify(portal().alarms.create(body, token.employee_id)), 201


@api_bp.get(f"{ALARMS_PATH}/<int:alarm_id>")
def get_alarm(alarm_id: int) -> ResponseReturnValue:
    """Seed 000: one alarm, with `include=notes,attachments` expanded."""
    alarm = portal().alarms.get(alarm_id, _include(), base_url=request.url_root)
    if alarm is None:
        raise TrackTikError(404, f"Alarm {alarm_id} not found.")
    return jsonify(alarm)


@api_bp.get(ALARMS_PATH)
def list_alarms() -> ResponseReturnValue:
    """Part A item 8: the exact-match list the client searches for its own alarm."""
    unsupported = sorted(set(request.args) - LIST_PARAMETERS)
    if unsupported:
        raise TrackTikError(
            400,
            f"Unsupported query parameter(s): {', '.join(unsupported)}. "
            f"This endpoint accepts {', '.join(sorted(LIST_PARAMETERS))}.",
        )
    organization = _int_arg("alarmOrganization", minimum=0)
    triggered_raw = request.args.get("triggeredOn")
    triggered_on = None
    if triggered_raw is not None:
        try:
            triggered_on = parse_utc_time(triggered_raw, any_offset=True)
        except ValueError as exc:
            raise TrackTikError(400, f"Invalid filter triggeredOn: {exc}") from None
    limit = _int_arg("limit", minimum=1, maximum=MAX_LIMIT)
    limit = DEFAULT_LIMIT if limit is None else limit
    offset = _int_arg("offset", minimum=0) or 0
    matches = portal().alarms.search(
        organization=organization, triggered_on=triggered_on, include=_include(), base_url=request.url_root
    )
    page = matches[offset : offset + limit]
    return jsonify(
        {
            "data": page,
            "meta": {"count": len(matches), "itemCount": len(page), "limit": limit, "offset": offset},
        }
    )


@api_bp.get(f"{MEDIA_PATH}/<int:media_id>/<digest>")
def get_media(media_id: int, digest: str) -> ResponseReturnValue:
    """An attachment's stored image, at the `url` that `include=attachments` shows."""
    media = portal().alarms.media(media_id, digest)
    if media is None:
        raise TrackTikError(404, f"Media {media_id} not found.")
    return Response(media.data, mimetype=media.content_type)


@control_bp.get("/_sandbox/alarms")
def list_stored_alarms() -> ResponseReturnValue:
    """Control view: every stored alarm with its notes and attachments, oldest first."""
    return jsonify(
        portal().alarms.search(
            organization=None, triggered_on=None, include=frozenset(INCLUDABLE), base_url=request.url_root
        )
    )


def _answer_oauth_error(exc: OAuthError) -> Response:
    response = jsonify(exc.body())
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response


def _answer_tracktik_error(exc: TrackTikError) -> Response:
    body: dict[str, Any] = {"message": exc.message}
    if exc.errors is not None:
        body["errors"] = exc.errors
    response = jsonify(body)
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response


def _answer_validation_error(exc: AlarmValidationError) -> Response:
    return _answer_tracktik_error(TrackTikError(422, str(exc), errors=exc.errors))


def create_app(config: dict[str, Any] | None = None, clock: Clock | None = None) -> Flask:
    """The TrackTik simulator; `config` is the whole sandbox configuration (None = the default)."""
    app, state = make_simulator(NAME, error_body=tracktik_error_body, config=config, clock=clock)
    settings = state.settings
    rate = settings.get("rate_limit_per_minute", 3000)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise ValueError(f"[tracktik] rate_limit_per_minute must be an integer >= 1 (got {rate!r})")
    store = Portal(
        oauth=OAuthServer(settings, state.clock),
        alarms=AlarmStore(settings, state.clock),
        rate_limit=MinuteRateLimit(limit=rate),
    )
    state.on_reset(store.reset)
    app.extensions[PORTAL_KEY] = store
    app.register_error_handler(OAuthError, _answer_oauth_error)
    app.register_error_handler(TrackTikError, _answer_tracktik_error)
    app.register_error_handler(AlarmValidationError, _answer_validation_error)
    app.register_blueprint(oauth_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(control_bp)
    return app


def portal(app: Flask | None = None) -> Portal:
    """The simulated portal (of `app`, or of the app handling the current request)."""
    found: Portal = (app or current_app).extensions[PORTAL_KEY]
    return found


def client_ip() -> str:
    """The caller's address as TrackTik's edge sees it: the first `X-Forwarded-For` hop, else the peer."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    first = forwarded.split(",", 1)[0].strip()
    return first or request.remote_addr or "unknown"


def _token_params() -> dict[str, str]:
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return {}
        return {
            str(k): str(v) for k, v in data.items() if isinstance(v, str | int) and not isinstance(v, bool)
        }
    return request.form.to_dict()


def _include() -> frozenset[str]:
    raw = request.args.get("include", "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _int_arg(name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    """An integer query parameter within bounds, None when absent; 400 when unreadable."""
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise TrackTikError(400, f"Invalid {name}: {raw!r} is not an integer.") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise TrackTikError(400, f"Invalid {name}: must be {bounds}.")
    return value
