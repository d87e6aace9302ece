"""The PKI store on disk: its layout, atomic writes, and the lock. The only disk I/O of the PKI stage.

Layout (relative to <out>/pki):

    ca.crt ca.key etcd-ca.crt etcd-ca.key front-proxy-ca.crt front-proxy-ca.key     the CAs
    <entry>.crt <entry>.key                                                       cluster-wide leaves
    nodes/<node>/<entry>.crt nodes/<node>/<entry>.key                             per-node leaves
    service-account.key service-account.pub                                       token signing pair
    encryption.key                                                   base64 of 32 bytes, one line
    encryption-<name>.key                                            more encryption keys (provider change, rotation)
    state.json                                                       what the store holds: each CA's public-key
                                                                     fingerprint, the encryption keys and providers
    verified.json                                                    what each leaf was last verified as (record.py):
                                                                     lets a run with nothing to do skip re-parsing
    .lock                                                            flock'ed by the run in progress

Writes go through hardway.fsutil, the one durable-write path: each file to a temporary file in the
same directory, made durable, then renamed over the target, and the rename made durable: a run
killed at any moment leaves either the old file or the new one. Writes are committed in batches
(fsutil.write_batch: one syncfs per batch rather than two fsyncs per file; 4000 files of a
1000-worker cluster would otherwise spend most of the run in fsync); a commit of a few files (the
CAs, state.json) is made durable file by file instead (fsutil.atomic_write).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Protocol

from ..errors import HardwayError
from ..fsutil import atomic_write, chmod_nofollow, fsync_dir, leftover_temp_files, open_lock, write_batch

__all__ = ["Store", "MemoryStore", "OverlayStore", "DiskStore", "ensure_dir", "locked", "leftover_temp_files",
           "cert_rel", "key_rel", "is_secret"]

LOCK = ".lock"
SA_KEY = "service-account.key"
SA_PUB = "service-account.pub"
ENCRYPTION = "encryption.key"
STATE = "state.json"
NODES = "nodes"
DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644


def cert_rel(entry: str, node: str | None = None) -> str:
    return f"{NODES}/{node}/{entry}.crt" if node else f"{entry}.crt"


def key_rel(entry: str, node: str | None = None) -> str:
    return f"{NODES}/{node}/{entry}.key" if node else f"{entry}.key"


def is_secret(rel: str) -> bool:
    return rel.endswith(".key")


class Store(Protocol):
    """What the reconciler needs of a store (kubeadm keeps its disk behind such an interface too).
    Files are named relative to the store's root: `ca.key`, `nodes/node-0/kubelet-client.crt`."""

    root: Path | None  # the directory it reads from, for commands a message suggests; None in memory

    def read(self, rel: str) -> bytes | None: ...  # None: no such file; b"": present but unreadable

    def write(self, rel: str, data: bytes) -> None: ...  # may be queued until `flush`

    def flush(self) -> None: ...  # everything written so far is durable (a commit point)

    def remove(self, rel: str) -> None: ...  # after a flush, durably


class MemoryStore:
    """A store held in a dict: what `generate_materials` reconciles into (no disk at all)."""

    root: Path | None = None

    def __init__(self, files: dict[str, bytes] | None = None):
        self.files = dict(files or {})

    def read(self, rel: str) -> bytes | None:
        return self.files.get(rel)

    def write(self, rel: str, data: bytes) -> None:
        self.files[rel] = data

    def flush(self) -> None:
        pass

    def remove(self, rel: str) -> None:
        self.files[rel] = None  # also hides a file of the store an overlay reads through to


class OverlayStore(MemoryStore):
    """Reads through to a store on disk; keeps every write in memory (what `preview` runs on)."""

    def __init__(self, disk: DiskStore):
        super().__init__()
        self.disk = disk
        self.root = disk.root

    def read(self, rel: str) -> bytes | None:
        return self.files[rel] if rel in self.files else self.disk.read(rel)


class DiskStore:
    """A store directory. Reads are cached (each file is read once per run). Writes are atomic and
    batched: `write` queues, `flush` commits the queue (fsutil.write_batch), and so does every
    BATCH-th write. Callers flush where an order must be durable (a CA key before its certificate)."""

    BATCH = 4096
    # A commit this small (the CA keys, the CA certificates, state.json, the record) is made durable
    # file by file (fsync, rename, fsync of the directory): a syncfs would also wait for whatever else
    # is being written to the file system, by anyone.
    SMALL = 16

    def __init__(self, root: Path, writable: bool = False):
        self.root = Path(root)
        self.writable = writable
        self._cache: dict[str, bytes | None] = {}
        self._pending: list[tuple[str, bytes]] = []

    def read(self, rel: str) -> bytes | None:
        if rel not in self._cache:
            self._cache[rel] = _read_file(os.path.join(self.root, rel))
        return self._cache[rel]

    def write(self, rel: str, data: bytes) -> None:
        if not self.writable:
            raise RuntimeError("read-only store")
        self._pending.append((rel, data))
        self._cache[rel] = data
        if len(self._pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        files = [(self.root / rel, data, KEY_MODE if is_secret(rel) else CERT_MODE) for rel, data in pending]
        small = len(files) <= self.SMALL
        for parent in dict.fromkeys(path.parent for path, _, _ in files):
            ensure_dir(parent, self.root, durable=small)  # else made durable by write_batch's syncfs
        if small:
            for path, data, mode in files:
                atomic_write(path, data, mode)  # fsync, rename, fsync of the directory
        else:
            write_batch(self.root, files)

    def remove(self, rel: str) -> None:
        """Delete a file now (after a flush: what is queued is written first), durably."""
        if not self.writable:
            raise RuntimeError("read-only store")
        self.flush()
        try:
            (self.root / rel).unlink()
        except FileNotFoundError:
            pass
        self._cache[rel] = None
        fsync_dir((self.root / rel).parent)

    def node_dirs(self) -> list[str]:
        nodes = self.root / NODES
        return sorted(p.name for p in nodes.iterdir() if p.is_dir()) if nodes.is_dir() else []


def _read_file(path: str) -> bytes | None:
    """A store file's bytes: None when there is none, b"" when it is present but unreadable or not a
    regular file (a FIFO or a device in the store is never read: parsing b"" fails and says so)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return b""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return b""
        chunks, size = [], max(st.st_size, 0) + 1
        while True:
            chunk = os.read(fd, size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size = 1 << 16
    except OSError:
        return b""
    finally:
        os.close(fd)


def ensure_dir(path: Path, root: Path, durable: bool = True) -> None:
    """Create `path` (and parents up to `root`) with mode 0700; fsync its parent when `durable`."""
    if path.is_dir():
        return
    if path != root:
        ensure_dir(path.parent, root, durable)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        pass
    if not chmod_nofollow(path, DIR_MODE) or not path.is_dir():
        raise HardwayError(f"{path} is not a directory (a link to a file?); hardway keeps part of the PKI store "
                           "there: move it away")
    if durable:
        fsync_dir(path.parent)


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold <store>/.lock for the whole run; refuse at once if another run holds it."""
    ensure_dir(root, root)
    try:
        fd = open_lock(root / LOCK)  # an existing lock file is not modified; never through a link
    except OSError as e:
        raise HardwayError(f"cannot open the lock file {root / LOCK}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise HardwayError(
                    f"another hardway run is working on the PKI store {root} (it holds {root / LOCK}); "
                    "wait for it to finish, then run again") from None
            raise
        yield
    finally:
        os.close(fd)  # closing releases the lock
