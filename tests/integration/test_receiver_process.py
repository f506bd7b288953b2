"""The receiver as the Procfile runs it (`alarm-bridge receiver`): SIGTERM stops it accepting, closes the
connections that wait for a frame, lets the frame being committed finish and be acknowledged, then
exits 0; and `alarm-bridge send-test-event --dc09` sends it real frames (TCP, UDP, AES, NULL) and
reports its answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.engine import make_url

from app.domain.intake import account_lock_id
from app.ledger.models import Event as EventRow
from app.ledger.session import make_engine, make_sessionmaker
from app.receiver.frames import build_frame, read_reply
from cli.main import main
from tests.conftest import PG_ADMIN_URL
from tests.polling import wait_until
from tests.processes import (
    REPO,
    Proc,
    deployment_env,
    free_port,
    port_open,
    procfile_argv,
    start,
    unique_prefix,
)
from tests.receiver_fixture import KEYS, PLAIN, SOURCE_ENV, read_answer, write_sites

pytestmark = pytest.mark.integration


def receiver_process(tmp_path: Path, database_url: str, redis_url: str) -> tuple[Proc, int]:
    port = free_port()
    env = deployment_env(
        database_url=database_url,
        redis_url=redis_url,
        key_prefix=unique_prefix("abrx"),
        sites=write_sites(tmp_path),
        var_dir=tmp_path / "var",
        prometheus=tmp_path / "prometheus",
        SIA_RECEIVER_HOST="127.0.0.1",
        SIA_RECEIVER_PORT=str(port),
        LOG_FORMAT="console",
        **SOURCE_ENV,
    )
    proc = start("receiver", procfile_argv("receiver"), env, tmp_path / "receiver.log")
    wait_until(lambda: port_open(port) or not proc.alive(), timeout_s=60, interval_s=0.1)
    assert proc.alive(), proc.tail()
    return proc, port


def events(database_url: str) -> list[tuple[str | None, str | None]]:
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            return [
                (e.account, e.code) for e in session.execute(select(EventRow).order_by(EventRow.id)).scalars()
            ]
    finally:
        engine.dispose()


def _connect(database_url: str) -> psycopg.Connection[Any]:
    url = make_url(database_url)
    admin = make_url(PG_ADMIN_URL)
    return psycopg.connect(
        host=admin.host, port=admin.port or 5432, user=admin.username, dbname=url.database, autocommit=True
    )


def test_sigterm_stops_accepting_and_acknowledges_the_frame_being_committed_before_exiting(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    proc, port = receiver_process(tmp_path, postgres_url, redis_url)
    try:
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        busy = socket.create_connection(("127.0.0.1", port), timeout=10)
        with _connect(postgres_url) as holder:
            # The frame's transaction waits on its account's lock, held here: a frame in flight.
            holder.execute("SELECT pg_advisory_lock(%s)", (account_lock_id("acme-dc09", "128A", "hq"),))
            busy.sendall(build_frame("128A", "FA", "3", sequence=41, key=KEYS["128A"]))
            wait_until(
                lambda: (
                    holder.execute(
                        "SELECT count(*) FROM pg_locks JOIN pg_database d ON d.oid = pg_locks.database "
                        "WHERE locktype = 'advisory' AND NOT granted AND d.datname = current_database()"
                    ).fetchone()
                    == (1,)
                ),
                timeout_s=30,
            )
            busy.setblocking(False)
            with pytest.raises(BlockingIOError):
                busy.recv(16)  # no ACK while the frame is not committed
            busy.setblocking(True)

            proc.signal_group(signal.SIGTERM)

            wait_until(lambda: not port_open(port), timeout_s=30)  # no new connection
            assert idle.recv(16) == b""  # a connection waiting for a frame is closed at once
            assert proc.alive()  # the frame in flight holds the exit
            holder.execute("SELECT pg_advisory_unlock(%s)", (account_lock_id("acme-dc09", "128A", "hq"),))

        reply = read_reply(read_answer(busy), KEYS["128A"], "128A")
        assert (reply.kind, reply.crc_ok) == ("ACK", True)
        assert proc.wait(timeout_s=30) == 0, proc.tail()
        assert events(postgres_url) == [("128A", "FA")]
        assert "receiver.stopped" in proc.current_output()
        idle.close()
        busy.close()
    finally:
        proc.stop(timeout_s=5)


@pytest.fixture
def running_process(tmp_path: Path, sqlite_url: str, redis_url: str) -> Iterator[int]:
    proc, port = receiver_process(tmp_path, sqlite_url, redis_url)
    yield port
    proc.stop(timeout_s=30)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`alarm-bridge ...` as its own process, as an integrator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIA_", "SITES_FILE"))}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_send_test_event_dc09_sends_real_frames_and_reports_the_answers(
    running_process: int, sqlite_url: str
) -> None:
    to = ("--dc09", "--to", f"127.0.0.1:{running_process}")

    encrypted = cli(
        "send-test-event",
        *to,
        "--account",
        "256C",
        "--key",
        KEYS["256C"].hex(),
        "--code",
        "FA",
        "--zone",
        "2",
    )
    over_udp = cli("send-test-event", *to, "--udp", "--account", PLAIN, "--code", "BA", "--zone", "9")
    link = cli("send-test-event", *to, "--null", "--account", PLAIN)
    manual_test = cli("send-test-event", *to, "--account", PLAIN)
    unknown = cli("send-test-event", *to, "--account", "9999")
    wrong_key = cli(
        "send-test-event", *to, "--account", "128A", "--key", KEYS["256C"].hex()[:32], "--code", "FA"
    )

    for done in (encrypted, over_udp, link, manual_test):
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ACK: the receiver has committed the frame" in done.stdout
    assert "DC-09 over TCP to 127.0.0.1" in encrypted.stdout and ", AES-256" in encrypted.stdout
    assert '"*ACK"' in encrypted.stdout
    assert "DC-09 over UDP" in over_udp.stdout
    for done in (unknown, wrong_key):
        assert done.returncode == 1
        assert "Error: the receiver answered NAK" in done.stderr
        assert '"NAK"0000R1L1A0[]_' in done.stdout
    assert events(sqlite_url) == [("256C", "FA"), (PLAIN, "BA"), (PLAIN, "RX")]


def test_send_test_event_dc09_refuses_options_that_do_not_apply() -> None:
    no_account = cli("send-test-event", "--dc09")
    token = cli("send-test-event", "--dc09", "--account", PLAIN, "--token", "x" * 20)
    key = cli("send-test-event", "--dc09", "--account", PLAIN, "--key", "abc")
    http_with_key = cli("send-test-event", "--token", "x" * 20, "--account", PLAIN, "--key", "00" * 16)

    assert no_account.returncode == 2 and "--dc09 needs --account" in no_account.stderr
    assert token.returncode == 2 and "--dc09 takes no --url, --token" in token.stderr
    assert key.returncode == 2 and "an AES key is 32, 48 or 64 hex digits" in key.stderr
    assert http_with_key.returncode == 2 and "are for --dc09" in http_with_key.stderr


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--code", "B A", "two letters"),
        ("--code", "BAXYZ", "two letters"),
        ("--zone", "3]|Nxx", "1 to 4 digits"),
        ("--zone", "é", "1 to 4 digits"),
        ("--zone", "12345", "1 to 4 digits"),
    ],
)
def test_send_test_event_dc09_refuses_what_would_change_the_frame(option: str, value: str, said: str) -> None:
    # Nothing is sent: the address is unreachable on purpose, so only the check can answer.
    done = cli("send-test-event", "--dc09", "--to", "127.0.0.1:1", "--account", PLAIN, option, value)

    assert done.returncode == 2, done.stderr
    assert option in done.stderr and said in done.stderr
    assert "Traceback" not in done.stderr


def test_sites_check_summarises_dc09_sources_and_checks_them_without_their_keys(tmp_path: Path) -> None:
    path = str(write_sites(tmp_path))
    unset = {name: None for name in (*SOURCE_ENV, "SITES_FILE")}

    checked = CliRunner().invoke(main, ["sites", "check", path], env={**unset, **SOURCE_ENV})
    missing = CliRunner().invoke(main, ["sites", "check", path], env=unset)
    stand_ins = CliRunner().invoke(main, ["sites", "check", path, "--ignore-missing-secrets"], env=unset)

    assert checked.exit_code == 0, checked.output
    assert checked.stdout.startswith(
        f"{path}: ok: 2 sources (0 panel, 0 alta, 2 dc09), 2 sites, 5 panel accounts"
    )
    assert missing.exit_code == 1
    assert missing.stdout.splitlines() == [
        f"{path}: sources.acme-dc09.encryption_keys_env: environment variable ACME_DC09_KEYS is not set",
        f"{path}: sources.ajax-dc09.encryption_keys_env: environment variable AJAX_DC09_KEYS is not set",
    ]
    assert stand_ins.exit_code == 0, stand_ins.output
    assert f"{path}: not set here, checked with stand-ins: ACME_DC09_KEYS, AJAX_DC09_KEYS" in stand_ins.stdout


def test_sites_check_refuses_a_dc09_key_two_accounts_share(tmp_path: Path) -> None:
    """A frame's header account is in clear: with one key for two accounts, either's captured frame
    could be re-addressed to the other (an encrypted NULL keeping a dead panel's link green)."""
    path = str(write_sites(tmp_path))
    unset = {name: None for name in (*SOURCE_ENV, "SITES_FILE")}
    shared = SOURCE_ENV["ACME_DC09_KEYS"] + f",1234={KEYS['128A'].hex()}"

    checked = CliRunner().invoke(
        main, ["sites", "check", path], env={**unset, **SOURCE_ENV, "ACME_DC09_KEYS": shared}
    )

    assert checked.exit_code == 1
    assert checked.stdout.splitlines()[0] == (
        f"{path}: sources.acme-dc09.encryption_keys_env: the key of account 1234 is also account 128a's "
        '(source "acme-dc09"): each account needs a key of its own, or a frame of one could pass as the '
        "other's"
    )
    assert KEYS["128A"].hex() not in checked.output
