"""The SIA DC-09 receiver over real sockets, on both ledgers: an ACK only after the commit (the alarm is
in the ledger when the ACK arrives), every AES key size, UDP, retransmissions recorded once, the
standard's NAK for each refusal, a NAK while the ledger is down and the retried frame accepted after,
unknown codes recorded for a person and acknowledged, and a listener that no sender can take down.

The listener runs in a thread of the test process here (its own asyncio loop, a private port, the
test's own ledger); tests/integration/test_receiver_process.py runs the real process."""

from __future__ import annotations

import asyncio
import contextlib
import select as io_select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.domain.actions import DueAction
from app.domain.intake import IntakeRules
from app.domain.outbox import RecordingOutbox
from app.domain.sites import Sites
from app.domain.sites_file import load_sites
from app.ledger.models import Action, Alarm, AlarmState
from app.ledger.models import Event as EventRow
from app.ledger.queries import alarm_page
from app.ledger.session import make_engine, make_sessionmaker
from app.receiver.crc import frame_crc
from app.receiver.desk import LOG_BURST, LOG_EVERY_S, Desk
from app.receiver.frames import MAX_FRAME_BYTES, NULL, Reply, build_frame, read_reply
from app.receiver.server import Receiver
from config.settings import Settings
from tests.conftest import PG_ADMIN_URL
from tests.logs import capture_logs
from tests.polling import wait_until
from tests.processes import free_port
from tests.receiver_fixture import ASCII_KEY, KEYS, PLAIN, SOURCE_ENV, read_answer, write_sites
from tests.sites_fixture import new_york, site_toml

pytestmark = pytest.mark.integration


@dataclass
class Published:
    """What the outbox was handed, and whether each action was committed when it was."""

    committed: list[bool] = field(default_factory=list)
    actions: list[DueAction] = field(default_factory=list)


