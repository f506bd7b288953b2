"""``alarm-bridge db upgrade`` (the Procfile's ``release``) and ``alarm-bridge ledger archive``
(retention): the ledger's schema, and keeping the ledger small."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.credentials import display_url

if TYPE_CHECKING:
    from alembic.config import Config

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = PACKAGE_ROOT / "app" / "ledger" / "migrations"
AGE_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MIN_ARCHIVE_AGE_S = 86400.0  # an alarm that ended today is still somebody's evidence
MAX_ARCHIVE_AGE_DAYS = 36525  # 100 years: the same bound as ARCHIVE_AFTER_DAYS (config/settings.py)
MAX_ARCHIVE_AGE_S = MAX_ARCHIVE_AGE_DAYS * 86400.0


@click.group()
def db() -> None:
    """The alarm ledger's schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
def db_upgrade(revision: str) -> None:
    """Apply migrations to the ledger named by DATABASE_URL (the Procfile's `release`)."""
    from alembic import command
    from sqlalchemy.exc import DBAPIError

    from config.settings import load_settings

    settings = load_settings()
    try:
        command.upgrade(alembic_config(settings.database_url), revision)
    except DBAPIError as exc:  # unreachable, refused, no such database: one line, not a traceback
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        raise click.ClickException(
            f"cannot migrate the ledger at {display_url(settings.database_url)}: {reason}"
        ) from None
    click.echo(f"ledger at {revision}: {display_url(settings.database_url)}")


def alembic_config(database_url: str) -> Config:
    """An Alembic Config that works from any directory (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


@click.group()
def ledger() -> None:
    """Keeping the ledger small: let alarms that ended long ago go."""


def parse_age(text: str) -> float:
    """``180d``, ``36h``, ``90m`` or plain seconds, as seconds; a ClickException names the value."""
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in AGE_UNITS else "s"
    number = raw[:-1] if raw[-1:] in AGE_UNITS else raw
    try:
        seconds = float(number) * AGE_UNITS[unit]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an age like 180d, 36h or 90m") from None
    if not seconds >= MIN_ARCHIVE_AGE_S:  # also refuses NaN
        raise click.BadParameter(f"{text!r} is less than a day: an alarm that recent is kept")
    if not seconds <= MAX_ARCHIVE_AGE_S:  # also refuses infinity: no date that far back
        raise click.BadParameter(f"{text!r} is more than {MAX_ARCHIVE_AGE_DAYS} days (100 years)")
    return seconds


@ledger.command("archive")
@click.option(
    "--ended-before",
    "age",
    default=None,
    help="Remove alarms that ended longer ago than this (180d, 36h; at least 1d). "
    "Default: ARCHIVE_AFTER_DAYS days.",
)
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write what is removed to DIR/alarm-bridge-archive-<time>.jsonl before deleting it.",
)
@click.option(
    "--batch-size", type=click.IntRange(1, 10_000), default=None, help="Default: ARCHIVE_BATCH_SIZE."
)
@click.option("--pause", "pause_s", type=click.FloatRange(0, 60), default=0.0, show_default=True,
              help="Seconds to wait between batches.")  # fmt: skip
def ledger_archive(age: str | None, export_dir: Path | None, batch_size: int | None, pause_s: float) -> None:
    """Export and delete alarms that ended before the cut-off, with their events, steps and timeline,
    and old events that opened no alarm. Never an alarm that has not ended or has a step unfinished."""
    import json
    from datetime import timedelta

    from app.ledger.models import utcnow
    from app.ledger.retention import archive
    from app.ledger.session import make_engine
    from config.logging import configure_logging
    from config.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    seconds = parse_age(age) if age is not None else settings.archive_after_days * 86400
    if export_dir is not None:  # before anything is removed: a directory the export can be written in
        try:
            export_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.BadParameter(f"{export_dir}: {exc.strerror or exc}", param_hint="--export") from None
    cutoff = utcnow() - timedelta(seconds=seconds)
    engine = make_engine(settings.database_url)
    try:
        report = archive(
            engine,
            ended_before=cutoff,
            export_dir=export_dir,
            batch_size=batch_size or settings.archive_batch_size,
            pause_s=pause_s,
        )
    finally:
        engine.dispose()
    click.echo(json.dumps(report.as_dict(), indent=2))
