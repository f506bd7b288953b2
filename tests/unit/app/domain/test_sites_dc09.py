"""The sites file's dc09 sources (the SIA DC-09 receiver): AES keys from the environment, the timestamp
band, routing by account through exactly one dc09 source, and one line per problem, never a key."""

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from app.domain.sites import Sites, SitesFileError, Source
from app.domain.sites_file import load_sites

pytestmark = pytest.mark.unit

KEY_128 = "00112233445566778899aabbccddeeff"
KEY_192 = "00112233445566778899aabbccddeeff0011223344556677"
KEY_256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
PANELS = {"PANELS_TOKEN": "panels-token-0001-aaaaaaaa"}
ENVIRON = {**PANELS, "DC09_KEYS": f"128a={KEY_128}, 192B={KEY_192},256c={KEY_256}"}

SOURCES = """
[sources.receiver]
kind = "dc09"
encryption_keys_env = "DC09_KEYS"

[sources.panels]
kind = "panel"
token_env = "PANELS_TOKEN"
"""
SITE = """
[sites.{key}]
name = "Site {key}"
sources = {sources}
accounts = {accounts}
timezone = "America/Montreal"
site_type = "COMMERCIAL"
plan = "quiet"
location = {{ address_line1 = "1 Main St" }}
"""
PLANS = """
[plans.quiet]
default = []
"""


def sites_file(tmp_path: Path, *sites: tuple[str, str, str], sources: str = SOURCES, extra: str = "") -> Path:
    """A file with ``sources`` and one site per (key, sources, accounts) as TOML arrays."""
    body = sources + extra + PLANS
    for key, site_sources, accounts in sites:
        body += SITE.format(key=key, sources=site_sources, accounts=accounts)
    path = tmp_path / "sites.toml"
    path.write_text(body, encoding="utf-8")
    return path


def errors_of(path: Path, environ: dict[str, str] = ENVIRON) -> list[str]:
    with pytest.raises(SitesFileError) as caught:
        load_sites(path, environ)
    return [line.split(": ", 1)[1] for line in caught.value.errors]  # without the file name


HQ = ("hq", '["receiver"]', '["128A", "192b", "256C", "0042"]')


def test_a_dc09_source_holds_each_accounts_key_and_the_standard_band_by_default(tmp_path: Path) -> None:
    sites = load_sites(sites_file(tmp_path, HQ), ENVIRON)
    source = sites.source("receiver")
    assert source is not None

    assert source.kind == "dc09"
    assert (source.tokens, source.signing_secrets) == ((), ())
    assert source.encryption_key("128A") == bytes.fromhex(KEY_128)
    assert source.encryption_key("192b") == bytes.fromhex(KEY_192)
    assert len(source.encryption_key("256C") or b"") == 32
    assert source.encryption_key("0042") is None  # its frames come in clear
    assert (source.timestamp_past, source.timestamp_future) == (timedelta(seconds=40), timedelta(seconds=20))
    assert KEY_128 not in repr(source)


def test_a_frame_account_routes_to_its_site_through_its_dc09_source_only(tmp_path: Path) -> None:
    sites = load_sites(
        sites_file(tmp_path, HQ, ("shop", '["panels"]', '["0777"]')),
        ENVIRON,
    )

    route = sites.dc09_route("128a")
    assert route is not None
    source, site = route
    assert (source.key, site.key) == ("receiver", "hq")
    assert sites.site_for_account("receiver", "0042") is site  # intake routes the events the same way
    assert sites.dc09_route("0777") is None  # a panel (HTTP) source's account: not the receiver's
    assert sites.dc09_route("9999") is None


def test_the_band_and_the_ascii_key_format_are_the_sources_to_choose(tmp_path: Path) -> None:
    sources = """
[sources.receiver]
kind = "dc09"
encryption_keys_env = "AJAX_KEYS"
encryption_keys_format = "ascii"
timestamp_band = { past = "2m", future = "30s" }
"""
    path = sites_file(tmp_path, ("hq", '["receiver"]', '["A1B2"]'), sources=sources)
    sites = load_sites(path, {"AJAX_KEYS": "a1b2=AAAAAAAAAAAAAAAABBBBBBBB"})
    source = sites.source("receiver")
    assert source is not None

    assert source.encryption_key("A1B2") == b"AAAAAAAAAAAAAAAABBBBBBBB"  # AES-192, pysiaalarm's form
    assert (source.timestamp_past, source.timestamp_future) == (timedelta(minutes=2), timedelta(seconds=30))


