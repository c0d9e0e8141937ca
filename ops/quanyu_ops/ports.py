"""Which of the ports a service is about to listen on are taken already, and by which process.

`quanyu up` asks before it starts anything: a platform already running answers the health checks
of the new one, whose processes then fail to bind, over and over. The owner of a port is read
from /proc (Linux); elsewhere, or for another user's process, the port is still named as taken.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# The state of a listening socket in /proc/net/tcp.
_LISTEN = "0A"


@dataclass(frozen=True)
class TakenPort:
    service: str
    kind: str  # "gRPC", "metrics", "health"
    port: int
    pid: int | None = None
    command: str = ""

    def describe(self) -> str:
        owner = f"pid {self.pid} ({self.command})" if self.pid else "another process (not found in /proc)"
        return f"port {self.port} ({self.service} {self.kind}) is taken by {owner}"


def is_taken(host: str, port: int) -> bool:
    """Whether binding `host:port` fails because something is bound there already."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As a server binds: a port left in TIME_WAIT by a process that ended is free to take.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def listening_inodes(port: int, proc: Path = PROC) -> set[str]:
    """The socket inodes listening on `port`, from /proc/net/tcp and tcp6."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def owner_of(port: int, proc: Path = PROC) -> tuple[int, str] | None:
    """(pid, command line) of a process holding a socket listening on `port`, when /proc shows it."""
    inodes = listening_inodes(port, proc)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                link = descriptor.readlink()
            except OSError:
                continue
            if str(link) in wanted:
                return int(entry.name), _command_line(entry)
    return None


def _command_line(process: Path) -> str:
    try:
        raw = (process / "cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part) or "?"


def taken_ports(host: str, wanted: Iterable[tuple[str, str, int]]) -> list[TakenPort]:
    """Of (service, kind, port), those a process already holds, each with its owner when found."""
    taken = []
    for service, kind, port in wanted:
        if port <= 0 or not is_taken(host, port):
            continue
        owner = owner_of(port)
        pid, command = owner if owner else (None, "")
        taken.append(TakenPort(service, kind, port, pid, command))
    return taken
