"""AltaClient: Avigilon Alta Video (Alta Protect) — login cookie, ongoing alert by zone, bookmarks and
guest links, verification, end (seed 002; CONTRACTS Part A items 1-5, Part B §1).

Alta authenticates with a session cookie ``va`` from ``POST /api/v1/dologin``. Every worker process
shares one cookie through Redis (``cache_key(settings, "alta", "cookie")``, a
``credentials.SharedCredential``) so that a fleet of workers does not log in once per process or per
call; the Redis entry expires a minute before the cookie does. A 401 means the cookie expired or was
revoked: the client logs in again once and retries once; a second 401 is a real refusal
(``BaseClient._authorized``).

Nothing the bridge sends to Alta creates anything: verify sets a status and end is idempotent
(Part A item 4), so both are sent as idempotent calls — a lost answer is "unavailable, try again",
never "outcome unknown".
"""

from __future__ import annotations

import time
from typing import Final, Self
from urllib.parse import quote

import redis
import requests

from app.domain.site_tables import normalise
from config.settings import Settings
from vendors.alta.models import (
    ACKNOWLEDGMENT_CODES,
    Bookmark,
    EndResult,
    OngoingAlert,
    parse_alerts,
    parse_bookmarks,
)
from vendors.alta.settings import AltaSettings
from workers.clients import VendorClient
from workers.clients.base import BaseClient, timeouts
from workers.clients.cache import cache_key
from workers.clients.credentials import Issued, SharedCredential
from workers.clients.errors import UpstreamRejectedError

__all__ = ["AltaClient", "Bookmark", "EndResult", "OngoingAlert"]

COOKIE_NAME = "va"
# Kept in Redis this long before the cookie's own expiry, so a cached cookie is never a dead one.
COOKIE_MARGIN_S = 60.0
# When Alta sends no Expires/Max-Age: below the 3600 s lifetime of Part A item 1.
DEFAULT_COOKIE_CACHE_S = 3000.0


