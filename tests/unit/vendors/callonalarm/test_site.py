"""``[sites.<key>.callonalarm]`` as the sites file reads it: the account and its voice language."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.domain.sites import SitesFileError
from app.domain.sites_file import load_sites
from tests.sites_fixture import EXAMPLE_SITES, SOURCE_ENV
from vendors.callonalarm.site import CallOnAlarmSite

pytestmark = pytest.mark.unit

MONTREAL_TABLE = 'callonalarm = { account_number = "1001", language = "en" }'


def sites_with(tmp_path: Path, table: str) -> Path:
    text = EXAMPLE_SITES.read_text(encoding="utf-8")
    assert MONTREAL_TABLE in text
    path = tmp_path / "sites.toml"
    path.write_text(text.replace(MONTREAL_TABLE, table), encoding="utf-8")
    return path


def montreal_table(path: Path) -> CallOnAlarmSite | None:
    site = next(site for site in load_sites(path, SOURCE_ENV).sites if site.key == "montreal-hq")
    return site.table(CallOnAlarmSite)


def test_a_site_declares_its_accounts_language(tmp_path: Path) -> None:
    path = sites_with(tmp_path, 'callonalarm = { account_number = "1003", language = "fr" }')

    assert montreal_table(path) == CallOnAlarmSite(account_number="1003", language="fr")


def test_the_language_is_english_unless_declared(tmp_path: Path) -> None:
    path = sites_with(tmp_path, 'callonalarm = { account_number = "1003" }')

    assert montreal_table(path) == CallOnAlarmSite(account_number="1003", language="en")


@pytest.mark.parametrize("language", ["FR", "pt", "french", ""])
def test_a_language_callonalarm_does_not_speak_is_refused(tmp_path: Path, language: str) -> None:
    path = sites_with(tmp_path, f'callonalarm = {{ account_number = "1003", language = "{language}" }}')

    with pytest.raises(SitesFileError) as caught:
        load_sites(path, SOURCE_ENV)

    [line] = caught.value.errors
    assert "sites.montreal-hq.callonalarm.language: " in line
    if language:
        assert f'"{language}" is not one of "en", "fr", "es", "it", "de"' in line
