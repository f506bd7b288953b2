"""``alarm-bridge dev`` (and ``db upgrade``) print URLs with their credentials masked (issue 16)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cli.credentials import display_url, shown_credential
from cli.dev import DEV_OPERATOR_KEY

pytestmark = pytest.mark.unit
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis.example:6379/0", "redis://***@redis.example:6379/0"),
        ("rediss://default:s3cret@redis.example:6380", "rediss://default:***@redis.example:6380"),
        ("redis://h:p@ss/w?rd#x@redis.example:6379/1", "redis://h:***@redis.example:6379/1"),
        ("redis://s3cret@redis.example", "redis://***@redis.example"),
        ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
        (
            "postgresql+psycopg://alarm:s3cret@db/ledger?sslpassword=s3cret&sslmode=require",
            "postgresql+psycopg://alarm:***@db/ledger?sslpassword=***&sslmode=require",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:///var/ledger.sqlite3", "sqlite:///var/ledger.sqlite3"),
    ],
)
def test_credentials_in_a_url_are_masked(url: str, shown: str) -> None:
    assert display_url(url) == shown


@given(password=PRINTABLE)
def test_any_printable_password_is_masked(password: str) -> None:
    assert display_url(f"redis://default:{password}@redis.example:6379/0") == (
        "redis://default:***@redis.example:6379/0"
    )
    assert display_url(f"redis://:{password}@redis.example:6379/0") == "redis://***@redis.example:6379/0"


def test_dev_prints_only_the_demo_credentials_never_ones_someone_set() -> None:
    assert shown_credential("OPERATOR_API_KEYS", DEV_OPERATOR_KEY, DEV_OPERATOR_KEY) == DEV_OPERATOR_KEY
    shown = shown_credential("OPERATOR_API_KEYS", "prod-key-0123456789abcdef", DEV_OPERATOR_KEY)
    assert "prod-key" not in shown and "OPERATOR_API_KEYS" in shown
