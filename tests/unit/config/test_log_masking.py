"""A credential in a log line's text is masked whole, whatever printable characters it holds.

The mask used to stop at a quote, ``&`` or ``;`` inside a token: ``token=abcd"efgh-SECRET`` logged
``token=***"efgh-SECRET`` (issue 16, finding 8).
"""

from __future__ import annotations

import json
import string

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from config.logging import REDACTED, configure_logging, redact_secrets
from config.settings import Settings

pytestmark = pytest.mark.unit

# Every printable ASCII character but the space: what a token, key or password can be made of.
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
COOKIE_VALUE = st.text(alphabet=sorted(set(string.printable[:94]) - {";"}), min_size=1, max_size=40)
ODD_TOKENS = ['abcd"efgh-SECRET', "abcd'efgh-SECRET", "ab&cd=SECRET", 'x";DROP-SECRET', "\\'\"&;=SECRET"]


def _masked(text: str) -> str:
    return str(redact_secrets(None, "", {"event": text})["event"])


@given(PRINTABLE)
def test_a_token_parameter_is_masked_whole(token: str) -> None:
    assert _masked(f"intake refused /v1/events?token={token} (401)") == (
        f"intake refused /v1/events?token={REDACTED} (401)"
    )
    assert _masked(f"login with password={token} failed") == f"login with password={REDACTED} failed"


@given(PRINTABLE)
def test_a_bearer_or_basic_credential_is_masked_whole(token: str) -> None:
    for scheme in ("Bearer", "Basic"):
        assert _masked(f"sent Authorization: {scheme} {token} to tracktik") == (
            f"sent Authorization: {scheme} {REDACTED} to tracktik"
        )


@given(COOKIE_VALUE)
def test_the_alta_cookie_is_masked_up_to_its_end(value: str) -> None:
    assert _masked(f"Cookie: va={value}; Path=/") == f"Cookie: va={REDACTED}; Path=/"


@pytest.mark.parametrize("token", ODD_TOKENS)
def test_odd_tokens_never_reach_a_json_log_line(capsys: pytest.CaptureFixture[str], token: str) -> None:
    configure_logging(Settings(log_format="json"))
    log = structlog.get_logger("test")
    log.warning("intake.rejected", url=f"/v1/webhooks/alta?token={token}", detail=f"Bearer {token}")
    log.warning(f"retrying with token={token} and Bearer {token}")
    err = capsys.readouterr().err
    assert "SECRET" not in err
    lines = [json.loads(line) for line in err.splitlines()]
    assert lines[0]["url"] == f"/v1/webhooks/alta?token={REDACTED}"
    assert lines[1]["event"] == f"retrying with token={REDACTED} and Bearer {REDACTED}"
