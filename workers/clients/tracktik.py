"""TrackTikClient: raise an alarm in TrackTik (which creates its Dispatch Task) and find it again
(seed 000; CONTRACTS Part A items 6-9, Part B §2).

TrackTik has no idempotency key and generates the alarm's ``customId`` itself, so the client marks
its own alarms: the first note of every alarm it creates is ``alarm-bridge ref <key>``
(``ref_note``). After an unknown outcome the caller looks for that note with ``find_alarm_by_ref``
before creating again. Tokens live in Redis, shared by all workers (``tracktik_tokens``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import redis
import requests

from config.settings import Settings
from workers.clients.base import BaseClient
from workers.clients.cache import cache_key
from workers.clients.errors import OutcomeUnknownError, UpstreamUnavailableError
from workers.clients.tracktik_alarms import (
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
from workers.clients.tracktik_tokens import PasswordCredentials, TokenCache

TOKEN_PATH = "/rest/oauth2/access_token"  # noqa: S105  # a path, not a secret
ALARMS_PATH = "/rest/v1/alarms"
# The list's page size (TrackTik: default 100, max 1000) and how many pages a search reads at most:
# alarms of one organization triggered at the same second are few; this only bounds a runaway loop.
PAGE_SIZE = 100
MAX_PAGES = 20


class TrackTikClient(BaseClient):
    """TrackTik's REST API as the bridge uses it: create an alarm, read it, find ours again."""

    upstream = "tracktik"

    def __init__(
        self,
        base_url: str,
        timeout: tuple[float, float],
        cache: redis.Redis[Any],
        token_key: str,
        credentials: PasswordCredentials,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(base_url, timeout, session)
        self.tokens = TokenCache(
            cache,
            token_key,
            credentials,
            self._grant,
            lock_timeout_s=2 * sum(timeout) + 5.0,
        )

    @classmethod
    def from_settings(cls, settings: Settings, cache: redis.Redis[Any]) -> TrackTikClient:
        """The client for this deployment; `cache` is the shared Redis (tokens, cookies, budgets)."""

        return cls(
            settings.tracktik_base_url,
            (settings.http_connect_timeout_s, settings.http_read_timeout_s),
            cache,
            cache_key(settings, "tracktik", "token"),
            PasswordCredentials(
                client_id=settings.tracktik_client_id,
                client_secret=settings.tracktik_client_secret,
                username=settings.tracktik_username,
                password=settings.tracktik_password,
            ),
        )

    def create_alarm(self, alarm: TrackTikAlarm) -> CreatedAlarm:
        """Create an alarm and its Dispatch Task (seed 000 "Creating an Alarm"; Part A item 7).

        Not idempotent at TrackTik: a lost answer raises OutcomeUnknownError and the caller must
        search with ``find_alarm_by_ref`` before trying again.

        Raises:
            OutcomeUnknownError: the request was sent and no readable answer came back.
            UpstreamUnavailableError: 5xx, 429, connect failure, token endpoint unavailable.
            UpstreamRejectedError: 4xx (422 names the bad fields), or the credentials were refused.
        """
        response = self._api("POST", ALARMS_PATH, json=alarm.to_json())
        try:
            return created_alarm(unwrap(response.json()))
        except (ValueError, KeyError, TypeError) as exc:
            # TrackTik answered 2xx, so the alarm probably exists: reconcile rather than retry blind.
            raise OutcomeUnknownError(
                self.upstream, f"unreadable create answer: {type(exc).__name__}"
            ) from exc

    def find_alarm_by_ref(self, organization: int, triggered_on: datetime, ref: str) -> CreatedAlarm | None:
        """Our alarm created with ``ref`` (its first note), or None (Part A item 8).

        Lists ``GET /alarms?alarmOrganization=&triggeredOn=&include=notes`` (exact-match filters) and
        adopts the alarm one of whose notes is ``ref_note(ref)``. ``triggered_on`` must be the time
        sent on the create (it is formatted the same way).

        Raises:
            UpstreamUnavailableError: 5xx, 429, timeout, token endpoint unavailable.
            UpstreamRejectedError: 4xx, or the credentials were refused.
        """
        wanted = ref_note(ref)
        offset = 0
        for _ in range(MAX_PAGES):
            response = self._api(
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
            body = _json(self.upstream, response)
            page = body.get("data") if isinstance(body, Mapping) else body
            if not isinstance(page, list):
                raise UpstreamUnavailableError(self.upstream, "alarm list without a data array")
            for item in page:
                if isinstance(item, Mapping) and any(note.comment == wanted for note in alarm_notes(item)):
                    return created_alarm(item)
            offset += len(page)
            if len(page) < PAGE_SIZE:
                return None
        return None

    def get_alarm(self, alarm_id: int, include: Iterable[str] = ("notes", "attachments")) -> AlarmDetail:
        """One alarm with its relations (seed 000 ``GET /alarms/22?include=notes,attachments``).

        Raises:
            UpstreamUnavailableError: 5xx, 429, timeout, token endpoint unavailable.
            UpstreamRejectedError: 404 for an unknown id, other 4xx, or the credentials were refused.
        """
        relations = ",".join(include)
        params = {"include": relations} if relations else None
        response = self._api("GET", f"{ALARMS_PATH}/{int(alarm_id)}", params=params)
        try:
            return alarm_detail(unwrap(_json(self.upstream, response)))
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamUnavailableError(self.upstream, "unreadable alarm") from exc

    def _api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A ``/rest/v1`` call with the shared bearer token; one renewal and retry on a 401.

        A 401 means TrackTik refused the token before looking at the request, so repeating a POST
        after it cannot create twice.
        """
        token = self.tokens.access_token()
        response = self._request(method, path, expected=(401,), headers=_auth(token), **kwargs)
        if response.status_code != 401:
            return response
        token = self.tokens.renew(stale=token)
        return self._request(method, path, headers=_auth(token), **kwargs)

    def _grant(self, fields: Mapping[str, str]) -> Mapping[str, Any]:
        """One call to the token endpoint (form-encoded, Part A item 6).

        Marked idempotent: a lost answer only means "no token yet" — it must never flag the
        action's create as outcome-unknown.
        """
        response = self._request(
            "POST", TOKEN_PATH, idempotent=True, data=dict(fields), headers={"Accept": "application/json"}
        )
        body = _json(self.upstream, response)
        if not isinstance(body, Mapping):
            raise UpstreamUnavailableError(self.upstream, "token endpoint answered without a JSON object")
        return body


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def _json(upstream: str, response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamUnavailableError(upstream, f"HTTP {response.status_code}: body is not JSON") from exc


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
