"""Test hosts on one machine: Linux network namespaces joined by veth pairs to a bridge; a process
runs "on" a host by ``Lab.exec_argv`` (``ip netns exec``), started with tests/processes.py.

A ``Lab`` makes a services namespace holding a bridge, one namespace per host with a veth pair into
that bridge, and one more veth pair from the test's own namespace into it, so that the test reaches
every host. All addresses are in one private /24 that no route of the machine already covers; all
traffic stays on this machine. ``cut(host)`` takes a host's link down: its established connections
hang, new ones fail, exactly as when a machine's network goes away.

Everything made is undone by ``close()``, which never raises: the namespaces (their veths go with
them), then the test's own veth. The processes on the hosts are stopped before it, by their owner.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"


class LabUnavailableError(Exception):
    """Network namespaces (or a tool they need) cannot be had here; the message says why."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; a failure raises with ip's own message."""
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that overlaps no address or route of this namespace."""
    taken = []
    for line in (
        ip("-4", "-o", "addr", "show").stdout.splitlines() + ip("-4", "route", "show").stdout.splitlines()
    ):
        for word in line.split():
            with contextlib.suppress(ValueError):
                if "/" in word or word[0].isdigit():
                    network = ipaddress.ip_network(word, strict=False)
                    if network.prefixlen > 0:
                        taken.append(network)
    for _ in range(200):
        candidate = ipaddress.ip_network(f"10.{secrets.randbelow(55) + 200}.{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise LabUnavailableError("no free private /24 for the test hosts")


@dataclass
class Host:
    """One test host: its namespace, its address, and its end of the link to the bridge."""

    ns: str
    address: str
    link: str  # the host-side veth, inside ``ns``


@dataclass
class Lab:
    """Namespaces joined by a bridge that lives in the services namespace."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: ipaddress.IPv4Network | None = None
    services: Host | None = None
    hosts: dict[str, Host] = field(default_factory=dict)
    own_link: str | None = None
    own_address: str | None = None
    _made: list[str] = field(default_factory=list)

    def open(self, host_names: Sequence[str]) -> Lab:
        """Make the services namespace, its bridge, one namespace per name, and the test's own link."""
        if not Path(IP).exists():
            raise LabUnavailableError(f"{IP} not found (Debian's iproute2 provides it)")
        self.subnet = _free_subnet()
        addresses = [str(a) for a in self.subnet.hosts()]
        services_ns = f"abS-{self.tag}"
        self._add_ns(services_ns)
        ip("-n", services_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", services_ns, "addr", "add", f"{addresses[0]}/24", "dev", "br0")
        ip("-n", services_ns, "link", "set", "br0", "up")
        self.services = Host(services_ns, addresses[0], "br0")
        for index, name in enumerate(host_names, start=1):
            ns = f"ab{name}-{self.tag}"
            self._add_ns(ns)
            inner, outer = f"ab{self.tag}{name}0", f"ab{self.tag}{name}1"
            ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            ip("link", "set", inner, "netns", ns)
            ip("link", "set", outer, "netns", services_ns)
            ip("-n", services_ns, "link", "set", outer, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addresses[index]}/24", "dev", inner)
            ip("-n", ns, "link", "set", inner, "up")
            self.hosts[name] = Host(ns, addresses[index], inner)
        # The test process's own way in: a veth from this namespace to the bridge.
        mine, theirs = f"ab{self.tag}t0", f"ab{self.tag}t1"
        ip("link", "add", mine, "type", "veth", "peer", "name", theirs)
        self.own_link = mine
        ip("link", "set", theirs, "netns", services_ns)
        ip("-n", services_ns, "link", "set", theirs, "master", "br0", "up")
        self.own_address = addresses[-1]
        ip("addr", "add", f"{self.own_address}/24", "dev", mine)
        ip("link", "set", mine, "up")
        return self

    def _add_ns(self, ns: str) -> None:
        done = ip("netns", "add", ns, check=False)
        if done.returncode != 0:
            raise LabUnavailableError(f"`ip netns add` failed: {done.stderr.strip()}")
        self._made.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")

    def exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside namespace ``ns``."""
        return [IP, "netns", "exec", ns, *argv]

    def cut(self, name: str) -> None:
        """Take a host's link down: it can reach nothing and nothing can reach it."""
        host = self.hosts[name]
        ip("-n", host.ns, "link", "set", host.link, "down")

    def close(self) -> list[str]:
        """Remove every namespace and link made; returns what could not be removed (never raises)."""
        left = []
        for ns in reversed(self._made):
            done = ip("netns", "del", ns, check=False)
            if done.returncode != 0:
                left.append(f"netns {ns}: {done.stderr.strip()}")
        self._made.clear()
        if self.own_link is not None:
            # Deleting the services namespace took the peer, and so this end, with it; make sure.
            if ip("link", "show", self.own_link, check=False).returncode == 0:
                ip("link", "del", self.own_link, check=False)
            self.own_link = None
        return left


def probe_lab() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if not Path(IP).exists():
        return f"{IP} not found (Debian's iproute2 provides it)"
    name = f"abprobe-{secrets.token_hex(3)}"
    done = ip("netns", "add", name, check=False)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip() or done.returncode}"
    ip("netns", "del", name, check=False)
    return None