@dataclass
class RunningReceiver:
    """The listener on a private port, over the test's ledger."""

    port: int
    sessions: sessionmaker[Session]
    published: Published

    def send(self, raw: bytes, key: bytes | None = None, account: str = "") -> Reply:
        """One frame over a new TCP connection; the receiver's answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(raw)
            return read_reply(read_answer(sock), key, account)

    def send_udp(self, raw: bytes) -> Reply:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(10)
            sock.sendto(raw, ("127.0.0.1", self.port))
            return read_reply(sock.recvfrom(8192)[0])

    def events(self) -> list[EventRow]:
        with self.sessions() as session:
            return list(session.execute(select(EventRow).order_by(EventRow.id)).scalars())

    def alarm(self, alarm_id: int) -> Alarm:
        with self.sessions() as session:
            found = session.get(Alarm, alarm_id)
            assert found is not None
            return found


@contextmanager
def running_receiver(settings: Settings, sites: Sites, engine: Engine) -> Iterator[RunningReceiver]:
    """``Receiver.serve`` on a thread with its own loop; stopped as SIGTERM stops it."""
    sessions = make_sessionmaker(engine)
    published = Published()

    def committed(action: DueAction) -> None:
        # Another connection sees the action row only once its transaction has committed.
        with engine.connect() as other:
            seen = other.execute(select(func.count()).where(Action.id == action.id)).scalar_one()
        published.committed.append(seen == 1)
        published.actions.append(action)

    desk = Desk(
        sessions=sessions,
        sites=sites,
        outbox=RecordingOutbox(on_publish=committed),
        rules=IntakeRules.from_settings(settings),
    )
    receiver = Receiver(desk, settings)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    failure: list[BaseException] = []

    async def serve() -> None:
        stop.append(asyncio.Event())
        await receiver.serve(stop[0], on_ready=ready.set)

    def main() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=main, name="receiver", daemon=True)
    thread.start()
    assert ready.wait(10) and not failure, failure
    try:
        yield RunningReceiver(settings.sia_receiver_port, sessions, published)
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
        receiver.pool.shutdown()
        loop.close()
        assert not thread.is_alive()


@pytest.fixture
def receiver_settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(
        database_url=database_url,
        sia_receiver_host="127.0.0.1",
        sia_receiver_port=free_port(),
        sia_receiver_concurrency=4,
    )


@pytest.fixture
def sites(tmp_path: Path) -> Sites:
    return load_sites(write_sites(tmp_path), SOURCE_ENV)


@pytest.fixture
def receiver(receiver_settings: Settings, sites: Sites) -> Iterator[RunningReceiver]:
    engine = make_engine(receiver_settings.database_url, pre_ping=False)
    with running_receiver(receiver_settings, sites, engine) as running:
        yield running
    engine.dispose()


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"alarm_bridge_dc09_{name}_total", labels) or 0.0


def counts(expected: float, name: str, **labels: str) -> bool:
    """Whether the counter comes to ``expected``: the receiver counts an answer once it has sent it,
    so the panel can read the answer a moment before it is counted."""
    return bool(wait_until(lambda: counted(name, **labels) == expected, timeout_s=5, interval_s=0.01))


# --- accepted: ACK after commit -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "key"),
    [
        pytest.param(PLAIN, None, id="plain"),
        pytest.param("128A", KEYS["128A"], id="aes-128"),
        pytest.param("192B", KEYS["192B"], id="aes-192"),
        pytest.param("256C", KEYS["256C"], id="aes-256"),
        pytest.param("A1A1", ASCII_KEY, id="aes-128-ascii-key"),
    ],
)
def test_a_frame_is_acknowledged_only_once_its_alarm_is_committed(
    receiver: RunningReceiver, account: str, key: bytes | None
) -> None:
    acked_before = counted("frames", response="ack", frame="SIA-DCS")

    reply = receiver.send(build_frame(account, "FA", "2", sequence=17, key=key), key, account)

    assert (reply.kind, reply.crc_ok, reply.encrypted) == ("ACK", True, key is not None)
    if key is not None:  # the encrypted ACK carries the receiver's time, readable with the key only
        assert reply.timestamp is not None
    events = receiver.events()  # read at once: the ACK came after the commit
    assert [(e.account, e.code, e.zone) for e in events] == [(account, "FA", "2")]
    alarm = receiver.alarm(events[0].alarm_id or 0)
    assert (alarm.family, alarm.state, alarm.site_key) == (
        "fire",
        AlarmState.OPEN,
        "home" if account == "A1A1" else "hq",
    )
    # The plan's step was handed to the workers after the commit, and before the ACK.
    assert [a.task_name for a in receiver.published.actions] == ["callonalarm.trigger"]
    assert receiver.published.committed == [True]
    assert counts(acked_before + 1, "frames", response="ack", frame="SIA-DCS")


def test_a_frame_over_udp_is_acknowledged_after_its_commit(receiver: RunningReceiver) -> None:
    reply = receiver.send_udp(build_frame(PLAIN, "BA", "5", sequence=3))

    assert (reply.kind, reply.crc_ok) == ("ACK", True)
    assert [(e.code, e.zone) for e in receiver.events()] == [("BA", "5")]


def test_every_event_of_a_frame_is_committed_before_its_one_ack(receiver: RunningReceiver) -> None:
    reply = receiver.send(build_frame(PLAIN, data=f"#{PLAIN}|Nri1/BA03/BA04/FA09", sequence=4))

    assert reply.kind == "ACK"
    events = receiver.events()
    assert [(e.code, e.zone) for e in events] == [("BA", "03"), ("BA", "04"), ("FA", "09")]
    assert len({e.alarm_id for e in events}) == 3


def test_an_unknown_code_is_recorded_for_a_person_and_acknowledged(receiver: RunningReceiver) -> None:
    reply = receiver.send(build_frame("128A", "ZQ", "4", key=KEYS["128A"]), KEYS["128A"], "128A")

    assert reply.kind == "ACK"  # never DUH: the code is unknown to us, not unsupported
    (event,) = receiver.events()
    alarm = receiver.alarm(event.alarm_id or 0)
    assert alarm.state == AlarmState.NEEDS_PERSON
    assert "unknown event code 'ZQ'" in (alarm.needs_person_reason or "")
    assert receiver.published.actions == []  # nothing is dispatched on a guess


def test_contact_id_frames_are_recorded_as_their_sia_code(receiver: RunningReceiver) -> None:
    reply = receiver.send(
        build_frame(PLAIN, message_type="ADM-CID", data=f"#{PLAIN}|1130 01 003", sequence=8)
    )

    assert reply.kind == "ACK"
    assert [(e.code, e.zone) for e in receiver.events()] == [("BA", "003")]


def test_a_contact_id_frame_of_a_lower_case_account_is_recorded_and_routed_to_its_site(
    receiver_settings: Settings, tmp_path: Path
) -> None:
    """A panel sending ``#1a2b`` for the account a site lists as ``1A2B`` (hex: the case does not
    matter): its alarm was NAKed for ever, since pysiaalarm's Contact ID pattern takes upper case only."""
    path = write_sites(tmp_path)
    shop = site_toml(
        "shop",
        name="Shop",
        sources=["acme-dc09"],
        accounts=["1A2B"],
        plan="guarded",
        callonalarm={"account_number": "1009"},
        location=new_york("Shop"),
    )
    path.write_text(path.read_text(encoding="utf-8") + shop, encoding="utf-8")
    engine = make_engine(receiver_settings.database_url, pre_ping=False)
    try:
        with running_receiver(receiver_settings, load_sites(path, SOURCE_ENV), engine) as running:
            reply = running.send(build_frame("1a2b", message_type="ADM-CID", data="#1a2b|1130 01 003"))
            (event,) = running.events()
            alarm = running.alarm(event.alarm_id or 0)
            actions = [a.task_name for a in running.published.actions]
    finally:
        engine.dispose()

    assert (reply.kind, reply.crc_ok) == ("ACK", True)
    assert reply.text.endswith('"ACK"0001R1L1#1a2b[]')  # the account echoed as the panel sent it
    assert (event.code, event.zone, event.site_key) == ("BA", "003", "shop")
    assert (alarm.site_key, alarm.account, alarm.family) == ("shop", "1A2B", "burglary")  # as listed
    assert actions == ["callonalarm.trigger"]  # the site's plan started