class AltaClient(BaseClient):
    """The Alta Video API of one deployment, logged in as one API user."""

    upstream = "alta"

    def __init__(
        self,
        base_url: str,
        timeout: tuple[float, float],
        *,
        username: str,
        password: str,
        cache: redis.Redis,
        cookie_key: str,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(base_url, timeout, session)
        self._username = username
        self._password = password
        self.credential = SharedCredential(
            self.upstream, "cookie", cache, cookie_key, self._login, header=_cookie_header
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, cache: redis.Redis, *, session: requests.Session | None = None
    ) -> Self:
        """The client for this deployment; `cache` is the shared Redis that holds the login cookie."""
        alta = settings.vendor(AltaSettings)
        return cls(
            alta.base_url,
            timeouts(settings),
            username=alta.username,
            password=alta.password,
            cache=cache,
            cookie_key=cache_key(settings, "alta", "cookie"),
            session=session,
        )

    # --- API ---------------------------------------------------------------------------------------

    def ongoing_alerts(self) -> list[OngoingAlert]:
        """Every ongoing alert, oldest first as Alta lists them (seed 002; Part A item 2).

        Raises:
            UpstreamUnavailableError: Alta unreachable, 5xx or 429.
            UpstreamRejectedError: login refused, another 4xx, or a body that is not a list of alerts.
        """
        response = self._authorized("GET", "/api/v1/ongoingAlerts")
        return self._decode(response, parse_alerts)

    def find_ongoing_alert(self, alarm_zone_id: str) -> OngoingAlert | None:
        """The newest ongoing alert of an alarm zone, or None while Alta does not list one.

        Seed 002: "Find the alarm guid by matching the alarm_zone_id in the response with the
        $alarmZoneId in the webhook payload." Alta may list an alert only after its webhook fired
        (Part A item 2), so None is normal for the first seconds. Newest = latest ``start_time``; an
        alert without one counts by its position (Alta lists oldest first).

        Raises:
            UpstreamUnavailableError: Alta unreachable, 5xx or 429.
            UpstreamRejectedError: login refused, another 4xx, or an unreadable body.
        """
        matches = [
            (alert.start_time_ms if alert.start_time_ms is not None else -1, position, alert)
            for position, alert in enumerate(self.alerts_of_zone(alarm_zone_id))
        ]
        return max(matches, key=lambda match: (match[0], match[1]))[2] if matches else None

    def alerts_of_zone(self, alarm_zone_id: str) -> list[OngoingAlert]:
        """Every ongoing alert of an alarm zone, as Alta lists them (oldest first).

        The zone id is compared as routing compares it (any case, no surrounding spaces): a sites
        file that spells it ``AZ-5D1C`` routes Alta's ``az-5d1c``, so its alert must be found too.
        """
        wanted = normalise(str(alarm_zone_id))
        return [alert for alert in self.ongoing_alerts() if normalise(alert.alarm_zone_id) == wanted]

    def bookmarks(self, guid: str) -> list[Bookmark]:
        """The alert's bookmarks that exist so far (seed 002 "View alarm video using a shared link").

        Bookmarks may appear some time after the alert (Part A item 3); an empty list is normal early.

        Raises:
            UpstreamUnavailableError: Alta unreachable, 5xx or 429.
            UpstreamRejectedError: 403 (the API user lacks "Share video"), 404 (unknown guid), another
                4xx, or an unreadable body.
        """
        response = self._authorized("GET", f"/api/v1/alerts/{_segment(guid)}/bookmarks")
        return self._decode(response, parse_bookmarks)

    def guest_link(self, guest_token: str) -> str:
        """The shareable video link of a bookmark: ``{ALTA_BASE_URL}/cloud?t={guest_token}`` (seed 002)."""
        return f"{self.base_url}/cloud?t={quote(guest_token, safe='')}"

    def verify(
        self, guid: str, acknowledgment_code: int, merged: bool, origin_name: str
    ) -> OngoingAlert | None:
        """Set the alert's verification: 101 none, 201 valid, 202 false (seed 002; Part A item 4).

        202 also ends the alert in Alta. Setting a status twice has the effect of setting it once, so
        the call is idempotent: a lost answer is retried, not reconciled. Returns the alert Alta
        answers with (None if the 200 body is not an alert).

        Raises:
            ValueError: a code other than 101, 201, 202 (a bug of the caller; nothing is sent).
            UpstreamUnavailableError: Alta unreachable, 5xx, 429, or no answer.
            UpstreamRejectedError: 404 (unknown guid), 400 (body refused), another 4xx.
        """
        if acknowledgment_code not in ACKNOWLEDGMENT_CODES:
            raise ValueError(f"acknowledgment_code must be one of 101, 201, 202, not {acknowledgment_code!r}")
        body = {
            "acknowledgment_code": acknowledgment_code,
            "guid": guid,
            "merged": merged,
            "origin_name": origin_name,
        }
        response = self._authorized("POST", f"/api/v1/alerts/{_segment(guid)}", idempotent=True, json=body)
        return self._decode(response, OngoingAlert.from_json, optional=True)

    def end(self, guid: str) -> EndResult:
        """End the alert (seed 002 "End an ongoing alarm"; Part A item 4).

        Ending an ended alert answers 200 again, so the call is idempotent. A 404 (Alta does not know
        the guid) is not an error here: there is nothing left to end, so ``known`` is False.

        Raises:
            UpstreamUnavailableError: Alta unreachable, 5xx, 429, or no answer.
            UpstreamRejectedError: a 4xx other than 404.
        """
        response = self._authorized(
            "POST", f"/api/v1/alerts/{_segment(guid)}/end", idempotent=True, expected=(404,)
        )
        if response.status_code == 404:
            return EndResult(guid=guid, known=False)
        alert = self._decode(response, OngoingAlert.from_json, optional=True)
        return EndResult(guid=guid, known=True, alert=alert)

    # --- session -----------------------------------------------------------------------------------

    def _login(self, previous: Issued | None) -> Issued:
        """``POST /api/v1/dologin``: a new ``va`` cookie, kept in Redis a minute less than it lives.

        Logging in twice is harmless (a new login leaves older cookies valid), so the call is
        idempotent and two workers racing to log in need no shared lock.

        Success is 200 (Part A item 1), but a host may answer the login with a 302 that sets the
        cookie (Part B §1.2: one client reads it with ``redirect: 'manual'``). So the redirect is not
        followed: its target would answer without the cookie, and following it would send the
        credentials on to wherever it points. The cookie on the login's own answer is what counts.

        Raises:
            UpstreamUnavailableError: Alta unreachable, 5xx or 429.
            UpstreamRejectedError: 401 wrong credentials (permanent: never retried in a loop), another
                4xx, or an answer (200, 302...) without the cookie.
        """
        response = self._request(
            "POST",
            "/api/v1/dologin",
            idempotent=True,
            allow_redirects=False,
            json={"username": self._username, "password": self._password},
        )
        jar = response.cookies
        # The shared Redis entry is the only copy: the session's own jar would be per process.
        self.session.cookies.clear()
        value = jar.get(COOKIE_NAME)
        if not value:
            detail = "login answered without a va cookie"
            if response.is_redirect:
                detail += " (a redirect not followed: is ALTA_BASE_URL the deployment's own host?)"
            raise UpstreamRejectedError(self.upstream, response.status_code, detail)
        expires = next((c.expires for c in jar if c.name == COOKIE_NAME and c.expires), None)
        keep_s = DEFAULT_COOKIE_CACHE_S if expires is None else float(expires) - time.time() - COOKIE_MARGIN_S
        return Issued(str(value), keep_s=keep_s)


def _cookie_header(cookie: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE_NAME}={cookie}"}


def _segment(value: str) -> str:
    """A guid as one path segment (it comes from Alta, but a stray '/' must not change the path)."""
    return quote(str(value), safe="")


# The registry finds each vendor's client under this name (workers.clients.Clients).
CLIENT: Final[VendorClient] = AltaClient