def test_a_dc09_source_needs_no_key_at_all(tmp_path: Path) -> None:
    sources = '\n[sources.receiver]\nkind = "dc09"\n'
    sites = load_sites(sites_file(tmp_path, ("hq", '["receiver"]', '["0042"]'), sources=sources), {})
    route = sites.dc09_route("0042")

    assert route is not None
    assert route[0].encryption_keys == {}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(
            {}, "sources.receiver.encryption_keys_env: environment variable DC09_KEYS is not set", id="unset"
        ),
        pytest.param(
            {"DC09_KEYS": f"128a:{KEY_128}"},
            "sources.receiver.encryption_keys_env: entry 1 in DC09_KEYS is not <account>=<key>",
            id="no-equals",
        ),
        pytest.param(
            {"DC09_KEYS": f"ab-95367={KEY_128}"},
            'sources.receiver.encryption_keys_env: entry 1 in DC09_KEYS: "ab-95367" is not a DC-09 account '
            "(3 to 16 hex digits)",
            id="account",
        ),
        pytest.param(
            {"DC09_KEYS": f"128a={KEY_128[:-2]}"},
            "sources.receiver.encryption_keys_env: the key of account 128a in DC09_KEYS must be 32, 48 or 64 "
            'hex digits for AES-128, -192 or -256 (encryption_keys_format "hex"), not 30 characters',
            id="short-key",
        ),
        pytest.param(
            {"DC09_KEYS": f"128a={'g' * 32}"},
            "sources.receiver.encryption_keys_env: the key of account 128a in DC09_KEYS must be 32, 48 or 64 "
            'hex digits for AES-128, -192 or -256 (encryption_keys_format "hex"), not 32 characters',
            id="not-hex",
        ),
        pytest.param(
            {"DC09_KEYS": f"128a={KEY_128},128A={KEY_256}"},
            "sources.receiver.encryption_keys_env: account 128A has two keys in DC09_KEYS",
            id="twice",
        ),
        pytest.param(
            {"DC09_KEYS": f"128a={KEY_128},beef={KEY_128[::-1]}"},
            "sources.receiver.encryption_keys_env: holds a key for account beef, which no site lists through "
            'source "receiver"',
            id="stray-key",
        ),
    ],
)
def test_each_key_problem_is_one_line_that_never_shows_a_key(
    tmp_path: Path, environ: dict[str, str], expected: str
) -> None:
    errors = errors_of(sites_file(tmp_path, ("hq", '["receiver"]', '["128A"]')), {**PANELS, **environ})

    assert errors == [expected]
    assert not any(KEY_128[:8] in line or KEY_256[:8] in line for line in errors)


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        pytest.param(
            '\n[sources.receiver]\nkind = "dc09"\ntoken_env = "PANELS_TOKEN"\n',
            "sources.receiver.token_env: is not for a dc09 source: DC-09 frames carry no token; give an "
            "account an AES key (encryption_keys_env) to have its frames proven",
            id="token",
        ),
        pytest.param(
            '\n[sources.receiver]\nkind = "panel"\ntoken_env = "PANELS_TOKEN"\n'
            'encryption_keys_env = "DC09_KEYS"\n',
            "sources.receiver.encryption_keys_env: is for a dc09 source (the receiver), not a panel source",
            id="keys-on-a-panel-source",
        ),
        pytest.param(
            '\n[sources.receiver]\nkind = "dc09"\nencryption_keys_format = "base64"\n',
            'sources.receiver.encryption_keys_format: "base64" is not "hex" or "ascii"',
            id="format",
        ),
        pytest.param(
            '\n[sources.receiver]\nkind = "dc09"\nencryption_keys_format = "hex"\n',
            "sources.receiver.encryption_keys_format: is given without encryption_keys_env",
            id="format-alone",
        ),
        pytest.param(
            '\n[sources.receiver]\nkind = "dc09"\ntimestamp_band = { past = "40s", futur = "20s" }\n',
            'sources.receiver.timestamp_band.futur: unknown key (did you mean "future"?)',
            id="band-key",
        ),
        pytest.param(
            '\n[sources.receiver]\nkind = "dc09"\ntimestamp_band = { past = "25h" }\n',
            'sources.receiver.timestamp_band.past: "25h" is longer than the maximum of "24h"',
            id="band-too-wide",
        ),
        pytest.param(
            '\n[sources.receiver]\nkind = "dc09"\ntimestamp_band = "40s"\n',
            'sources.receiver.timestamp_band: must be a table like { past = "40s", future = "20s" }, not a '
            "string",
            id="band-type",
        ),
    ],
)
def test_each_source_problem_names_the_file_table_and_key(
    tmp_path: Path, sources: str, expected: str
) -> None:
    site = ("hq", '["receiver"]', '["0042"]')

    assert expected in errors_of(sites_file(tmp_path, site, sources=sources))