def test_a_null_link_test_is_acknowledged_and_records_no_event(receiver: RunningReceiver) -> None:
    reply = receiver.send(
        build_frame("192B", message_type=NULL, sequence=0, key=KEYS["192B"]), KEYS["192B"], "192B"
    )

    assert (reply.kind, reply.encrypted) == ("ACK", True)
    assert receiver.events() == []


# --- retransmissions ----------------------------------------------------------------------------------------


def test_a_retransmitted_frame_whose_ack_was_lost_is_recorded_once(receiver: RunningReceiver) -> None:
    frame = build_frame("256C", "BA", "1", sequence=77, key=KEYS["256C"])
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(frame)  # and leave without reading the ACK: the panel never got it
    wait_until(receiver.events, timeout_s=10)

    again = receiver.send(frame, KEYS["256C"], "256C")

    assert again.kind == "ACK"
    assert len(receiver.events()) == 1
    assert len(receiver.published.actions) == 1  # the retransmission started nothing


def test_a_retransmission_the_panel_stamped_anew_is_recorded_once_and_acknowledged(
    receiver: RunningReceiver,
) -> None:
    """A panel that got no ACK sends the frame again under its sequence number with a fresh timestamp
    (a stamp older than the band would be refused): one event, and the retransmission is ACKed."""
    sent_at = datetime.now(UTC) - timedelta(seconds=20)
    first = build_frame("256C", "BA", "1", sequence=78, key=KEYS["256C"], timestamp=sent_at)
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(first)  # and leave without reading the ACK: the panel never got it
    wait_until(receiver.events, timeout_s=10)

    again = build_frame("256C", "BA", "1", sequence=78, key=KEYS["256C"], timestamp=datetime.now(UTC))
    answers = [receiver.send(again, KEYS["256C"], "256C").kind for _ in range(2)]

    assert answers == ["ACK", "ACK"]
    (event,) = receiver.events()
    assert event.occurred_at == sent_at.replace(microsecond=0)  # the first sending's, recorded once
    assert len(receiver.published.actions) == 1  # the retransmissions started nothing


def test_a_retransmission_stamped_anew_after_a_restart_of_the_receiver_is_recorded_once(
    receiver_settings: Settings, sites: Sites
) -> None:
    """The receiver's memory of recent frames dies with it; the ledger's window does not. A panel
    whose ACK was lost as the receiver restarted (a deploy) sends its frame again, re-stamped, to the
    new process: ACK, no second event, no second plan."""
    engine = make_engine(receiver_settings.database_url, pre_ping=False)
    sent_at = datetime.now(UTC) - timedelta(seconds=20)
    try:
        with running_receiver(receiver_settings, sites, engine) as before:
            first = before.send(
                build_frame("256C", "BA", "1", sequence=77, key=KEYS["256C"], timestamp=sent_at)
            )
        with running_receiver(receiver_settings, sites, engine) as after:
            again = build_frame("256C", "BA", "1", sequence=77, key=KEYS["256C"], timestamp=datetime.now(UTC))
            answer = after.send(again, KEYS["256C"], "256C")
            events = after.events()
            published = after.published.actions
    finally:
        engine.dispose()

    assert (first.kind, answer.kind) == ("ACK", "ACK")
    (event,) = events
    assert event.occurred_at == sent_at.replace(microsecond=0)
    assert published == []  # the new process started nothing


def test_a_frame_of_a_used_sequence_number_that_says_something_else_is_a_new_event(
    receiver: RunningReceiver,
) -> None:
    """A panel that restarted its numbering: the same sequence number, another event."""
    earlier = datetime.now(UTC) - timedelta(seconds=10)
    answers = [
        receiver.send(build_frame(PLAIN, "BA", "1", sequence=79, timestamp=earlier)).kind,
        receiver.send(build_frame(PLAIN, "BA", "2", sequence=79)).kind,
    ]

    assert answers == ["ACK", "ACK"]
    assert [(e.code, e.zone) for e in receiver.events()] == [("BA", "1"), ("BA", "2")]


def test_the_same_frame_after_the_dedupe_window_is_a_new_event(
    make_settings: Callable[..., Settings], database_url: str, sites: Sites
) -> None:
    settings = make_settings(
        database_url=database_url,
        sia_receiver_host="127.0.0.1",
        sia_receiver_port=free_port(),
        dedupe_window_s=1,
    )
    engine = make_engine(database_url, pre_ping=False)
    try:
        with running_receiver(settings, sites, engine) as running:
            first = running.send(build_frame(PLAIN, "BA", "1", sequence=80)).kind
            time.sleep(1.5)  # beyond the window; the next frame is stamped a second or more later
            again = running.send(build_frame(PLAIN, "BA", "1", sequence=80)).kind
            events = running.events()
    finally:
        engine.dispose()

    assert (first, again) == ("ACK", "ACK")
    assert [(e.code, e.zone) for e in events] == [("BA", "1"), ("BA", "1")]


