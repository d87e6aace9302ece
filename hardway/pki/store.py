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
    .lock                                                            flock'ed by the run in progress

Each write goes to a temporary file in the same directory, made durable, then renamed over the target,
and the rename made durable: a run killed at any moment leaves either the old file or the new one.
Writes are committed in batches (one syncfs per batch rather than two fsyncs per file: 4000 files
of a 1000-worker cluster would otherwise spend most of the run in fsync).
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import HardwayError
from ..fsutil import fsync_dir

LOCK = ".lock"
SA_KEY = "service-account.key"
SA_PUB = "service-account.pub"
ENCRYPTION = "encryption.key"
STATE = "state.json"
NODES = "nodes"
DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644
_TMP_PREFIX = ".hardway-"
_TMP_SUFFIX = ".tmp"


def cert_rel(entry: str, node: str | None = None) -> str:
    return f"{NODES}/{node}/{entry}.crt" if node else f"{entry}.crt"


def key_rel(entry: str, node: str | None = None) -> str:
    return f"{NODES}/{node}/{entry}.key" if node else f"{entry}.key"


def is_secret(rel: str) -> bool:
    return rel.endswith(".key")


class MemoryStore:
    """A store held in a dict: what `generate_materials` reconciles into (no disk at all)."""

    def __init__(self, files: dict[str, bytes] | None = None):
        self.files = dict(files or {})
        self.written: list[str] = []

    def read(self, rel: str) -> bytes | None:
        return self.files.get(rel)

    def write(self, rel: str, data: bytes) -> None:
        self.files[rel] = data
        self.written.append(rel)

    def remove(self, rel: str) -> None:
        self.files[rel] = None  # also hides a file of the store an overlay reads through to


class DiskStore:
    """A store directory. Reads are cached (each file is read once per run). Writes are atomic and
    batched: `write` queues, `flush` commits the queue (see `_commit_batch`), and so does every
    BATCH-th write. Callers flush where an order must be durable (a CA key before its certificate)."""

    BATCH = 256

    def __init__(self, root: Path, writable: bool = False):
        self.root = Path(root)
        self.writable = writable
        self.written: list[str] = []
        self._cache: dict[str, bytes | None] = {}
        self._pending: list[tuple[str, bytes]] = []

    def read(self, rel: str) -> bytes | None:
        if rel not in self._cache:
            try:
                self._cache[rel] = (self.root / rel).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                self._cache[rel] = None
            except OSError:
                self._cache[rel] = b""  # present but unreadable: parsing it fails and says so
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
        if pending:
            _commit_batch(self.root, [(self.root / rel, data, KEY_MODE if is_secret(rel) else CERT_MODE)
                                      for rel, data in pending])
            self.written += [rel for rel, _ in pending]

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


def _syncfs(path: Path) -> None:
    """Flush the whole filesystem holding `path` (one call instead of one fsync per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc is None or _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


try:
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded into this process
    _libc.syncfs  # noqa: B018  (Linux only)
except (OSError, AttributeError):
    _libc = None


def _commit_batch(root: Path, files: list[tuple[Path, bytes, int]]) -> None:
    """Atomically replace many files: write every temp file (same directory as its target), make them
    durable with one syncfs, rename each over its target in order, syncfs again for the renames.
    The same guarantee as fsync + rename + fsync(dir) per file, at a fraction of the cost: a run
    killed (or a machine losing power) at any moment leaves each file either old or new."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data, mode in files:
            ensure_dir(path.parent, root, durable=False)
            tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
            with _naming(path):
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                temps.append((tmp, path))
                try:
                    os.fchmod(fd, mode)  # exact mode, whatever the umask
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
        _syncfs(root)
        while temps:
            tmp, path = temps[0]
            _rename(tmp, path)
            temps.pop(0)
        _syncfs(root)
    finally:
        for tmp, _ in temps:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OSError inside (a full disk, a read-only mount) names the file being written, not its temp file."""
    try:
        yield
    except OSError as e:
        e.filename, e.filename2 = str(path), None
        raise


def _rename(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)


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
    os.chmod(path, DIR_MODE)
    if durable:
        fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data`: temp file in the same directory, fsync, rename, fsync the directory."""
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
    with _naming(path):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exact mode, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def leftover_temp_files(root: Path) -> list[Path]:
    """Temporary files of a run that was killed mid-write (never the real files)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}") if p.is_file())


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold <store>/.lock for the whole run; refuse at once if another run holds it."""
    ensure_dir(root, root)
    try:
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, KEY_MODE)  # an existing lock file is not modified
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
