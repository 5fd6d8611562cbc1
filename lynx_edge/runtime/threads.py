"""How many threads llama.cpp should use right now.

llama.cpp's worker threads spin while they wait for each other. When another runnable thread
wants a core, a spinning worker burns its time slice waiting for a partner that is not
running, and decoding collapses. Measured on a 2-core laptop-class VM (SmolLM2-135M reasoner,
tokens/s): idle, 1 thread 38 and 2 threads 64; beside one CPU-bound process, 1 thread 34 and
2 threads 15 (OMP_WAIT_POLICY=PASSIVE: 43 idle, 33 busy); the terminal chat beside a niced
2-thread job stalled below 1 token/s with 2 threads.

So the default uses every physical core while nothing else wants one, and leaves the cores
that other threads are waiting for. The signal is demand, not use: runnable threads that are
not ours (the kernel's ``procs_running`` minus this process's running threads), averaged over
the last few checks — a niced job that our spinning threads starve still counts.
``--threads N`` fixes the count instead.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from pathlib import Path

CHECK_SECONDS = 0.5  # how often the machine is looked at
WINDOW = 4  # checks averaged
DEMAND = 0.35  # average runnable threads of others that count as wanting a core


def physical_cores() -> int:
    """Distinct (package, core) pairs on Linux; the logical count elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.cpu_count() or 1
    cores, package = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            package = value.strip()
        elif key == "core id":
            cores.add((package, value.strip()))
    return len(cores) or os.cpu_count() or 1


def threads_for(physical: int, others_runnable: float) -> int:
    """Every physical core but those other runnable threads want (at least one)."""
    wanted = math.floor(others_runnable + 1 - DEMAND) if others_runnable >= DEMAND else 0
    return max(1, physical - wanted)


class ThreadGovernor:
    """Follows what other threads want of the CPU and says how many threads to decode with."""

    def __init__(self, fixed: int | None = None) -> None:
        self.fixed = fixed
        self.physical = physical_cores()
        self.seen: deque[int] = deque(maxlen=WINDOW)
        self._checked = 0.0
        self.current = fixed or threads_for(self.physical, others_runnable() or 0)

    def advise(self) -> int:
        """The thread count for the next decodes (looked at again every CHECK_SECONDS)."""
        if self.fixed or time.monotonic() - self._checked < CHECK_SECONDS:
            return self.current
        self._checked = time.monotonic()
        others = others_runnable()
        if others is not None:
            self.seen.append(others)
            self.current = threads_for(self.physical, sum(self.seen) / len(self.seen))
        return self.current


def others_runnable() -> int | None:
    """Runnable threads on the machine that are not this process's (None off Linux)."""
    try:
        stat = Path("/proc/stat").read_text()
        running = int(stat.split("procs_running", 1)[1].split()[0])
        ours = 0
        for task in Path("/proc/self/task").iterdir():
            try:
                ours += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:
                continue
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - ours)