def test_an_unstamped_retransmission_is_recorded_once_but_the_next_sequence_is_a_new_event(
    receiver: RunningReceiver,
) -> None:
    first = build_frame(PLAIN, "BA", "1", sequence=12, stamped=False)

    answers = [receiver.send(first).kind, receiver.send(first).kind]
    answers.append(receiver.send(build_frame(PLAIN, "BA", "1", sequence=13, stamped=False)).kind)

    assert answers == ["ACK", "ACK", "ACK"]
    assert len(receiver.events()) == 2


# --- refusals -----------------------------------------------------------------------------------------------


def corrupt_crc(raw: bytes) -> bytes:
    wrong = f"{(int(raw[1:5], 16) + 1) % 0x10000:04X}".encode()
    return b"\n" + wrong + raw[5:]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda: corrupt_crc(build_frame(PLAIN, "FA", "1")), "bad_crc", id="bad-crc"),
        pytest.param(lambda: build_frame("9999", "FA", "1"), "unknown_account", id="unknown-account"),
        pytest.param(
            lambda: build_frame("128A", "FA", "1", key=KEYS["128A"][::-1]), "decrypt_failed", id="wrong-key"
        ),
        pytest.param(
            lambda: build_frame(PLAIN, "FA", "1", timestamp=datetime.now(UTC).replace(year=2020)),
            "timestamp",
            id="stale-timestamp",
        ),
        pytest.param(lambda: build_frame("192B", "FA", "1"), "unencrypted", id="plain-from-a-keyed-account"),
    ],
)
def test_each_refused_frame_gets_the_standards_nak_and_records_nothing(
    receiver: RunningReceiver, make: Callable[[], bytes], reason: str
) -> None:
    refused_before = counted("refusals", reason=reason)
    failures_before = counted("decrypt_failures", source="acme-dc09")

    reply = receiver.send(make())

    assert (reply.kind, reply.crc_ok, reply.encrypted) == ("NAK", True, False)
    assert reply.text[8:].startswith('"NAK"0000R1L1A0[]_')
    assert reply.timestamp is not None  # the receiver's clock, for a panel to correct its own
    assert receiver.events() == []
    assert counts(refused_before + 1, "refusals", reason=reason)
    assert counted("decrypt_failures", source="acme-dc09") == failures_before + (reason == "decrypt_failed")


def _with_account(tmp_path: Path, account: str, key: bytes | None) -> Sites:
    """The fixture's sites with ``account`` on site hq too (with its own ``key``, when one)."""
    path = write_sites(tmp_path)
    path.write_text(path.read_text().replace('accounts = ["1234"', f'accounts = ["1234", "{account}"', 1))
    keys = SOURCE_ENV["ACME_DC09_KEYS"] + (f",{account}={key.hex()}" if key is not None else "")
    return load_sites(path, {**SOURCE_ENV, "ACME_DC09_KEYS": keys})


def test_an_encrypted_frame_whose_data_names_another_account_is_refused(
    receiver_settings: Settings, tmp_path: Path
) -> None:
    """The header's account is in clear: a frame captured from 128A and re-addressed to another account
    that its key decrypts (a shared key) would have been that account's alarm. Inside the encryption
    the data names the account it was sent for; when that is not the header's, the frame is NAKed."""
    key = bytes(range(16))
    engine = make_engine(receiver_settings.database_url, pre_ping=False)
    refused_before = counted("refusals", reason="account_mismatch")
    failures_before = counted("decrypt_failures", source="acme-dc09")
    try:
        with running_receiver(receiver_settings, _with_account(tmp_path, "5678", key), engine) as running:
            with capture_logs() as logs:
                reply = running.send(build_frame("5678", key=key, data="#128A|NOP1"), key, "5678")
            same = running.send(build_frame("5678", key=key, data="#5678|NOP1", sequence=2), key, "5678")
            events = [e.account for e in running.events()]
    finally:
        engine.dispose()

    assert (reply.kind, reply.crc_ok, reply.encrypted) == ("NAK", True, False)
    assert same.kind == "ACK"  # its own account, in either case, is the frame's
    assert events == ["5678"]
    assert counts(refused_before + 1, "refusals", reason="account_mismatch")
    assert counted("decrypt_failures", source="acme-dc09") == failures_before + 1  # as a wrong key is
    (warning,) = [line for line in logs if line["event"] == "receiver.refused"]
    assert (warning["reason"], warning["account"], warning["data_account"]) == (
        "account_mismatch",
        "5678",
        "128A",
    )


def test_a_plain_frame_whose_data_names_another_account_is_recorded_under_its_header_and_says_so(
    receiver: RunningReceiver,
) -> None:
    """Anyone can write both accounts of a plain frame: refusing it proves nothing and loses the alarm.
    It is recorded under the header's account, and the alarm's page shows the account the data named."""
    reply = receiver.send(build_frame(PLAIN, data="#5678|NBA03", sequence=31))

    assert reply.kind == "ACK"
    (event,) = receiver.events()
    assert (event.account, event.code, event.zone) == (PLAIN, "BA", "03")
    assert event.payload["dc09"]["data_account"] == "5678"
    with receiver.sessions() as session:
        page = alarm_page(session, event.alarm_id or 0)
    assert page is not None
    (shown,) = page["events"]
    assert shown["text"] == "the frame's data block names account 5678, its header 1234: recorded as 1234's"


