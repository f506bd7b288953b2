"""Dashboard views: sign-in, the queue and its lists, one alarm's page, and the fragments their
script fetches every few seconds to refresh them in place.

Data comes from the named queries (app.ledger.queries). The pages only read: every command they offer
(verify, acknowledge, end, retry) is a call their script makes to the operator API, with the session's
CSRF token, so the dashboard can do nothing the API would not let the same operator do.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec
from urllib.parse import urlsplit

import marshmallow as ma
from flask import redirect, render_template, request, url_for
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from app.ledger import queries
from app.ledger.models import Outcome, utcnow
from app.web.auth import (
    CSRF_HEADER,
    TooManyFailuresError,
    csrf_token,
    end_operator_session,
    has_operator_session,
    is_valid_csrf,
    start_operator_session,
)
from app.web.dashboard import bp, display
from app.web.operator.schemas import LEDGER_ID_MAX
from app.web.services import services

P = ParamSpec("P")
View = str | Response | tuple[str, int] | tuple[str, int, dict[str, str]]

QUEUE_LIMIT = 200
REFRESH_S = 3  # how often an open page asks for its fragment

# Dashboard pages load only our own files; nothing may frame them (clickjacking) and, should an
# injection ever slip past autoescaping, no inline script runs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@dataclass(frozen=True, slots=True)
class AlarmList:
    """One tab of the queue page."""

    name: str
    title: str
    endpoint: str
    blurb: str
    read: Callable[[Session], list[dict[str, Any]]]
    rows_template: str = "dashboard/_alarm_rows.html"


LISTS = {
    "queue": AlarmList(
        "queue",
        "Queue",
        "dashboard.show_queue",
        "Open alarms, and ended ones a person must still act on: life-safety first, then property, "
        "technical, informational; oldest first in each.",
        lambda s: queries.alarm_queue(s, limit=QUEUE_LIMIT),
    ),
    "needs_person": AlarmList(
        "needs_person",
        "Needs a person",
        "dashboard.show_needs_person",
        "Alarms something only a person can resolve, ended ones too (a responder to recall by hand): "
        "acknowledge one to take it off this list.",
        lambda s: queries.alarm_queue(s, needs_person=True, limit=QUEUE_LIMIT),
    ),
    "unrouted": AlarmList(
        "unrouted",
        "Unrouted",
        "dashboard.show_unrouted",
        "Open alarms no site claims: nothing is dispatched for them until a person acts.",
        lambda s: queries.alarm_queue(s, unrouted=True, limit=QUEUE_LIMIT),
    ),
    "failed": AlarmList(
        "failed",
        "Failed steps",
        "dashboard.show_failed_actions",
        "Steps that gave up (permanent error or attempts exhausted), newest first: retry or act by hand.",
        lambda s: queries.list_actions(s, states=("failed",), limit=QUEUE_LIMIT),
        "dashboard/_action_rows.html",
    ),
    "supervision": AlarmList(
        "supervision",
        "Supervision",
        "dashboard.show_supervision",
        "Supervised accounts: when each was last heard from, and by when its link and automatic test "
        "are due. A missed deadline opens one trouble alarm; the account's next message restores it.",
        lambda s: queries.supervised_accounts(s, limit=QUEUE_LIMIT),
        "dashboard/_supervision_rows.html",
    ),
}


def signed_in(view: Callable[P, View]) -> Callable[P, View]:
    """Send a signed-out browser to the sign-in page, and back here afterwards."""

    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> View:
        if not has_operator_session():
            return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def signed_in_fragment(view: Callable[P, View]) -> Callable[P, View]:
    """A fragment answers a signed-out script with 401: the script reloads, and the page signs in."""

    @wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> View:
        if not has_operator_session():
            return "signed out", 401
        return view(*args, **kwargs)

    return wrapped


@bp.after_request
def _harden(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"  # alarm data never sits in a browser cache
    return response


@bp.context_processor
def _helpers() -> dict[str, Any]:
    return {
        "clock": display.clock,
        "stamp": display.stamp,
        "duration": display.duration,
        "label": display.label,
        "http_url": display.http_url,
        "sort_refs": display.sort_refs,
        "csrf_token": csrf_token(),
        "csrf_header": CSRF_HEADER,
        "refresh_ms": REFRESH_S * 1000,
        "lists": LISTS.values(),
    }


# -- signing in ------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> View:
    """The operator key form; a right key signs this browser in, a wrong one is refused with 401, and
    while this address is past the limit of wrong keys every try is a 429 (the key is not looked at)."""
    asked = request.values.get("next")
    if asked is not None and any(unicodedata.category(c) == "Cc" for c in asked):
        # A CR or LF would split the redirect's header: refused before anyone is signed in.
        page = render_template(
            "dashboard/login.html", next=_safe_next(None), error="That page address is not valid."
        )
        return page, 400
    target = _safe_next(asked)
    if request.method == "GET":
        if has_operator_session():
            return redirect(target)
        return render_template("dashboard/login.html", next=target, error=None)
    try:
        signed_in = start_operator_session(request.form.get("key", ""))
    except TooManyFailuresError as exc:
        wait = f"Too many wrong keys from this address: try again in {exc.retry_after_s} s."
        page = render_template("dashboard/login.html", next=target, error=wait)
        return page, 429, {"Retry-After": str(exc.retry_after_s)}
    if signed_in:
        return redirect(target)
    return render_template("dashboard/login.html", next=target, error="That operator key is not valid."), 401


@bp.post("/logout")
def logout() -> Response:
    """End this browser's session everywhere (the form carries the CSRF token, like every change)."""
    if is_valid_csrf(request.form.get("csrf")):
        end_operator_session()
    return redirect(url_for("dashboard.login"))


