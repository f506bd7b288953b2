"""HTTP to a running bridge, for the commands that talk to its API (``send-test-event``, ``alarms show``).

Every call has a timeout, redirects are not followed (a POST silently turned into a GET would hide the
real answer), and a loopback address is never sent through a proxy from the environment. Nothing else
is taken from the environment either (no ``.netrc`` credentials in place of the key given, no CA
bundle variables), so the call is exactly the one the command describes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

import click

HTTP_TIMEOUT_S = 10.0
USER_AGENT = "alarm-bridge-cli"
BODY_EXCERPT_CHARS = 500


@dataclass(frozen=True, slots=True)
class Answer:
    """What the bridge answered: status, reason, and the body as JSON (or as text if not JSON)."""

    status: int
    reason: str
    body: object
    is_json: bool

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def shown(self) -> str:
        """The body for the terminal: indented JSON, or the start of the text."""
        if self.is_json:
            return json.dumps(self.body, indent=2, ensure_ascii=False)
        text = str(self.body)
        return text if len(text) <= BODY_EXCERPT_CHARS else text[:BODY_EXCERPT_CHARS] + "…"

    def problem(self) -> str:
        """One line: the status and the bridge's own error and message, when it sent them."""
        if self.is_json and isinstance(self.body, dict) and "error" in self.body:
            return f"{self.status} {self.body['error']}: {self.body.get('message', '')}".rstrip(": ")
        return f"{self.status} {self.reason}".rstrip()


def base_url(url: str | None) -> str:
    """``--url``, or the bridge on this machine at PORT."""
    if url is None:
        from config.settings import load_settings

        return f"http://127.0.0.1:{load_settings().port}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--url")
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (a host name is not resolved)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def request(method: str, url: str, *, headers: Mapping[str, str], data: bytes | None = None) -> Answer:
    """One HTTP call; a ClickException with one readable line when no answer comes."""
    import requests  # only the commands that call the bridge load it, not `receiver` or `dev`
    import requests.utils

    host = urllib.parse.urlsplit(url).hostname or ""
    proxies = {} if is_loopback(host) else requests.utils.get_environ_proxies(url)
    with requests.Session() as session:
        session.trust_env = False  # proxies are chosen above; nothing else comes from the environment
        try:
            response = session.request(
                method,
                url,
                data=data,
                headers={"User-Agent": USER_AGENT, **headers},
                proxies=proxies,
                timeout=HTTP_TIMEOUT_S,
                allow_redirects=False,  # the 3xx is answered as it is
            )
        except requests.RequestException as exc:  # refused, timeouts, resets, garbled answers
            raise click.ClickException(f"cannot reach {url}: {_root_cause(exc)}") from None
    return _answer(response.status_code, response.reason or "", response.content)


def _root_cause(exc: BaseException) -> str:
    """The socket-level reason under requests' and urllib3's wrappers (``[Errno 111] Connection
    refused``, ``timed out``): the line a person can act on, without the connection pool's repr."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return str(exc) or type(exc).__name__


def _answer(status: int, reason: str, raw: bytes) -> Answer:
    with contextlib.suppress(ValueError):  # an unlisted status keeps the server's own reason
        reason = HTTPStatus(status).phrase  # servers differ in case ("ACCEPTED", "Accepted")
    text = raw.decode("utf-8", "replace")
    try:
        return Answer(status, reason, json.loads(text), True)
    except ValueError:
        return Answer(status, reason, text, False)