def _without_header_account(raw: bytes, account: str) -> bytes:
    """``raw`` with no account in its header (``…L1[`` for ``…L1#<account>[``), its CRC and length anew."""
    body = raw.decode("ascii").strip()[8:].replace(f"#{account}[", "[", 1)
    return f"\n{frame_crc(body)}{len(body):04X}{body}\r".encode("ascii")


def test_a_plain_frame_without_a_header_account_is_routed_by_its_datas(receiver: RunningReceiver) -> None:
    """pysiaalarm's pattern makes the header's account optional and reads the data's; such a frame was
    NAKed unknown_account on every retry. An encrypted one needs its header's account (it picks the key)."""
    plain = _without_header_account(build_frame(PLAIN, "BA", "03", sequence=41, area="1"), PLAIN)
    assert b'"SIA-DCS"0041R1L1[#1234|Nri1/BA03]_' in plain
    encrypted = _without_header_account(build_frame("128A", "BA", "4", sequence=42, key=KEYS["128A"]), "128A")
    refused_before = counted("refusals", reason="unknown_account")

    answers = [receiver.send(plain), receiver.send(encrypted, KEYS["128A"], "128A")]

    assert [a.kind for a in answers] == ["ACK", "NAK"]
    assert answers[0].text.endswith(f'"ACK"0041R1L1#{PLAIN}[]')
    (event,) = receiver.events()
    assert (event.account, event.code, event.zone, event.site_key) == (PLAIN, "BA", "03", "hq")
    assert counts(refused_before + 1, "refusals", reason="unknown_account")


def test_a_frame_of_an_unsupported_id_token_is_answered_duh_and_logged_for_a_person(
    receiver: RunningReceiver,
) -> None:
    """A panel set to a protocol the receiver does not take: DUH (received, will not be processed),
    so it stops sending it; a NAK had it send the frame for ever. A warning names the account and token."""
    duh_before = counted("frames", response="duh", frame="unsupported")

    with capture_logs() as logs:
        reply = receiver.send(build_frame(PLAIN, message_type="XYZ-DATA", data=f"#{PLAIN}|?", sequence=5))

    assert (reply.kind, reply.crc_ok, reply.encrypted) == ("DUH", True, False)
    assert reply.text.endswith(f'"DUH"0005R1L1#{PLAIN}[]')
    assert receiver.events() == []
    assert counts(duh_before + 1, "frames", response="duh", frame="unsupported")
    (warning,) = [line for line in logs if line["event"] == "receiver.unsupported"]
    assert warning["log_level"] == "warning"
    assert (warning["account"], warning["token"], warning["source"]) == (PLAIN, "XYZ-DATA", "acme-dc09")
    # The same connection goes on with a frame the receiver takes.
    assert receiver.send(build_frame(PLAIN, "BA", "1", sequence=6)).kind == "ACK"


def test_garbage_and_an_endless_line_do_not_stop_the_listener(receiver: RunningReceiver) -> None:
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(b"\nGET / HTTP/1.1\r")
        assert read_reply(read_answer(sock)).kind == "NAK"
        sock.sendall(bytes(b for b in range(256) if b != 13) + b"\r")  # every byte but CR, then CR
        assert read_reply(read_answer(sock)).kind == "NAK"
        sock.sendall(build_frame(PLAIN, "BA", "1", sequence=1))  # the same connection goes on
        assert read_reply(read_answer(sock)).kind == "ACK"
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(b"\n" + b"9" * (MAX_FRAME_BYTES + 10))  # no CR in sight: answered and closed
        assert read_reply(read_answer(sock)).kind == "NAK"
        assert sock.recv(16) == b""

    assert receiver.send(build_frame(PLAIN, "BA", "2", sequence=2)).kind == "ACK"
    assert len(receiver.events()) == 2


def test_one_junk_datagram_neither_stalls_the_receiver_nor_is_amplified(
    make_settings: Callable[..., Settings], sqlite_url: str, sites: Sites
) -> None:
    """A datagram of 30,000 CR-ended pieces was 30,000 refusals in one task that never yielded: the
    loop froze for seconds (a fire alarm over TCP waited) and 30,000 NAKs went to an address anyone
    can forge. A datagram is one frame; one that is not DC-09 at all is counted and not answered."""
    settings = make_settings(
        database_url=sqlite_url, sia_receiver_host="127.0.0.1", sia_receiver_port=free_port()
    )
    engine = make_engine(sqlite_url)
    junk = b"x\r" * 30000
    received: list[int] = []
    try:
        with running_receiver(settings, sites, engine) as running:
            unreadable_before = counted("refusals", reason="unreadable")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", 0))
                udp.settimeout(2.0)

                def drain() -> None:
                    with contextlib.suppress(TimeoutError):
                        while True:
                            received.append(len(udp.recvfrom(65536)[0]))

                reader = threading.Thread(target=drain)
                reader.start()
                try:
                    udp.sendto(junk, ("127.0.0.1", running.port))
                    # Taken: the receiver is at it (or done) when the alarm comes.
                    wait_until(
                        lambda: counted("refusals", reason="unreadable") > unreadable_before, timeout_s=10
                    )
                    started = time.monotonic()
                    with socket.create_connection(("127.0.0.1", running.port), timeout=60) as sock:
                        sock.sendall(build_frame(PLAIN, "FA", "1", sequence=1))
                        answer = read_reply(read_answer(sock))
                    waited = time.monotonic() - started
                finally:
                    reader.join()
            refused = counted("refusals", reason="unreadable") - unreadable_before
    finally:
        engine.dispose()

    assert answer.kind == "ACK"
    assert waited < 2.0, f"the fire alarm waited {waited:.1f} s"
    assert received == []  # not DC-09 at all: no answer to an address that may be forged
    assert refused == 1  # one datagram, one frame, counted


