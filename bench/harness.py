"""What every benchmark over gRPC shares: a server process waited for and stopped, and a
phase of calls made back to back from a few threads and tallied."""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from quanyu_ops.supervisor import is_serving, terminate

# How long one call may take before it counts as failed (DEADLINE_EXCEEDED).
CALL_TIMEOUT_S = 30.0
# Answers that are correct refusals (no store can serve, not enough points), not failures.
REFUSALS = frozenset({grpc.StatusCode.FAILED_PRECONDITION})


def wait_serving(address: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until `address` answers SERVING; RuntimeError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{address}: the process exited with {process.returncode} before serving")
        if is_serving(address):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{address} was not serving within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL if it has not ended within 30 s."""
    terminate(process, timeout=30)


def cpu_seconds(pid: int) -> float:
    """CPU time, user and system, that a process (all its threads) has used so far."""
    # Past the command name in parentheses, utime and stime are the 12th and 13th fields.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(all, not busy) clock ticks of every core so far, from /proc/stat."""
    # user nice system idle iowait irq softirq steal; guest time is inside user and nice already.
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks), ticks[3] + ticks[4] + ticks[7]  # idle, waiting on I/O, taken by the host


@dataclass
class Tally:
    """One phase of calls: latencies of the answered ones, correct refusals, other errors by code."""

    latencies_ns: list[int] = field(default_factory=list)
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    server_cpu_s: float = math.nan  # CPU the server process used meanwhile, when it was watched
    machine_busy: float = math.nan  # share of all the machine's cores busy meanwhile (0-1)

    @property
    def calls(self) -> int:
        """Calls answered: served, or refused as the contract says."""
        return len(self.latencies_ns)

    @property
    def server_cpu_ms_per_call(self) -> float:
        """The server's CPU per answered call: what a call costs it, whatever the client's share."""
        return 1000 * self.server_cpu_s / self.calls if self.calls else math.nan

    @property
    def server_cores(self) -> float:
        """How many cores the server kept busy: a Python process serves on about one at most."""
        return self.server_cpu_s / self.seconds if self.seconds else math.nan

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ns:
            return math.nan
        ordered = sorted(self.latencies_ns)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[index] / 1e6

    def add(self, other: Tally) -> None:
        self.latencies_ns += other.latencies_ns
        self.refused += other.refused
        for code, count in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + count


def hammer(
    call: Callable[[int, int], None],
    concurrency: int,
    seconds: float,
    *,
    refusals: Collection[grpc.StatusCode] = REFUSALS,
    server_pid: int | None = None,
) -> Tally:
    """`concurrency` threads calling back to back for `seconds`, each call given (thread, sequence).

    A call answered with one of `refusals` counts as answered (and refused); any other error is
    counted by its code and not timed. With `server_pid`, the CPU that process used meanwhile is
    read from /proc.
    """
    tallies = [Tally() for _ in range(concurrency)]
    deadline = time.perf_counter() + seconds

    def worker(number: int) -> None:
        tally = tallies[number]
        sequence = 0
        while time.perf_counter() < deadline:
            sequence += 1
            started = time.perf_counter_ns()
            try:
                call(number, sequence)
            except grpc.RpcError as error:
                code = error.code()
                if code not in refusals:
                    tally.errors[code.name] = tally.errors.get(code.name, 0) + 1
                    continue
                tally.refused += 1
            tally.latencies_ns.append(time.perf_counter_ns() - started)

    cpu_before = cpu_seconds(server_pid) if server_pid is not None else math.nan
    machine_before = machine_ticks()
    begun = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        # Every call has its own deadline, so a worker ends soon after the phase does.
        thread.join(timeout=seconds + CALL_TIMEOUT_S + 10)
    total = Tally(seconds=time.perf_counter() - begun)
    machine_after = machine_ticks()
    all_ticks = machine_after[0] - machine_before[0]
    if all_ticks:
        total.machine_busy = 1 - (machine_after[1] - machine_before[1]) / all_ticks
    if server_pid is not None:
        total.server_cpu_s = cpu_seconds(server_pid) - cpu_before
    for tally in tallies:
        total.add(tally)
    return total
