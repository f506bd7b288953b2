"""TrackTikClient: raise an alarm in TrackTik (which creates its Dispatch Task) and find it again
(seed 000; CONTRACTS Part A items 6-9, Part B §2).

TrackTik has no idempotency key and generates the alarm's ``customId`` itself, so the client marks
its own alarms: the first note of every alarm it creates is ``alarm-bridge ref <key>``
(``ref_note``). After an unknown outcome the caller looks for that note with ``find_alarm_by_ref``
before creating again. The token pair lives in Redis, shared by all workers
(``credentials.SharedCredential``, issued by ``tokens.TrackTikGrants``); a 401 renews it
and sends the call once more (``BaseClient._authorized``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final, Self

import redis
import requests

from config.settings import Settings
from vendors.tracktik.alarms import (
    AlarmAttachment,
    AlarmDetail,
    AlarmNote,
    CreatedAlarm,
    TrackTikAlarm,
    TrackTikAttachment,
    TrackTikLocation,
    alarm_detail,
    alarm_notes,
    created_alarm,
    format_time,
    ref_note,
    unwrap,
)
from vendors.tracktik.settings import TrackTikSettings
from vendors.tracktik.tokens import PasswordCredentials, TrackTikGrants
from workers.clients import VendorClient
from workers.clients.base import BaseClient, RequestOptions, timeouts
from workers.clients.cache import cache_key
from workers.clients.credentials import SharedCredential

TOKEN_PATH = "/rest/oauth2/access_token"  # noqa: S105  # a path, not a secret
ALARMS_PATH = "/rest/v1/alarms"
# The list's page size (TrackTik: default 100, max 1000) and how many pages a search reads at most:
# alarms of one organization triggered at the same second are few; this only bounds a runaway loop.
PAGE_SIZE = 100
MAX_PAGES = 20


class TrackTikClient(BaseClient):
    """TrackTik's REST API as the bridge uses it: create an alarm, read it, find ours again."""

    upstream = "tracktik"
    default_headers = {"Accept": "application/json"}

    def __init__(
        self,
        base_url: str,
        timeout: tuple[float, float],
        cache: redis.Redis,
        token_key: str,
        credentials: PasswordCredentials,
        session: requests.Session | None = None,
        create_read_timeout_s: float | None = None,
    ) -> None:
        super().__init__(base_url, timeout, session)
        self.create_read_timeout_s = create_read_timeout_s or timeout[1]
        grants = TrackTikGrants(cache, token_key + ":refused", credentials, self._grant)
        # The lock outlives two token calls (refresh, then password) even at their full timeouts.
        self.tokens = SharedCredential(
            self.upstream,
            "token",
            cache,
            token_key,
            grants,
            with_refresh=True,
            lock_timeout_s=2 * sum(timeout) + 5.0,
        )
        self.credential = self.tokens

    @classmethod
    def from_settings(
        cls, settings: Settings, cache: redis.Redis, *, session: requests.Session | None = None
    ) -> Self:
        """The client for this deployment; `cache` is the shared Redis (tokens, cookies, budgets)."""
        tracktik = settings.vendor(TrackTikSettings)
        return cls(
            tracktik.base_url,
            timeouts(settings),
            cache,
            cache_key(settings, "tracktik", "token"),
            PasswordCredentials(
                client_id=tracktik.client_id,
                client_secret=tracktik.client_secret,
                username=tracktik.username,
                password=tracktik.password,
            ),
            session,
            tracktik.create_read_timeout_s,
        )

    def create_alarm(self, alarm: TrackTikAlarm) -> CreatedAlarm:
        """Create an alarm and its Dispatch Task (seed 000 "Creating an Alarm"; Part A item 7).

        Not idempotent at TrackTik: a lost answer raises OutcomeUnknownError and the caller must
        search with ``find_alarm_by_ref`` before trying again.

        Raises:
            OutcomeUnknownError: the request was sent and no (readable) answer came back.
            UpstreamUnavailableError: 5xx, 429, connect failure, token endpoint unavailable.
            UpstreamRejectedError: 4xx (422 names the bad fields), or the credentials were refused.
        """
        response = self._authorized("POST", ALARMS_PATH, json=alarm.to_json())
        # TrackTik answered 2xx, so the alarm probably exists: an unreadable answer is reconciled.
        return self._decode(response, lambda body: created_alarm(unwrap(body)), creates=True)

    def _read_timeout_s(self, method: str, path: str) -> float:
        """An alarm's create waits for TrackTik's own answer (its 504 comes after 30 s): one given up
        sooner may still make its alarm after the search that looks for it (CONTRACTS Part B §2.2)."""
        if method == "POST" and path == ALARMS_PATH:
            return max(self.timeout[1], self.create_read_timeout_s)
        return self.timeout[1]

    def find_alarm_by_ref(self, organization: int, triggered_on: datetime, ref: str) -> CreatedAlarm | None:
        """Our alarm created with ``ref`` (its first note), or None (Part A item 8).

        Lists ``GET /alarms?alarmOrganization=&triggeredOn=&include=notes`` (exact-match filters) and
        adopts the alarm one of whose notes is ``ref_note(ref)``. ``triggered_on`` must be the time
        sent on the create (it is formatted the same way).

        Raises:
            UpstreamUnavailableError: 5xx, 429, timeout, token endpoint unavailable.
            UpstreamRejectedError: 4xx, the credentials were refused, or an unreadable list.
        """
        wanted = ref_note(ref)
        offset = 0
        for _ in range(MAX_PAGES):
            response = self._authorized(
                "GET",
                ALARMS_PATH,
                params={
                    "alarmOrganization": str(organization),
                    "triggeredOn": format_time(triggered_on),
                    "include": "notes",
                    "limit": str(PAGE_SIZE),
                    "offset": str(offset),
                },
            )
            count, found = self._decode(response, lambda body: _search_page(body, wanted))
            if found is not None:
                return found
            offset += count
            if count < PAGE_SIZE:
                return None
        return None

    def get_alarm(self, alarm_id: int, include: Iterable[str] = ("notes", "attachments")) -> AlarmDetail:
        """One alarm with its relations (seed 000 ``GET /alarms/22?include=notes,attachments``).

        Raises:
            UpstreamUnavailableError: 5xx, 429, timeout, token endpoint unavailable.
            UpstreamRejectedError: 404 for an unknown id, other 4xx, the credentials were refused, or
                an unreadable alarm.
        """
        relations = ",".join(include)
        options: RequestOptions = {"params": {"include": relations}} if relations else {}
        response = self._authorized("GET", f"{ALARMS_PATH}/{int(alarm_id)}", **options)
        return self._decode(response, lambda body: alarm_detail(unwrap(body)))

    def _grant(self, fields: Mapping[str, str]) -> Mapping[str, object]:
        """One call to the token endpoint (form-encoded, Part A item 6).

        Marked idempotent: a lost answer only means "no token yet" — it must never flag the
        action's create as outcome-unknown.
        """
        response = self._request("POST", TOKEN_PATH, idempotent=True, data=dict(fields))
        return self._decode(response, _token_answer)