def test_a_datagram_is_one_frame_and_gets_one_answer(receiver: RunningReceiver) -> None:
    """DC-09 sends a message per datagram: what follows its first frame is not read or answered."""
    first, second = build_frame(PLAIN, "BA", "1", sequence=21), build_frame(PLAIN, "BA", "2", sequence=22)
    refused = build_frame("9999", "FA", "1", sequence=23)  # an unknown account: a NAK, once
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(10)
        udp.sendto(first + second + b"x\r" * 100, ("127.0.0.1", receiver.port))
        answer = read_reply(udp.recvfrom(65536)[0])
        udp.sendto(refused + refused, ("127.0.0.1", receiver.port))
        nak = read_reply(udp.recvfrom(65536)[0])
        udp.settimeout(0.5)  # the second frame of either datagram would have been answered by now
        with pytest.raises(TimeoutError):
            udp.recvfrom(65536)

    assert (answer.kind, nak.kind) == ("ACK", "NAK")
    assert [(e.code, e.zone) for e in receiver.events()] == [("BA", "1")]


def test_over_udp_an_ack_always_goes_but_no_nak_longer_than_its_datagram(receiver: RunningReceiver) -> None:
    """A link test without a receiver number is answered with "R0" in it, 1 byte longer than itself:
    the ACK goes all the same (a committed frame, which the panel waits for). A NAK anyone can draw
    from a forged address is never longer than the datagram that drew it."""
    link = build_frame(PLAIN, message_type=NULL, stamped=False, receiver="")
    short_unknown = build_frame("9999", message_type=NULL, stamped=False, receiver="")
    unknown_before = counted("refusals", reason="unknown_account")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(10)
        udp.sendto(link, ("127.0.0.1", receiver.port))
        ack = udp.recvfrom(65536)[0]
        udp.sendto(short_unknown, ("127.0.0.1", receiver.port))
        assert counts(unknown_before + 1, "refusals", reason="unknown_account")
        udp.settimeout(0.5)
        with pytest.raises(TimeoutError):  # its NAK (47 bytes) would have been sent by now
            udp.recvfrom(65536)

    assert (read_reply(ack).kind, len(ack)) == ("ACK", len(link) + 1)
    assert len(short_unknown) < 47


def test_junk_on_one_connection_is_answered_and_counted_but_its_warnings_keep_to_a_budget(
    receiver: RunningReceiver,
) -> None:
    """Each refusal logged a warning: a sender could write log lines as fast as it wrote junk."""
    pieces = 300
    unreadable_before = counted("refusals", reason="unreadable")
    started = time.monotonic()
    with capture_logs() as logs, socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(b"x\r" * pieces)
        answers = b""
        while answers.count(b"\r") < pieces:
            chunk = sock.recv(65536)
            assert chunk, "closed early"
            answers += chunk
        assert counts(unreadable_before + pieces, "refusals", reason="unreadable")  # every one counted
    elapsed = time.monotonic() - started

    assert {read_reply(a).kind for a in answers.split(b"\r") if a} == {"NAK"}  # TCP: each one answered
    warned = [line for line in logs if line["event"] == "receiver.refused"]
    assert len(warned) <= LOG_BURST + elapsed / LOG_EVERY_S + 1, len(warned)
    assert len(warned) + sum(line.get("left_out", 0) for line in warned) <= pieces


def test_frames_with_a_wrong_length_field_keep_their_warnings_to_a_budget(receiver: RunningReceiver) -> None:
    """A wrong length field is read all the same (the CRC covers the frame) and logged for a person:
    a sender writing such frames, with a good CRC and an account nobody lists, wrote one line each."""
    pieces = 200
    raw = build_frame("9999", "BA", "3")
    wrong = raw[:5] + f"{int(raw[5:9], 16) + 1:04X}".encode() + raw[9:]
    started = time.monotonic()
    with capture_logs() as logs, socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(wrong * pieces)
        answers = b""
        while answers.count(b"\r") < pieces:
            chunk = sock.recv(65536)
            assert chunk, "closed early"
            answers += chunk
    elapsed = time.monotonic() - started

    assert {read_reply(a).kind for a in answers.split(b"\r") if a} == {"NAK"}  # unknown account
    warned = [line for line in logs if line["event"] == "receiver.length_mismatch"]
    assert 1 <= len(warned) <= LOG_BURST + elapsed / LOG_EVERY_S + 1, len(warned)
    assert len(warned) + sum(line.get("left_out", 0) for line in warned) <= pieces


