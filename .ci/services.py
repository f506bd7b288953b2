"""Make sure the services the test suite talks to answer: Redis and PostgreSQL on loopback.

Starts a local one when it is installed but stopped. Under CI (CI=true) a service that still does
not answer fails the run; locally the suite runs and the tests that need it are skipped, said plainly.
Also creates the suite's admin database (each test then gets its own database from a template).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from urllib.parse import unquote, urlsplit

# The same services, and the same defaults, as tests/conftest.py: TEST_REDIS_URL and TEST_PG_ADMIN_URL.
_REDIS = urlsplit(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
_PG = urlsplit(
    os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/alarm_bridge_test")
)
REDIS_HOST, REDIS_PORT = _REDIS.hostname or "127.0.0.1", _REDIS.port or 6379
PG_HOST, PG_PORT = _PG.hostname or "127.0.0.1", _PG.port or 5432
PG_USER = unquote(_PG.username or "postgres")
PG_PASSWORD = unquote(_PG.password) if _PG.password else None
TEST_DB = unquote(_PG.path.lstrip("/")) or "alarm_bridge_test"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(host: str, port: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(host, port):
            return True
        time.sleep(0.2)
    return False


def start_redis() -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        return
    print(f"services: starting redis-server on {REDIS_PORT}")
    subprocess.run(
        [binary, "--daemonize", "yes", "--bind", REDIS_HOST, "--port", str(REDIS_PORT),
         "--save", "", "--appendonly", "no"],
        check=False,
    )  # fmt: skip


def start_postgres() -> None:
    if shutil.which("pg_ctlcluster"):
        for version_dir in sorted(glob.glob("/etc/postgresql/*")):
            version = os.path.basename(version_dir)
            print(f"services: starting PostgreSQL {version}/main")
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False
            )
        return
    if shutil.which("pg_ctl") and os.environ.get("PGDATA"):
        print("services: starting PostgreSQL with pg_ctl")
        subprocess.run(
            ["pg_ctl", "start", "-w", "-l", os.path.join(os.environ["PGDATA"], "ci.log")], check=False
        )


def ensure(name: str, host: str, port: int, start: object) -> bool:
    if answers(host, port):
        print(f"services: {name} answers on {host}:{port}")
        return True
    if host in LOOPBACK:  # a server elsewhere (a CI service container) is not ours to start
        start()  # type: ignore[operator]
    if wait_for(host, port):
        print(f"services: {name} started on {host}:{port}")
        return True
    message = f"services: {name} does not answer on {host}:{port} and could not be started"
    if CI:
        print(f"{message} (CI=true: failing)", file=sys.stderr)
        sys.exit(1)
    print(f"{message}; the tests that need it will be SKIPPED", file=sys.stderr)
    return False


def create_test_database() -> None:
    import psycopg

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEST_DB,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{TEST_DB}"')
            print(f"services: created database {TEST_DB}")


def main() -> None:
    ensure("Redis", REDIS_HOST, REDIS_PORT, start_redis)
    if ensure("PostgreSQL", PG_HOST, PG_PORT, start_postgres):
        try:
            create_test_database()
        except Exception as exc:  # noqa: BLE001 - report any connection problem in one line
            message = f"services: cannot create {TEST_DB} as {PG_USER}: {exc}"
            print(message, file=sys.stderr)
            if CI:
                sys.exit(1)


if __name__ == "__main__":
    main()
