"""Every path a node's files name must exist on that node once its bundle is installed.

Units, configs and kubeconfigs are scanned for absolute paths in the trees hardway manages (the
table below). Each such path must be a file of the same bundle, a directory its install.sh creates
(or one holding its files), a path inside a created directory that holds no planned file (state the
component makes at run time: /var/lib/etcd/...), or a binary (or binary directory) its INSTALL.md
tells the operator to install.
Paths elsewhere (/usr/sbin, /run, /proc, ...) belong to the OS and its packages and are not judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

# The trees whose contents hardway provides: a reference into one of them is a promise the bundle
# must keep. Extend this table when a template starts using a new tree.
MANAGED = (
    "/etc/kubernetes",
    "/etc/etcd",
    "/etc/cni",
    "/etc/containerd",
    "/etc/haproxy",
    "/opt/cni",
    "/usr/local/bin",
    "/var/lib/etcd",
    "/var/lib/kubernetes",
    "/var/lib/kubelet",
    "/var/lib/kube-proxy",
    "/var/log/kubernetes",
)
# Files that only carry key material are not scanned (their base64 could look like anything).
SKIP_SUFFIXES = (".crt", ".key", ".pem", ".pub")

_PATH = re.compile(r"(?<![\w.~$/-])(/(?:etc|opt|usr|var)/[A-Za-z0-9._@+/-]*[A-Za-z0-9_@+-])")


@dataclass(frozen=True)
class Reference:
    path: str  # the file that refers
    target: str  # the path it names


def _managed(path: str) -> bool:
    return any(path == root or path.startswith(root + "/") for root in MANAGED)


def _targets(data: bytes) -> tuple[str, ...]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return ()
    return tuple(t for t in dict.fromkeys(m.group(1) for m in _PATH.finditer(text)) if _managed(t))


_shared_targets = lru_cache(maxsize=16)(_targets)  # a shared file (the node table) is scanned once per run


def references(files: Iterable) -> list[Reference]:
    """Absolute paths into managed trees named by the text files among `files` (.path, .data)."""
    found = []
    for f in files:
        if f.path.endswith(SKIP_SUFFIXES):
            continue
        targets = _shared_targets(f.data) if getattr(f, "shared", False) else _targets(f.data)
        found += [Reference(f.path, target) for target in targets]
    return found


def unresolved(files: list, directories: Iterable[str], binaries: Iterable[str]) -> list[Reference]:
    """The references that nothing in the bundle provides."""
    paths = {f.path for f in files}
    directories = [d.rstrip("/") for d in directories]
    # A directory that holds planned files is a configuration directory: a path in it must be one of
    # them. One that holds none (/var/lib/etcd, /var/log/kubernetes) is state, filled at run time.
    state = [d for d in directories if not any(p.startswith(d + "/") for p in paths)]
    roots = state + [b.rstrip("/") for b in binaries]
    missing = []
    for ref in references(files):
        target = ref.target.rstrip("/")
        if target in paths or target in directories or any(target == r or target.startswith(r + "/") for r in roots):
            continue
        # A directory that holds planned files exists once they are installed.
        if any(p.startswith(target + "/") for p in paths):
            continue
        missing.append(ref)
    return missing
