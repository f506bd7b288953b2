"""Each vendor's own settings: declared by its package, collected by the registry, and documented in the
README and .env.example by `make docs` (.ci/vendor_docs.py), never by hand."""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path
from typing import Any

import pytest

import vendors

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def docs() -> dict[str, Any]:
    return runpy.run_path(str(REPO / ".ci" / "vendor_docs.py"))


def test_the_registry_collects_every_vendors_settings() -> None:
    declared = [vendor.settings for vendor in vendors.VENDORS if vendor.settings]
    assert tuple(declared) == vendors.SETTINGS
    assert len(vendors.SETTINGS) == len(vendors.VENDORS)  # every vendor today has an upstream to reach
    prefixes = [kind.prefix for kind in vendors.SETTINGS]
    assert len(set(prefixes)) == len(prefixes)
    for kind in vendors.SETTINGS:
        assert kind.description, kind.__name__
        assert kind.__module__.endswith(".settings"), kind.__name__


def test_the_readme_and_env_example_list_the_declared_settings(docs: dict[str, Any]) -> None:
    stale = docs["stale"]()
    assert not stale, "\n".join(stale)


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_a_stale_list_is_caught_and_says_to_run_make_docs(
    docs: dict[str, Any], tmp_path: Path, document: str
) -> None:
    block = next(block for block in docs["BLOCKS"] if block.path.name == document)
    copy = dataclasses.replace(block, path=tmp_path / document)
    current = block.path.read_text()
    copy.path.write_text(current.replace("ALTA_VIDEO_WAIT_S", "ALTA_VIDEO_WAIT"))
    assert docs["stale"]([copy]) == [f"{document}: its vendor settings are stale; run `make docs`"]
    copy.path.write_text(current)
    assert docs["stale"]([copy]) == []


def test_the_docs_show_what_the_declarations_say(docs: dict[str, Any]) -> None:
    rows = docs["readme_table"](vendors.SETTINGS).splitlines()
    # the connection in one row, explained by the description; a setting with a doc in its own
    assert "| `CALLONALARM_BASE_URL`, `CALLONALARM_API_KEY` | the sandbox's | CallOnAlarm API |" in rows
    assert "| `CALLONALARM_POLL_INTERVAL_S` | `30` | how often a call's status is followed |" in rows
    lines = docs["env_lines"](vendors.SETTINGS).splitlines()
    assert "# CALLONALARM_FALLBACK_ACCOUNT=9000" in lines  # unset by default: commented, with its example
    assert "CALLONALARM_HOURLY_BUDGET=100" in lines
