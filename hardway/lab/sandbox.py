"""Run a program as if on a node: in the node's network namespace, with the node's files at the
paths the units name, the lab's /etc/hosts and the node's hostname.

Everything happens in a private mount and UTS namespace that dies with the program:

    ip netns exec <ns> unshare --mount --uts --propagation private sh -c '<script>' sh <argv...>

The script mounts a tmpfs on a scratch directory of the lab, lays a throw-away overlay (upper dir on
that tmpfs) over the nearest existing parent of any mount point missing on the host, so it can
create it there, then bind-mounts the node's installed directories over their install paths. The
host's own /etc, /var/lib, ... are never written to, and nothing is left mounted afterwards.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from .netns import LabError

# Top-level trees whose second (or, under /var, third) component is one component's own directory:
# /etc/kubernetes, /etc/haproxy, /var/lib/etcd, /var/log/kubernetes, /run/haproxy, /opt/cni.
_MOUNT_DEPTH = {"etc": 2, "run": 2, "opt": 2, "srv": 2, "var": 3}
# Never mounted over: systemd units are read by the lab itself, binaries come from the cache.
_SKIP = ("/etc/systemd", "/usr")

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Sandbox:
    netns: str
    hostname: str
    hosts_file: Path
    scratch: Path  # an empty directory of the lab; a tmpfs is mounted on it inside the namespace
    binds: tuple[tuple[Path, str], ...] = ()  # (directory or file on the host, path on the node)
    setup: tuple[str, ...] = ()  # more shell lines, run after the mounts (a worker's cgroups, lab overlays)

    def command(self, argv: Iterable[str], workdir: str | None = None,
                exists: Callable[[str], bool] = os.path.lexists) -> list[str]:
        """The host command line that runs `argv` inside this sandbox."""
        return ["ip", "netns", "exec", self.netns,
                "unshare", "--mount", "--uts", "--propagation", "private",
                "sh", "-c", self.script(workdir, exists), "sh", *argv]

    def script(self, workdir: str | None = None, exists: Callable[[str], bool] = os.path.lexists) -> str:
        q = shlex.quote
        lines = ["set -e", f"mount -t tmpfs -o mode=0700 hardway-lab {q(str(self.scratch))}"]
        parents = overlay_parents([t for _, t in self.binds], exists)
        for path in [self.scratch, self.hosts_file, *(s for s, _ in self.binds)]:
            for parent in parents:
                if str(path).startswith(parent.rstrip("/") + "/"):
                    raise LabError(f"the lab directory cannot live under {parent}, which the lab overlays "
                                   f"inside its namespaces ({path}); choose another --lab-dir")
        for i, parent in enumerate(parents):
            upper, work = f"{self.scratch}/o{i}/upper", f"{self.scratch}/o{i}/work"
            lines.append(f"mkdir -p {q(upper)} {q(work)}")
            lines.append(f"mount -t overlay hardway-lab -o lowerdir={parent},upperdir={upper},workdir={work} {q(parent)}")
        for source, target in self.binds:
            make = "mkdir -p" if Path(source).is_dir() else "touch"
            lines.append(f"[ -e {q(target)} ] || {make} {q(target)}")
            lines.append(f"mount --bind {q(str(source))} {q(target)}")
        lines.append(f"mount --bind {q(str(self.hosts_file))} /etc/hosts")
        lines.append(f"echo {q(self.hostname)} > /proc/sys/kernel/hostname")
        lines.extend(self.setup)
        if workdir:
            lines.append(f"cd {q(workdir)}")
        lines.append('exec "$@"')
        return "\n".join(lines)


def overlay_parents(targets: list[str], exists: Callable[[str], bool]) -> list[str]:
    """For each mount point missing on the host, its nearest existing ancestor; outermost first.

    Overlaying `/` itself is refused: that would hide the whole host file system."""
    parents: set[str] = set()
    for target in targets:
        if exists(target):
            continue
        parent = PurePosixPath(target).parent
        while not exists(str(parent)):
            parent = parent.parent
        if str(parent) == "/":
            raise LabError(f"cannot create the mount point {target} in the lab: its parent directory "
                           f"{PurePosixPath(target).parts[1]} does not exist on this machine")
        parents.add(str(parent))
    # Keep only the outermost: an overlay on /var/lib already lets /var/lib/x/y be created.
    outer = sorted(p for p in parents if not any(p != o and p.startswith(o.rstrip("/") + "/") for o in parents))
    for p in outer:
        if any(c in p for c in ",:=\\ "):
            raise LabError(f"cannot overlay {p}: the path holds a character overlayfs options cannot carry")
    return outer


def mount_root(path: str) -> str | None:
    """The directory (or file) of a node path the lab bind-mounts: /etc/kubernetes for
    /etc/kubernetes/pki/ca.crt, /var/lib/etcd for itself. None for paths the lab never mounts."""
    if any(path == s or path.startswith(s + "/") for s in _SKIP):
        return None
    parts = PurePosixPath(path).parts  # ('/', 'etc', 'kubernetes', ...)
    depth = _MOUNT_DEPTH.get(parts[1]) if len(parts) > 1 else None
    if depth is None:
        return None
    return str(PurePosixPath(*parts[: depth + 1]))


def mount_roots(paths: Iterable[str]) -> list[str]:
    """The distinct mount roots of these node paths, none inside another, sorted."""
    roots = {r for r in (mount_root(p) for p in paths) if r}
    return sorted(r for r in roots if not any(r != o and r.startswith(o + "/") for o in roots))
