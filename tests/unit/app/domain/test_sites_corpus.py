"""Every message of the sites file, pinned: the corpus of broken variants recorded before the loader
became marshmallow schemas (issue 17), replayed against today's loader, line for line and in order.

``sites_corpus.json`` holds, per case, the file's text, the environment and what ``load_sites``
gave: ``["ERROR", <one line per problem>...]`` or ``["OK", <reprs of the loaded directory>...]``.
"""

import json
from pathlib import Path

import pytest

from app.domain.sites import SitesFileError
from app.domain.sites_file import load_sites

pytestmark = pytest.mark.unit

CORPUS = json.loads((Path(__file__).parent / "sites_corpus.json").read_text(encoding="utf-8"))
MISSING = "\0MISSING"  # the case of a file that cannot be read


def outcome(path: Path, environ: dict[str, str]) -> list[str]:
    try:
        sites = load_sites(path, environ)
    except SitesFileError as exc:
        return ["ERROR", *exc.errors]
    return [
        "OK",
        repr(sites.sources),
        repr(sites.sites),
        repr(sites.supervised_accounts),
        repr([sorted(source.encryption_keys.items()) for source in sites.sources]),
    ]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_the_sites_file_reports_what_it_reported_before(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CORPUS[name]
    monkeypatch.chdir(tmp_path)  # messages name the file as given: "sites.toml: ..."
    Path("sites.toml").write_text(case["toml"], encoding="utf-8")
    path = Path("missing.toml" if case["toml"] == MISSING else "sites.toml")

    assert outcome(path, case["environ"]) == case["result"]


def test_the_corpus_reaches_every_kind_of_problem() -> None:
    lines = [line for case in CORPUS.values() for line in case["result"]]

    assert sum(case["result"][0] == "ERROR" for case in CORPUS.values()) > 100
    assert any("cannot be read" in line for line in lines)
    assert any("is not valid TOML" in line for line in lines)