def _token_answer(body: object) -> Mapping[str, object]:
    if not isinstance(body, Mapping) or not isinstance(body.get("access_token"), str):
        raise ValueError("token answer has no access_token")
    if not body["access_token"]:
        raise ValueError("token answer has no access_token")
    return body


def _search_page(body: object, wanted: str) -> tuple[int, CreatedAlarm | None]:
    """How many alarms one page of the list holds, and ours among them (the one with the ``wanted``
    note). Raises TypeError when the body is neither a list nor ``{"data": [...]}``."""
    page = body.get("data") if isinstance(body, Mapping) else body
    if not isinstance(page, list):
        raise TypeError("alarm list without a data array")
    for item in page:
        if isinstance(item, Mapping) and any(note.comment == wanted for note in alarm_notes(item)):
            return len(page), created_alarm(item)
    return len(page), None


__all__ = [
    "ALARMS_PATH",
    "TOKEN_PATH",
    "AlarmAttachment",
    "AlarmDetail",
    "AlarmNote",
    "CreatedAlarm",
    "TrackTikAlarm",
    "TrackTikAttachment",
    "TrackTikClient",
    "TrackTikLocation",
    "format_time",
    "ref_note",
]


# The registry finds each vendor's client under this name (workers.clients.Clients).
CLIENT: Final[VendorClient] = TrackTikClient