def test_one_account_cannot_belong_to_two_dc09_sources_one_port_cannot_tell_them_apart(
    tmp_path: Path,
) -> None:
    sources = SOURCES + '\n[sources.other-receiver]\nkind = "dc09"\n'
    path = sites_file(tmp_path, HQ, ("annex", '["other-receiver"]', '["0042"]'), sources=sources)

    assert errors_of(path) == [
        'sites.annex.accounts: "0042" is already claimed by site "hq" on dc09 source "receiver"; the '
        "receiver takes every dc09 source's frames on one port, so an account belongs to one of them"
    ]


def test_an_account_a_dc09_frame_cannot_carry_is_refused_unless_a_panel_source_takes_it(
    tmp_path: Path,
) -> None:
    environ = {**PANELS, "DC09_KEYS": f"128a={KEY_128}"}
    dc09_only = sites_file(tmp_path, ("hq", '["receiver"]', '["128a", "ab-95367"]'))
    assert errors_of(dc09_only, environ) == [
        'sites.hq.accounts: "ab-95367" cannot come in a DC-09 frame (an account is 3 to 16 hex digits)'
    ]

    both = sites_file(tmp_path, ("hq", '["receiver", "panels"]', '["128a", "ab-95367"]'))
    assert load_sites(both, environ).site_for_account("panels", "ab-95367") is not None


def test_a_site_of_a_dc09_source_needs_accounts(tmp_path: Path) -> None:
    sources = '\n[sources.receiver]\nkind = "dc09"\n'
    path = sites_file(tmp_path, ("hq", '["receiver"]', "[]"), sources=sources)

    assert errors_of(path, {}) == [
        'sites.hq.accounts: is empty, so dc09 source "receiver" cannot post for this site'
    ]


def test_a_directory_built_in_code_refuses_an_account_on_two_dc09_sources(tmp_path: Path) -> None:
    site = load_sites(sites_file(tmp_path, HQ), ENVIRON).site("hq")
    assert site is not None

    with pytest.raises(ValueError, match="account '0042' is claimed through dc09 sources 'a' and 'b'"):
        Sites(
            sources=[Source("a", "dc09"), Source("b", "dc09")],
            sites=[replace(site, sources=("a",)), replace(site, key="annex", sources=("b",))],
        )


def test_two_dc09_accounts_cannot_share_a_key_one_line_names_both(tmp_path: Path) -> None:
    """A frame's header account is in clear: with one key for two accounts, a frame captured from one
    (an alarm, a disarm, a link test keeping a dead panel's link green) is re-addressed to the other."""
    sources = SOURCES + '\n[sources.other-receiver]\nkind = "dc09"\nencryption_keys_env = "OTHER_KEYS"\n'
    path = sites_file(
        tmp_path,
        ("hq", '["receiver"]', '["128A", "5678"]'),
        ("annex", '["other-receiver"]', '["9ABC"]'),
        sources=sources,
    )
    environ = {**PANELS, "DC09_KEYS": f"128a={KEY_128},5678={KEY_128}", "OTHER_KEYS": f"9abc={KEY_128}"}

    errors = errors_of(path, environ)

    assert errors == [
        f"sources.{source}.encryption_keys_env: the key of account {account} is also account 128a's "
        '(source "receiver"): each account needs a key of its own, or a frame of one could pass as '
        "the other's"
        for source, account in (("receiver", "5678"), ("other-receiver", "9abc"))
    ]
    assert not any(KEY_128 in line for line in errors)


def test_a_directory_built_in_code_refuses_two_dc09_accounts_sharing_a_key(tmp_path: Path) -> None:
    sites = load_sites(sites_file(tmp_path, HQ), ENVIRON)
    source, site = sites.source("receiver"), sites.site("hq")
    assert source is not None and site is not None
    key = bytes.fromhex(KEY_128)

    with pytest.raises(ValueError, match="dc09 accounts '128a' and '0042' share a key"):
        Sites(sources=[replace(source, encryption_keys={"128a": key, "0042": key})], sites=[site])
