"""The sites file's supervision keys: link_supervision, test_interval and test_grace on a site or a
source, the site's values winning check by check, and a one-line error for every wrong value."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from app.domain.sites import DEFAULT_TEST_GRACE, SitesFileError
from app.domain.sites_file import load_sites
from tests.sites_fixture import EXAMPLE_SITES, SOURCE_ENV

ENVIRON = {"PANELS_TOKEN": "panels-token-0001-aaaaaaaaaaaa", "ALTA_TOKEN": "alta-token-0001-cccccccccccc"}
BASE = """
[sources.panels]
kind = "panel"
token_env = "PANELS_TOKEN"

[sources.alta]
kind = "alta"
token_env = "ALTA_TOKEN"

[sites.hq]
name = "HQ"
sources = ["panels", "alta"]
accounts = ["ab-95367", "AB-2"]
alta_zones = ["az-5d1c"]
timezone = "America/Montreal"
site_type = "COMMERCIAL"
plan = "commercial"
location = { address_line1 = "4200 Blvd Saint-Laurent" }

[sites.cameras]
name = "Cameras only"
sources = ["alta"]
alta_zones = ["az-9"]
timezone = "America/Montreal"
site_type = "COMMERCIAL"
plan = "commercial"
location = { address_line1 = "1 Main St" }

[plans.commercial]
trouble = ["cad.upload_incident"]
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sites files are written as ``sites.toml`` here, so messages read as users see them."""
    monkeypatch.chdir(tmp_path)


def sites_file(*replacements: tuple[str, str]) -> Path:
    text = BASE
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = Path("sites.toml")
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(*replacements: tuple[str, str]) -> list[str]:
    with pytest.raises(SitesFileError) as caught:
        load_sites(sites_file(*replacements), ENVIRON)
    return list(caught.value.errors)


SITE = 'plan = "commercial"\nlocation = { address_line1 = "4200'
SOURCE = 'token_env = "PANELS_TOKEN"\n'
CAMERAS = 'plan = "commercial"\nlocation = { address_line1 = "1 Main'


def on_site(keys: str) -> tuple[str, str]:
    return (SITE, SITE.replace('plan = "commercial"\n', f'plan = "commercial"\n{keys}\n'))


def on_source(keys: str) -> tuple[str, str]:
    return (SOURCE, f"{SOURCE}{keys}\n")


pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("in_tmp")]


def test_the_example_file_supervises_the_newton_residence() -> None:
    sites = load_sites(EXAMPLE_SITES, SOURCE_ENV)

    [newton] = sites.supervised_accounts
    assert (newton.source_key, newton.account, newton.site_key) == ("acme-panels", "1f4a", "newton-residence")
    assert newton.supervision.link == timedelta(hours=25)
    assert newton.supervision.test_period == timedelta(hours=24, minutes=30)


def test_a_site_supervises_each_of_its_panel_accounts() -> None:
    sites = load_sites(sites_file(on_site('link_supervision = "3m"\ntest_interval = "24h"')), ENVIRON)

    found = {(s.source_key, s.account): s.supervision for s in sites.supervised_accounts}
    assert set(found) == {("panels", "ab-95367"), ("panels", "AB-2")}  # not the Alta zone
    supervision = found[("panels", "ab-95367")]
    assert (supervision.link, supervision.test_interval, supervision.test_grace) == (
        timedelta(minutes=3), timedelta(hours=24), DEFAULT_TEST_GRACE,
    )  # fmt: skip
    assert sites.supervision_for("panels", " ab-2 ") is not None
    assert sites.supervision_for("alta", "az-5d1c") is None


def test_a_sources_supervision_applies_to_every_account_and_a_site_overrides_it_check_by_check() -> None:
    path = sites_file(
        on_source('link_supervision = "90s"\ntest_interval = "12h"\ntest_grace = "1h"'),
        on_site('test_interval = "24h"\ntest_grace = "0s"'),
    )

    supervision = load_sites(path, ENVIRON).supervision_for("panels", "ab-95367")

    assert supervision is not None
    assert supervision.supervision.link == timedelta(seconds=90)  # the source's
    assert supervision.supervision.test_period == timedelta(hours=24)  # the site's, grace included


def test_without_supervision_no_account_is_supervised() -> None:
    sites = load_sites(sites_file(), ENVIRON)

    assert sites.supervised_accounts == ()
    assert sites.supervision_for("panels", "ab-95367") is None


@pytest.mark.parametrize(
    ("replacement", "expected"),
    [
        pytest.param(
            on_site('link_supervision = "5s"'),
            'sites.toml: sites.hq.link_supervision: "5s" is shorter than the minimum of "10s" '
            "(leave the key out to switch the check off)",
            id="link-too-short",
        ),
        pytest.param(
            on_site('link_supervision = "0s"'),
            'sites.toml: sites.hq.link_supervision: "0s" is shorter than the minimum of "10s" '
            "(leave the key out to switch the check off)",
            id="link-zero",
        ),
        pytest.param(
            on_site('link_supervision = "-5m"'),
            'sites.toml: sites.hq.link_supervision: "-5m" is negative; durations start at "0s"',
            id="link-negative",
        ),
        pytest.param(
            on_site('link_supervision = "200h"'),
            'sites.toml: sites.hq.link_supervision: "200h" is longer than the maximum of "168h"',
            id="link-too-long",
        ),
        pytest.param(
            on_site("link_supervision = 600"),
            'sites.toml: sites.hq.link_supervision: must be a duration like "90s" or "2m", not an integer',
            id="link-not-a-duration",
        ),
        pytest.param(
            on_site('test_interval = "30s"'),
            'sites.toml: sites.hq.test_interval: "30s" is shorter than the minimum of "1m" '
            "(leave the key out to switch the check off)",
            id="test-too-short",
        ),
        pytest.param(
            on_site('test_interval = "900h"'),
            'sites.toml: sites.hq.test_interval: "900h" is longer than the maximum of "840h"',
            id="test-too-long",
        ),
        pytest.param(
            on_site('test_interval = "24h"\ntest_grace = "25h"'),
            'sites.toml: sites.hq.test_grace: "25h" is longer than the maximum of "24h"',
            id="grace-too-long",
        ),
        pytest.param(
            on_site('test_grace = "1h"'),
            "sites.toml: sites.hq.test_grace: is given without test_interval (the grace is added to the "
            "test interval)",
            id="grace-without-interval",
        ),
        pytest.param(
            on_source('test_grace = "1h"'),
            "sites.toml: sources.panels.test_grace: is given without test_interval (the grace is added to "
            "the test interval)",
            id="grace-without-interval-on-a-source",
        ),
        pytest.param(
            on_source('link_supervison = "3m"'),
            'sites.toml: sources.panels.link_supervison: unknown key (did you mean "link_supervision"?)',
            id="typo-on-a-source",
        ),
        pytest.param(
            ('token_env = "ALTA_TOKEN"\n', 'token_env = "ALTA_TOKEN"\nlink_supervision = "3m"\n'),
            "sites.toml: sources.alta.link_supervision: supervises panel accounts; an alta source posts only "
            "when a zone alarms",
            id="alta-source",
        ),
        pytest.param(
            (CAMERAS, CAMERAS.replace("\n", '\ntest_interval = "24h"\n', 1)),
            "sites.toml: sites.cameras.test_interval: supervises the site's panel accounts, but the site "
            "lists none",
            id="site-without-accounts",
        ),
    ],
)
def test_each_wrong_supervision_value_is_one_line_naming_file_table_and_key(
    replacement: tuple[str, str], expected: str
) -> None:
    assert errors_of(replacement) == [expected]
