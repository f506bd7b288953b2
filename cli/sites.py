"""``alarm-bridge sites check``: validate a sites file exactly as the web process will load it.

Whoever writes a sites file can check it from a terminal, on a machine that need not hold the
production secrets (``--ignore-missing-secrets`` reads stand-ins for them).
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from app.domain.plans import UNKNOWN_KEY, Plan, format_duration
from cli.dc09 import DC09_ACCOUNT

if TYPE_CHECKING:
    from app.domain.sites import SupervisedAccount, Supervision


class _SecretsView(Mapping[str, str]):
    """The environment as ``load_sites`` reads it, noting which named variables are unset.

    With ``placeholders`` an unset variable reads as a stand-in secret, so the rest of the file (the
    sites that use that source, their routes and plans) is still checked on a machine that does not
    hold the production secrets. The stand-in is valid both as a bearer token and as a Standard
    Webhooks secret, and differs per variable name, so it raises no problem of its own; a dc09
    source's ``encryption_keys_env`` reads as a key for each account its sites route to it
    (``dc09_stand_ins``).
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        placeholders: bool,
        dc09_stand_ins: Mapping[str, str] | None = None,
    ) -> None:
        self._environ = environ
        self._placeholders = placeholders
        self._dc09_stand_ins = dc09_stand_ins or {}
        self.missing: list[str] = []

    def __getitem__(self, name: str) -> str:
        if name in self._environ:
            return self._environ[name]
        if name not in self.missing:
            self.missing.append(name)
        if not self._placeholders:
            raise KeyError(name)
        if name in self._dc09_stand_ins:
            return self._dc09_stand_ins[name]
        digest = hashlib.sha256(f"alarm-bridge sites check placeholder {name}".encode()).digest()
        return "whsec_" + base64.b64encode(digest).decode()

    def __iter__(self) -> Iterator[str]:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)


def dc09_stand_ins(path: Path) -> dict[str, str]:
    """Stand-in values of the file's dc09 key variables: a well-formed key, its own, for every account
    its sites route through that source (so neither a stray, a missing nor a shared key is reported)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}  # load_sites reports it
    sources, sites = document.get("sources"), document.get("sites")
    if not isinstance(sources, dict) or not isinstance(sites, dict):
        return {}
    found: dict[str, str] = {}
    for key, source in sources.items():
        if not isinstance(source, dict) or source.get("kind") != "dc09":
            continue
        name = source.get("encryption_keys_env")
        ascii_keys = source.get("encryption_keys_format") == "ascii"
        accounts = {
            account.strip()
            for site in sites.values()
            if isinstance(site, dict) and key in (site.get("sources") or ())
            for account in site.get("accounts") or ()
            if isinstance(account, str) and DC09_ACCOUNT.fullmatch(account.strip())
        }
        if isinstance(name, str) and accounts:
            found[name] = ",".join(
                f"{account}={_key_stand_in(name, account, ascii_keys)}" for account in sorted(accounts)
            )
    return found


def _key_stand_in(name: str, account: str, ascii_keys: bool) -> str:
    """A well-formed AES-128 key of its own for each account: two accounts may not share one."""
    digest = hashlib.sha256(f"{name}\x00{account.casefold()}".encode()).hexdigest()
    return digest[:16] if ascii_keys else digest[:32]


@click.group()
def sites() -> None:
    """The sites file: who may post signals, which site each belongs to, and what to do."""


@sites.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--ignore-missing-secrets",
    is_flag=True,
    help="Check a file whose token_env / signing_secrets_env variables are not set here, using "
    "stand-in values (the secrets themselves are then not checked).",
)
def sites_check(file: Path | None, ignore_missing_secrets: bool) -> None:
    """Validate a sites file (default: SITES_FILE) as the web process would load it.

    Secrets are read from the environment variables the file names, as at start-up. Prints one
    line per problem and exits 1, or a short summary and exits 0.
    """
    import vendors
    from app.domain.sites import SitesFileError
    from app.domain.sites_file import load_sites
    from config.settings import load_settings

    settings = load_settings(vendors.SETTINGS)  # as the web process would: a bad vendor setting is refused
    path = file or (Path(settings.sites_file) if settings.sites_file else None)
    if path is None:
        raise click.UsageError("give the FILE to check, or set SITES_FILE")
    environ = _SecretsView(
        settings.environ, placeholders=ignore_missing_secrets, dc09_stand_ins=dc09_stand_ins(path)
    )
    try:
        directory = load_sites(path, environ)
    except SitesFileError as exc:
        for line in exc.errors:
            click.echo(line)
        count = len(exc.errors)
        click.echo(f"{path}: {count} problem{'' if count == 1 else 's'}", err=True)
        if environ.missing and not ignore_missing_secrets:
            click.echo(
                f"{path}: {', '.join(environ.missing)} not set here; --ignore-missing-secrets checks "
                "the rest of the file without them",
                err=True,
            )
        raise SystemExit(1) from None
    sources = directory.sources
    kinds = {kind: sum(1 for source in sources if source.kind == kind) for kind in ("panel", "alta", "dc09")}
    dc09 = f", {kinds['dc09']} dc09" if kinds["dc09"] else ""
    accounts = sum(len(site.accounts) for site in directory.sites)
    zones = sum(len(site.alta_zones) for site in directory.sites)
    plans = len({site.plan.key for site in directory.sites})
    click.echo(
        f"{path}: ok: {_count(len(sources), 'source')} ({kinds['panel']} panel, {kinds['alta']} alta{dc09}), "
        f"{_count(len(directory.sites), 'site')}, {_count(accounts, 'panel account')}, "
        f"{_count(zones, 'Alta zone')}, {_count(plans, 'plan')} in use"
    )
    for plan in sorted({site.plan for site in directory.sites}, key=lambda p: p.key):
        click.echo(f"{path}: {_unknown_code_rule(plan)}")
    for line in _supervision_lines(directory.supervised_accounts):
        click.echo(f"{path}: {line}")
    if environ.missing:
        click.echo(f"{path}: not set here, checked with stand-ins: {', '.join(environ.missing)}")


def _supervision_lines(accounts: Sequence[SupervisedAccount]) -> list[str]:
    """Per site, what its supervised accounts must send and when a silence becomes a trouble."""
    by_site: dict[tuple[str, Supervision], int] = {}
    for account in accounts:
        key = (account.site_key, account.supervision)
        by_site[key] = by_site.get(key, 0) + 1
    lines = []
    for (site_key, rule), count in by_site.items():
        checks = []
        if rule.link is not None:
            checks.append(f"a link (any event or DC-09 frame) within {format_duration(rule.link)}")
        if rule.test_interval is not None:
            checks.append(
                f"an automatic test (RP or RY) every {format_duration(rule.test_interval)} "
                f"(+{format_duration(rule.test_grace)} grace)"
            )
        lines.append(
            f'site "{site_key}": {_count(count, "account")} supervised: {" and ".join(checks)}, '
            "else a trouble for a person"
        )
    return lines


def _unknown_code_rule(plan: Plan) -> str:
    """What a plan does with a code outside the SIA catalogue: the integrator's explicit opt-in."""
    steps = plan.steps_by_key.get(UNKNOWN_KEY)
    if steps:
        names = ", ".join(step.kind for step in steps)
        return f'plan "{plan.key}": an unknown code asks a person and runs its "unknown" list ({names})'
    return (
        f'plan "{plan.key}": an unknown code asks a person and runs nothing (an "unknown" list would opt in)'
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
