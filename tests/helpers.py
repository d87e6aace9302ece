"""Helpers every test file may import (`from helpers import ...`; pytest puts tests/ on sys.path).

One repository root, one reading of CI=true, one way to skip-or-fail on a missing prerequisite:
outside CI a missing prerequisite skips the test with the exact command that provides it; under
CI=true it fails the test, so a CI run can never pass by skipping what it exists to prove.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
BUILD_COMMAND = "hardway lab.binaries  (or: python -m hardway.binaries)"


def missing(what: str, command: str) -> None:
    """Skip (or, under CI=true, fail) because `what` is missing; `command` provides it."""
    message = f"{what}; provide it with: {command}"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def need_tool(tool: str, how: str) -> str:
    """The path of program `tool`, or skip-or-fail naming what provides it."""
    path = shutil.which(tool)
    if not path:
        missing(f"{tool} is not installed", how)
    return path


def need_namespaces() -> None:
    """Root, iproute2, unshare, and a kernel that lets us create a network namespace."""
    if os.geteuid() != 0:
        missing("the lab needs root (network namespaces, mounts)", "sudo -E python -m pytest ...")
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            missing(f"`{tool}` is not installed", f"apt-get install -y {package}")
    name = f"hwprobe-{uuid.uuid4().hex[:6]}"
    add = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    if add.returncode != 0:
        missing(f"`ip netns add` fails here ({add.stderr.strip()})",
                "run the tests as root on a kernel with network namespaces (a VM or a privileged container)")


def need_binaries(version: str, names=None) -> dict:
    from hardway import binaries as binaries_mod
    from hardway.lab.lab import LAB_BINARIES
    names = LAB_BINARIES if names is None else names
    found = binaries_mod.find_binaries(version)
    absent = [n for n in names if n not in found]
    if absent:
        missing(f"the {version} binaries {', '.join(absent)} are not built "
                f"(looked in $HARDWAY_BIN_DIR and {binaries_mod.cache_dir(version)})", BUILD_COMMAND)
    return found


def need_haproxy() -> None:
    if not (shutil.which("haproxy") or os.access("/usr/sbin/haproxy", os.X_OK)):
        missing("HAProxy is not installed", "apt-get update && apt-get install -y haproxy")


def need_sshd() -> str:
    """Debian's OpenSSH server and ssh-keygen (the deploy tests log into a real sshd)."""
    sshd = "/usr/sbin/sshd"
    if not os.access(sshd, os.X_OK):
        missing(f"{sshd} is not installed", "apt-get install -y openssh-server openssh-client")
    need_tool("ssh-keygen", "apt-get install -y openssh-client")
    return sshd


def need_fabric() -> None:
    try:
        import fabric  # noqa: F401
    except ImportError:
        missing("Fabric is not installed", "pip install -e '.[test]'  (or: pip install 'fabric==3.2.*')")


def session_processes(sid: int) -> list[int]:
    """The live (not zombie) processes of session `sid`: a killed run's pool workers show up here."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # fields: state ppid pgrp session
                found.append(int(entry.name))
    return found