def test_an_idle_connection_is_closed_after_the_idle_timeout(
    make_settings: Callable[..., Settings], sqlite_url: str, sites: Sites
) -> None:
    settings = make_settings(
        database_url=sqlite_url,
        sia_receiver_host="127.0.0.1",
        sia_receiver_port=free_port(),
        sia_receiver_idle_timeout_s=0.3,
    )
    engine = make_engine(sqlite_url)
    with (
        running_receiver(settings, sites, engine) as running,
        socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock,
    ):
        sock.sendall(b"\n0000")  # half a frame, then nothing
        assert sock.recv(16) == b""  # closed by the receiver (the 10 s socket timeout would raise)
    engine.dispose()


def test_blank_lines_do_not_hold_a_connection_open_but_answered_frames_do(
    make_settings: Callable[..., Settings], sqlite_url: str, sites: Sites
) -> None:
    """A bare CR is no frame: a sender writing one every so often is closed at the idle timeout, as a
    silent one is, while a panel whose frames are answered keeps its connection past it."""
    idle_s = 1.0
    settings = make_settings(
        database_url=sqlite_url,
        sia_receiver_host="127.0.0.1",
        sia_receiver_port=free_port(),
        sia_receiver_idle_timeout_s=idle_s,
    )
    engine = make_engine(sqlite_url)
    with (
        running_receiver(settings, sites, engine) as running,
        socket.create_connection(("127.0.0.1", running.port), timeout=10) as blank,
        socket.create_connection(("127.0.0.1", running.port), timeout=10) as panel,
    ):
        started = time.monotonic()
        closed_after: float | None = None
        sequence = 0
        while time.monotonic() - started < 3 * idle_s:
            if closed_after is None:
                if _closed_by_receiver(blank):
                    closed_after = time.monotonic() - started
                else:
                    with contextlib.suppress(OSError):  # closed between the check and the write
                        blank.sendall(b"\r" if sequence % 2 else b"\n\r")
            sequence += 1
            panel.sendall(build_frame(PLAIN, message_type=NULL, sequence=sequence))
            assert read_reply(read_answer(panel)).kind == "ACK"
            time.sleep(idle_s / 4)

        assert closed_after is not None, "blank lines held the connection past the idle timeout"
        assert closed_after < 2 * idle_s
        assert not _closed_by_receiver(panel)  # answered frames keep it open past three timeouts
    engine.dispose()


def test_connections_beyond_the_cap_are_closed_and_the_connected_panels_go_on(
    make_settings: Callable[..., Settings], sqlite_url: str, sites: Sites
) -> None:
    settings = make_settings(
        database_url=sqlite_url,
        sia_receiver_host="127.0.0.1",
        sia_receiver_port=free_port(),
        sia_receiver_max_connections=2,
    )
    refused_before = REGISTRY.get_sample_value("alarm_bridge_dc09_connections_refused_total") or 0.0
    engine = make_engine(sqlite_url)
    with running_receiver(settings, sites, engine) as running:
        first = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        second = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        first.sendall(build_frame(PLAIN, "BA", "1", sequence=1))  # both are being served
        assert read_reply(read_answer(first)).kind == "ACK"
        second.sendall(build_frame(PLAIN, "BA", "2", sequence=2))
        assert read_reply(read_answer(second)).kind == "ACK"
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as third:
            assert third.recv(16) == b""  # closed at once, before any frame
        first.sendall(build_frame(PLAIN, "BA", "3", sequence=3))  # the connected panels go on
        assert read_reply(read_answer(first)).kind == "ACK"
        second.close()
        wait_until(lambda: _accepted(running.port), timeout_s=10, interval_s=0.05)  # a slot is free again
        first.close()
    engine.dispose()
    assert (
        REGISTRY.get_sample_value("alarm_bridge_dc09_connections_refused_total") or 0.0
    ) >= refused_before + 1


def _idle_from(host: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(host, 0))


def _closed_by_receiver(sock: socket.socket) -> bool:
    """Whether the receiver closed ``sock`` (end of stream), without waiting: False while it is open."""
    readable, _, _ = io_select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(16, socket.MSG_PEEK) == b""
    except OSError:  # reset
        return True


def _closed(socks: list[socket.socket]) -> int:
    return sum(_closed_by_receiver(sock) for sock in socks)


