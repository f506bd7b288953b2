"""Start the simulators: each on its own server (tests), or all under one port by prefix (the CLI).

The simulators are the folders `sandbox.registry.find_simulators` finds: each declares `SIMULATOR`, whose
`create_app(config=None, clock=None) -> Flask` gets the whole loaded configuration. `build_apps` creates
the ones asked for (in key order), `combined_app` mounts each under `/<name>` — so the CAD is
`http://127.0.0.1:8100/cad/api/v1/external/incident` and its control API
`http://127.0.0.1:8100/cad/_sandbox/journal` — and `serve_in_thread` runs any WSGI app on a threaded
werkzeug server in the background (port 0 = a free port chosen by the OS), which is how tests and
`alarm-bridge dev` start them. `main` is the command line (`python -m sandbox`, `alarm-bridge sandbox`);
a simulator's own options (Alta's `--alta-webhook-base-url`) come from its `add_arguments` and
`configure`, so the core names no vendor.

The werkzeug server is used, not gunicorn, because the drop and timeout faults need the raw client
socket, which werkzeug hands to the app as `environ["werkzeug.socket"]`.
"""

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Self
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from sandbox.clock import Clock
from sandbox.config import load_config
from sandbox.registry import Simulator, find_simulators

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8100


def build_apps(
    config: dict[str, Any] | None = None, only: Iterable[str] | None = None, clock: Clock | None = None
) -> dict[str, Flask]:
    """Create the simulators named in `only` (default: all), in key order.

    Args:
        config: the whole loaded configuration; None = the packaged default.
        only: simulator names; an unknown name is a ValueError.
        clock: one clock for all of them (the command line shares one), None = one each.
    """
    simulators = find_simulators()
    config = config if config is not None else load_config()
    wanted = set(simulators) if only is None else set(only)
    unknown = sorted(wanted - set(simulators))
    if unknown:
        raise ValueError(f"unknown simulator(s) {', '.join(unknown)}; known: {', '.join(simulators)}")
    return {
        name: simulator.create_app(config=config, clock=clock)
        for name, simulator in simulators.items()
        if name in wanted
    }


def combined_app(apps: dict[str, Flask]) -> WSGIApplication:
    """One WSGI app with each simulator under `/<name>`; `/` lists the mounted simulators as JSON."""

    def index(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        if request.path != "/":
            response = Response('{"error": "no simulator here"}', status=404, mimetype="application/json")
        else:
            prefix = request.script_root
            response = Response(
                json.dumps({name: f"{prefix}/{name}" for name in apps}), mimetype="application/json"
            )
        return response(environ, start_response)

    return DispatcherMiddleware(index, {f"/{name}": app for name, app in apps.items()})


class _QuietRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without the per-request access log line (tests start many servers)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


@dataclass
class RunningServer:
    """A werkzeug server running in a daemon thread; stop it with `stop()` or a `with` block."""

    server: BaseWSGIServer
    thread: threading.Thread
    host: str

    @property
    def port(self) -> int:
        """The bound port (the OS's choice when started with port 0)."""
        return self.server.server_port

    @property
    def base_url(self) -> str:
        """`http://host:port`, without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop accepting requests, wait for the serving loop to end and close the listening socket."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_in_thread(
    wsgi_app: WSGIApplication, host: str = DEFAULT_HOST, port: int = 0, *, log_requests: bool = False
) -> RunningServer:
    """Serve a WSGI app (one simulator or `combined_app`) on a threaded werkzeug server in the background."""
    handler = WSGIRequestHandler if log_requests else _QuietRequestHandler
    server = make_server(host, port, wsgi_app, threaded=True, request_handler=handler)
    # A short poll interval: `stop()` waits up to one interval for the serving loop to notice.
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"sandbox-{server.server_port}",
        daemon=True,
    )
    thread.start()
    return RunningServer(server=server, thread=thread, host=host)


def main(argv: list[str] | None = None) -> int:
    """Command line: start the simulators under one port, print their base URLs, serve until Ctrl-C."""
    simulators = find_simulators()
    parser = argparse.ArgumentParser(prog="alarm-bridge sandbox", description="Run the vendor simulators.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)"
    )
    parser.add_argument("--config", metavar="PATH", help="TOML file; its vendor tables replace the defaults")
    parser.add_argument(
        "--only", metavar="NAME[,NAME]", help=f"start only these simulators ({', '.join(simulators)})"
    )
    parser.add_argument("--log-requests", action="store_true", help="print one line per request")
    for simulator in simulators.values():
        if simulator.add_arguments is not None:
            simulator.add_arguments(parser)
    args = parser.parse_args(argv)

    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    try:
        apps = build_apps(load_config(args.config), only=only, clock=Clock())
    except (OSError, ValueError) as exc:  # a missing/invalid config file, an unknown name
        sys.stderr.write(f"alarm-bridge sandbox: {exc}\n")
        return 2
    if not apps:
        sys.stderr.write("alarm-bridge sandbox: no simulator selected\n")
        return 2
    _configure(simulators, apps, args)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Ctrl-C and SIGTERM both end the wait. SIGINT gets an explicit handler too, because a process
    # started in the background by a shell inherits SIGINT as *ignored* and would never see Ctrl-C.
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _serve_until_stopped(apps, args.host, args.port, args.log_requests, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _configure(simulators: dict[str, Simulator], apps: dict[str, Flask], args: argparse.Namespace) -> None:
    """Hand each started simulator the parsed command line, for the options it added."""
    for name, app in apps.items():
        configure = simulators[name].configure
        if configure is not None:
            configure(app, args)


def _serve_until_stopped(
    apps: dict[str, Flask], host: str, port: int, log_requests: bool, stop: threading.Event
) -> int:
    try:
        running = serve_in_thread(combined_app(apps), host, port, log_requests=log_requests)
    except SystemExit:  # werkzeug has already said why (e.g. the port is in use)
        return 1
    try:
        width = max(len(name) for name in apps)
        for name in apps:
            sys.stdout.write(f"{name:<{width}}  {running.base_url}/{name}\n")
        sys.stdout.write("control API: <base URL>/_sandbox/ (journal, faults, reset, clock); Ctrl-C stops\n")
        sys.stdout.flush()
        stop.wait()
    except KeyboardInterrupt:  # only if SIGINT arrived before our handler was installed
        pass
    finally:
        running.stop()
    return 0
