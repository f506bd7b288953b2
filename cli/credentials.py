"""What the CLI prints of a credential: URLs with their passwords masked, and only the built-in demo
keys of ``dev`` ever in clear (a key someone set stays out of terminals and their scrollback)."""

from __future__ import annotations

import re

# The user part of a URL shown beside a masked password; anything else in front of the `@` is masked.
_URL_USER = re.compile(r"[A-Za-z0-9._~%+-]+")
_SECRET_URL_PARAM = re.compile(
    r"([?&;][^=&#;]*(?:pass|secret|token|key|auth|credential)[^=&#;]*=)[^&]*", re.IGNORECASE
)


def display_url(url: str) -> str:
    """The URL with its credentials masked, for printing: everything before the last ``@`` after the
    scheme (a password holding ``@``, ``/`` or ``?`` included; a plain user name is kept) and the value
    of any query parameter named like a secret (``?password=`` of a ``unix://`` Redis URL)."""
    scheme, sep, rest = url.partition("://")
    if sep:
        userinfo, at, host = rest.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            shown = f"{user}:" if colon and _URL_USER.fullmatch(user) else ""
            rest = f"{shown}***@{host}"
        url = f"{scheme}{sep}{rest}"
    return _SECRET_URL_PARAM.sub(r"\g<1>***", url)


def shown_credential(variable: str, value: str, demo: str) -> str:
    """What `dev` prints for a credential: the built-in demo value, never one someone set."""
    return value if value == demo else f"yours, from {variable} (not printed)"