def test_one_address_cannot_hold_every_slot(
    make_settings: Callable[..., Settings], sqlite_url: str, sites: Sites
) -> None:
    """At the cap, an address holding at least two fewer takes the place of the busiest address's
    longest-idle connection; when the slots are shared fairly, one more is refused as before."""
    settings = make_settings(
        database_url=sqlite_url,
        sia_receiver_host="127.0.0.1",
        sia_receiver_port=free_port(),
        sia_receiver_max_connections=4,
    )
    evicted_before = counted("connections_evicted")
    engine = make_engine(sqlite_url)
    with running_receiver(settings, sites, engine) as running:
        hog = [_idle_from("127.0.0.2", running.port) for _ in range(4)]  # every slot, from one address
        for sock in hog:
            sock.sendall(b"\n0000")  # half a frame: a slow or hostile sender

        panel = _idle_from("127.0.0.1", running.port)  # a panel: one of the hog's gives way
        panel.sendall(build_frame(PLAIN, "BA", "1", sequence=1))
        assert read_reply(read_answer(panel)).kind == "ACK"
        assert wait_until(lambda: _closed(hog) == 1, timeout_s=10, interval_s=0.02)
        with _idle_from("127.0.0.2", running.port) as more:  # the hog gets no slot back
            wait_until(lambda: _closed_by_receiver(more), timeout_s=10, interval_s=0.02)
        third = _idle_from("127.0.0.3", running.port)  # hog 3, panel 1: the hog gives way again
        third.sendall(build_frame(PLAIN, "BA", "2", sequence=2))
        assert read_reply(read_answer(third)).kind == "ACK"
        assert wait_until(lambda: _closed(hog) == 2, timeout_s=10, interval_s=0.02)
        fourth = _idle_from("127.0.0.4", running.port)  # hog 2, panel 1, third 1: and again
        fourth.sendall(build_frame(PLAIN, "BA", "3", sequence=3))
        assert read_reply(read_answer(fourth)).kind == "ACK"
        assert wait_until(lambda: _closed(hog) == 3, timeout_s=10, interval_s=0.02)
        # One each now: shared fairly, so a fifth address is refused and nobody is closed.
        with _idle_from("127.0.0.5", running.port) as fifth:
            wait_until(lambda: _closed_by_receiver(fifth), timeout_s=10, interval_s=0.02)
        for sock in (panel, third, fourth):
            sock.sendall(build_frame(PLAIN, "BA", "4", sequence=4))
            assert read_reply(read_answer(sock)).kind == "ACK"
        assert _closed(hog) == 3
        for sock in (*hog, panel, third, fourth):
            sock.close()
    engine.dispose()
    assert counted("connections_evicted") == evicted_before + 3


def _accepted(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(build_frame(PLAIN, "BA", "9", sequence=9))
            return read_reply(read_answer(sock)).kind == "ACK"
    except OSError:  # closed at once (still at the cap): not yet
        return False


def test_many_panels_connected_at_once_are_each_answered(receiver: RunningReceiver) -> None:
    panels = 100

    async def all_at_once() -> list[Reply]:
        # Every connection is open before any frame leaves; then every frame is in flight at once.
        streams = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", receiver.port) for _ in range(panels))
        )
        for zone, (_, writer) in enumerate(streams, start=1):
            writer.write(build_frame(PLAIN, "BA", str(zone), sequence=zone))
        answers = await asyncio.gather(
            *(asyncio.wait_for(reader.readuntil(b"\r"), timeout=60) for reader, _ in streams)
        )
        for _, writer in streams:
            writer.close()
        return [read_reply(answer) for answer in answers]

    replies = asyncio.run(all_at_once())

    assert [r.kind for r in replies] == ["ACK"] * panels
    assert sorted(int(e.zone or 0) for e in receiver.events()) == list(range(1, panels + 1))


# --- the ledger down ----------------------------------------------------------------------------------------


def _admin() -> psycopg.Connection[Any]:
    url = make_url(PG_ADMIN_URL)
    return psycopg.connect(
        host=url.host, port=url.port or 5432, user=url.username, dbname=url.database, autocommit=True
    )


def set_ledger_reachable(database_url: str, reachable: bool) -> None:
    """Open or shut the ledger's database: shut, every session is cut and no new one is let in."""
    name = make_url(database_url).database
    with _admin() as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if reachable else "false"}')
        if not reachable:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


def test_a_frame_is_refused_while_the_ledger_is_down_and_its_retry_accepted_after(
    make_settings: Callable[..., Settings], postgres_url: str, sites: Sites
) -> None:
    settings = make_settings(
        database_url=postgres_url, sia_receiver_host="127.0.0.1", sia_receiver_port=free_port()
    )
    engine = make_engine(postgres_url, pre_ping=False)
    frame = build_frame("128A", "FA", "6", sequence=31, key=KEYS["128A"])
    refused_before = counted("refusals", reason="ledger_unavailable")
    try:
        with running_receiver(settings, sites, engine) as running:
            assert (
                running.send(build_frame(PLAIN, "BA", "1", sequence=30)).kind == "ACK"
            )  # a pooled connection
            set_ledger_reachable(postgres_url, False)
            try:
                down = [running.send(frame, KEYS["128A"], "128A").kind for _ in range(2)]  # cut, then refused
            finally:
                set_ledger_reachable(postgres_url, True)
            # The panel sends the same frame again until it is acknowledged.
            retried = wait_until(
                lambda: running.send(frame, KEYS["128A"], "128A").kind == "ACK", timeout_s=30
            )
            events = running.events()
    finally:
        engine.dispose()

    assert down == ["NAK", "NAK"]
    assert retried
    assert [(e.account, e.code) for e in events] == [(PLAIN, "BA"), ("128A", "FA")]  # recorded once
    assert counted("refusals", reason="ledger_unavailable") >= refused_before + 2