def _safe_next(value: str | None) -> str:
    # Only back into the dashboard: never an open redirect to another host.
    default = url_for("dashboard.show_queue")
    if not value or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(default):
        return default
    return value


# -- the queue and its lists -----------------------------------------------------------------------


@bp.get("/")
@signed_in
def show_queue() -> View:
    """The live queue of open alarms."""
    return _list_page("queue")


@bp.get("/needs-person")
@signed_in
def show_needs_person() -> View:
    """Alarms waiting for a person."""
    return _list_page("needs_person")


@bp.get("/unrouted")
@signed_in
def show_unrouted() -> View:
    """Open alarms that no site claims."""
    return _list_page("unrouted")


@bp.get("/failed")
@signed_in
def show_failed_actions() -> View:
    """The dead-letter view: steps that failed for good."""
    return _list_page("failed")


@bp.get("/supervision")
@signed_in
def show_supervision() -> View:
    """Each supervised account's last contact, deadlines and trouble."""
    return _list_page("supervision")


@bp.get("/queue/rows")
@signed_in_fragment
def show_list_rows() -> View:
    """The table of one list (``?list=queue|needs_person|unrouted|failed|supervision``), for the page's
    script."""
    chosen = LISTS.get(ListRowsQuerySchema().load(request.args.to_dict())["name"])
    if chosen is None:
        return "no such list", 404
    return render_template("dashboard/list_rows.html", **_list_context(chosen))


class ListRowsQuerySchema(ma.Schema):
    """The rows fragment takes the list's name and nothing else: any other parameter (a filter, a
    page, a time its script never sends) is a 422 naming it."""

    class Meta:
        unknown = ma.RAISE

    name = ma.fields.String(data_key="list", load_default="queue")


def _list_page(name: str) -> str:
    return render_template("dashboard/list.html", **_list_context(LISTS[name]))


def _list_context(chosen: AlarmList) -> dict[str, Any]:
    now = utcnow()
    with services().sessions() as session:
        rows = chosen.read(session)
    for row in rows:
        # An alarm's age, a failed step's, or how long a supervised account has been silent.
        since = row.get("opened_at") or row.get("updated_at") or row.get("last_contact_at")
        row["age"] = display.age(since or row.get("supervised_since"), now)
    return {"current": chosen, "rows": rows, "now": now.isoformat(), "limit": QUEUE_LIMIT}


# -- one alarm -------------------------------------------------------------------------------------


@bp.get(f"/alarms/<int(max={LEDGER_ID_MAX}):alarm_id>")
@signed_in
def show_alarm(alarm_id: int) -> View:
    """One alarm: its state, events, every step with its upstream ids and errors, refs, timeline."""
    alarm = _alarm(alarm_id)
    if alarm is None:
        return render_template("dashboard/not_found.html", alarm_id=alarm_id), 404
    return render_template("dashboard/alarm.html", alarm=alarm, outcomes=END_OUTCOMES)


@bp.get(f"/alarms/<int(max={LEDGER_ID_MAX}):alarm_id>/live")
@signed_in_fragment
def show_alarm_parts(alarm_id: int) -> View:
    """The parts of the alarm's page that change, for its script to swap in."""
    alarm = _alarm(alarm_id)
    if alarm is None:
        return "no such alarm", 404
    return render_template("dashboard/alarm_parts.html", alarm=alarm)


def _alarm(alarm_id: int) -> dict[str, Any] | None:
    with services().sessions() as session:
        alarm = queries.alarm_page(session, alarm_id)
    if alarm is not None:
        alarm["age"] = display.age(alarm["opened_at"], utcnow())
    return alarm


# What `POST /v1/alarms/<id>/end` accepts (EndRequestSchema: no outcome, or one of Outcome).
END_OUTCOMES = (
    ("", "automatic"),  # the API's choice: dispatched if a step reached a responder, else cancelled
    *((outcome.value, display.label(outcome.value)) for outcome in Outcome),
)
