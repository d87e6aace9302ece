"""Start, watch and stop the lab's processes by PID.

Each process gets a log file and a PID file. A PID alone can be reused by the kernel once the
process is gone, so each record also keeps the process's start time (/proc/<pid>/stat, field 22):
a PID whose start time differs is someone else's process and is never signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Process:
    node: str
    unit: str  # e.g. etcd.service
    pid: int
    start_time: int  # clock ticks after boot, from /proc/<pid>/stat
    log: str
    pid_file: str
    argv: list[str]
    stage: int = 0  # start order across nodes; stopped in reverse

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Process":
        return cls(**d)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a PID, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


# Children started by this Python process: polling them reaps them once they exit.
_children: dict[int, subprocess.Popen] = {}


def _reap(pid: int) -> None:
    """Collect our own exited child, so it does not linger as a zombie."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _children[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def start(node: str, unit: str, argv: list[str], env: dict[str, str], log: Path, pid_file: Path,
          stage: int = 0) -> Process:
    """Start `argv` detached from our terminal and session, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"--- hardway lab: starting {unit} on {node} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        out.flush()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True, close_fds=True)
    _children[child.pid] = child
    stat = _stat(child.pid)
    start_time = stat[1] if stat else 0
    pid_file.write_text(f"{child.pid}\n")
    return Process(node, unit, child.pid, start_time, str(log), str(pid_file), list(argv), stage)


def alive(proc: Process) -> bool:
    stat = _stat(proc.pid)
    if stat is None or stat[1] != proc.start_time:
        return False
    if stat[0] in ("Z", "X"):
        _reap(proc.pid)
        return False
    return True


def signal_if_ours(proc: Process, sig: int) -> bool:
    if not alive(proc):
        return False
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_gone(procs: list[Process], timeout: float) -> list[Process]:
    """Wait until these processes have exited; return those still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    left = [p for p in procs if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


def stop(procs: list[Process], grace: float = 10.0) -> list[str]:
    """SIGTERM every process, SIGKILL what is left after `grace` seconds; remove PID files.
    Returns a line per process that had to be killed or could not be stopped."""
    report = []
    for p in procs:
        signal_if_ours(p, signal.SIGTERM)
    stubborn = wait_gone(procs, grace)
    for p in stubborn:
        signal_if_ours(p, signal.SIGKILL)
        report.append(f"{p.node}/{p.unit} (pid {p.pid}) ignored SIGTERM for {grace:.0f}s: killed")
    for p in wait_gone(stubborn, 5.0):
        report.append(f"{p.node}/{p.unit} (pid {p.pid}) is still running after SIGKILL")
    for p in procs:
        _reap(p.pid)
        Path(p.pid_file).unlink(missing_ok=True)
    return report


def kill_pids(pids: list[int], grace: float = 5.0) -> None:
    """Stop processes known only by PID (those found inside a lab namespace)."""
    recs = []
    for pid in pids:
        stat = _stat(pid)
        if stat:
            recs.append(Process("?", "?", pid, stat[1], "", "", []))
    for r in recs:
        signal_if_ours(r, signal.SIGTERM)
    for r in wait_gone(recs, grace):
        signal_if_ours(r, signal.SIGKILL)
    wait_gone(recs, 5.0)
    for r in recs:
        _reap(r.pid)


def log_tail(path: str | Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:])
