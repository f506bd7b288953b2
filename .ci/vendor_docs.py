"""`make docs`: write each vendor's settings into the README's Configuration and into .env.example.

A vendor declares its settings in ``vendors/<key>/settings.py``; both documents list them between
marker comments, generated from those declarations (registry order), so a new vendor edits neither by
hand. ``--check`` writes nothing and exits 1 when a block is stale (a unit test checks the same).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import vendors
from config.settings import VendorSettings, variable

REPO = Path(__file__).resolve().parent.parent


def _shown(value: object) -> str:
    """A default as the documents write it: 120.0 -> 120, a tuple as the comma list it is read from."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def readme_table(sections: Iterable[type[VendorSettings]]) -> str:
    """The README's table: per vendor, its connection in one row (``description``), then a row per
    setting with a ``doc`` of its own."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for kind in sections:
        items = fields(kind)
        connection = [item for item in items if not item.metadata.get("doc")]
        if connection:
            names = ", ".join(f"`{variable(item, kind.prefix)}`" for item in connection)
            rows.append(f"| {names} | the sandbox's | {kind.description} |")
        for item in items:
            if doc := item.metadata.get("doc"):
                default = "unset" if item.default is None else f"`{_shown(item.default)}`"
                rows.append(f"| `{variable(item, kind.prefix)}` | {default} | {doc} |")
    return "\n".join(rows)


def env_lines(sections: Iterable[type[VendorSettings]]) -> str:
    """.env.example's lines: every variable with its default; one unset by default, commented out with
    its example."""
    lines = []
    for kind in sections:
        for item in fields(kind):
            name = variable(item, kind.prefix)
            if item.default is None:
                lines.append(f"# {name}={item.metadata.get('example') or ''}")
            else:
                lines.append(f"{name}={_shown(item.default)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Block:
    """A generated part of a document: between its two marker lines."""

    path: Path
    begin: str
    end: str
    render: Callable[[Iterable[type[VendorSettings]]], str]

    def updated(self, text: str) -> str:
        """``text`` with the block rendered afresh from the declarations."""
        head, begin, rest = text.partition(self.begin + "\n")
        _, end, tail = rest.partition(self.end + "\n")
        if not begin or not end:
            raise SystemExit(f"{self.path.name}: the markers {self.begin!r} and {self.end!r} are missing")
        return f"{head}{begin}{self.render(vendors.SETTINGS)}\n{end}{tail}"


BLOCKS = (
    Block(REPO / "README.md", "<!-- vendor-settings:begin -->", "<!-- vendor-settings:end -->", readme_table),
    Block(REPO / ".env.example", "# vendor-settings:begin", "# vendor-settings:end", env_lines),
)


def stale(blocks: Iterable[Block] = BLOCKS) -> list[str]:
    """The documents whose vendor settings differ from the declarations, each as one line to act on."""
    return [
        f"{block.path.name}: its vendor settings are stale; run `make docs`"
        for block in blocks
        if block.updated(text := block.path.read_text()) != text
    ]


def main(argv: list[str]) -> int:
    """Rewrite the blocks (or, with --check, report the stale ones); 0 when all are current."""
    if argv == ["--check"]:
        problems = stale()
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    for block in BLOCKS:
        text = block.path.read_text()
        if (updated := block.updated(text)) != text:
            block.path.write_text(updated)
            print(f"{block.path.name}: vendor settings written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
