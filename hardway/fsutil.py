"""The one durable-write path every stage uses (PKI store, kubeconfigs, node trees, bundles, lab).

A file is never written in place: its bytes go to a temp file beside it (one naming scheme,
`temp_path`), are made durable, then renamed over the target. A run killed at any moment leaves
each file either old or new, plus at most some temp files that `leftover_temp_files` finds.
Errors name the file the user knows, never its temp file.
"""

from __future__ import annotations

import errno
import glob
import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

TEMP_PREFIX = ".hardway-"
TEMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """A fresh, unique temp name beside `path` (two runs never share one). It names the writing
    process, so a later run can tell a killed run's leftover from a live run's file (`dead_temp_files`)."""
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def process_gone(pid: str) -> bool:
    """Whether `pid` (text from a temp name) is a process that no longer runs here."""
    return pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists()


def dead_temp_files(path: Path) -> list[Path]:
    """`temp_path`s of `path` whose process is gone: safe to remove without a lock, unlike a live
    run's (two builds of one cache may run at once)."""
    start, end = len(TEMP_PREFIX) + len(path.name) + 1, -len(TEMP_SUFFIX)
    return sorted(p for p in path.parent.glob(f"{TEMP_PREFIX}{glob.escape(path.name)}.*{TEMP_SUFFIX}")
                  if process_gone(p.name[start:end].partition("-")[0]))


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def leftover_temp_files(root: Path) -> list[Path]:
    """Temp files under `root` of a run that was killed mid-write (never the real files)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}") if p.is_file())


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """An OSError inside (a full disk, a read-only mount) names `path`, not its temp file."""
    try:
        yield
    except OSError as e:
        e.filename, e.filename2 = str(path), None
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """Flush the whole filesystem holding directory `path` (one call instead of one fsync per file)."""
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


def _write_temp(path: Path, data: bytes, mode: int, fsync: bool) -> Path:
    tmp = temp_path(path)
    with naming(path):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)  # exact mode, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink(tmp)
            raise
        os.close(fd)
    return tmp


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def atomic_write(path: Path, data: bytes, mode: int, *, durable: bool = True) -> None:
    """Replace `path` with `data` at exactly `mode`: temp file beside it, fsync, rename, fsync the
    directory. A symlink at `path` is replaced, never written through. `durable=False` skips the
    fsyncs for callers that flush a whole batch themselves (`write_batch`)."""
    tmp = _write_temp(path, data, mode, durable)
    try:
        with naming(path):
            os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_batch(root: Path, files: Iterable[tuple[Path, bytes, int]]) -> None:
    """Atomically replace many files under directory `root` (parents must exist): write every temp
    file, make them durable with one syncfs, rename each over its target in order, syncfs again for
    the renames. The same guarantee as fsync + rename + fsync(dir) per file, at a fraction of the
    cost: a run killed (or a machine losing power) at any moment leaves each file old or new."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data, mode in files:
            temps.append((_write_temp(path, data, mode, fsync=False), path))
        syncfs(root)
        while temps:
            tmp, path = temps[0]
            with naming(path):
                os.replace(tmp, path)
            temps.pop(0)
        syncfs(root)
    finally:
        for tmp, _ in temps:
            _unlink(tmp)


# ---------------------------------------------------------------- links the operator made -------
# hardway runs as root. The operator may make `out/` or any directory below it a symlink (a store on
# an encrypted volume, bundles on a share) and hardway follows those directory links; but it never
# changes the mode of a file reached through a link, never deletes a file it did not write (each
# output directory keeps a record of what hardway wrote there, `RECORD`), and never creates a lock
# file through a dangling link. A file-level link is replaced, never written through (atomic_write).

RECORD = ".hardway-written"  # inside a tree hardway swaps in whole (<out>/nodes)


def record_beside(directory: Path) -> Path:
    """The record of a directory the operator copies from (bundles, kubeconfigs): beside it, like its
    lock, so the directory holds only what hardway delivers."""
    return directory.parent / f".{directory.name}.written"


def inputs_beside(directory: Path) -> Path:
    """What each file of a directory was made from (bundle/inputs.py), beside it like its record."""
    return directory.parent / f".{directory.name}.inputs"


class LinkRefused(OSError):
    """A lock file (or a file hardway would change in place) is a symbolic link."""


def open_lock(path: Path) -> int:
    """Open (creating) a lock file, never through a symbolic link: a dangling link would otherwise
    make hardway create the link's target, anywhere on the machine."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LinkRefused(errno.ELOOP, "is a symbolic link; hardway never opens a lock file through a "
                              "link: remove it", str(path)) from None
        raise


def chmod_nofollow(path: Path, mode: int) -> bool:
    """Set the mode of `path` itself; False (and nothing changed) if `path` is a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return False
        raise
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            return False
        if st.st_mode & 0o7777 != mode:
            with naming(path):
                os.fchmod(fd, mode)
        return True
    finally:
        os.close(fd)


def read_record(record: Path) -> set[str]:
    """The names hardway wrote (relative to the directory), from the record file; empty if none."""
    try:
        fd = os.open(record, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return set()
    with os.fdopen(fd, "rb") as f:
        return {line for line in f.read().decode("utf-8", "replace").splitlines() if line and not line.startswith("#")}


def write_record(record: Path, names: Iterable[str], *, durable: bool = True) -> None:
    data = ("# files hardway wrote here; it deletes only these (docs/bundles.md)\n"
            + "".join(f"{n}\n" for n in sorted(set(names)))).encode()
    try:
        if not record.is_symlink() and record.read_bytes() == data:
            return  # unchanged: a no-op run changes nothing, not even an mtime
    except OSError:
        pass
    atomic_write(record, data, 0o600, durable=durable)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _plain_parts(name: str) -> tuple[str, ...] | None:
    """The components of a record entry when it is a plain relative path (no `..`, `.`, empty
    component, nothing absolute), else None."""
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or any(p in ("..", ".", "") for p in parts):
        return None
    return parts


def _open_parent(directory: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of the directory holding the last of `parts`, below `directory`, opened one
    component at a time with O_NOFOLLOW: a link on the way (or one swapped in while we walk) fails
    with ELOOP/ENOTDIR instead of leading out. The caller closes it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the output directory itself may be a link
    try:
        for part in parts[:-1]:
            below = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_written(directory: Path, names: Iterable[str], record: set[str]) -> tuple[list[str], list[str]]:
    """Delete each of `names` under `directory` that hardway wrote (in `record`); never follows a
    link, not even one swapped in while it works: each entry is reached through directory
    descriptors opened with O_NOFOLLOW and unlinked relative to its own directory (unlinking a link
    removes the link). Returns (removed names, notes on what was left alone)."""
    removed, notes = [], []
    for name in sorted(names):
        path = directory / name
        parts = _plain_parts(name)
        if parts is None:  # a record is a file on disk: never trust it to leave
            notes.append(f"left alone: {name!r} (not a plain path inside {directory})")
            continue
        if name not in record:
            notes.append(f"left alone: {path} (no longer in the spec, but hardway did not write it)")
            continue
        try:
            fd = _open_parent(directory, parts)
        except FileNotFoundError:
            continue
        except OSError:  # ELOOP, ENOTDIR: a link or a file where a directory should be
            notes.append(f"left alone: {name!r} (not a plain path inside {directory})")
            continue
        try:
            if stat.S_ISDIR(os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode):
                notes.append(f"left alone: {path} (a directory, not a file hardway wrote)")
                continue
            with naming(path):
                os.unlink(parts[-1], dir_fd=fd)
        except FileNotFoundError:
            continue
        finally:
            os.close(fd)
        removed.append(name)
    return removed, notes


def _remove_recorded(fd: int, prefix: str, record: set[str], foreign: list[str], shown: Path) -> None:
    """Below the directory open as `fd`: unlink every entry named in `record` (links included, as
    links), descend into real directories only (opened O_NOFOLLOW, so a directory swapped for a link
    is not entered), remove each directory left empty, and list the rest in `foreign`."""
    with os.scandir(fd) as entries:
        listed = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in entries)
    for name, is_dir in listed:
        rel = prefix + name
        if is_dir:
            try:
                below = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                continue  # gone meanwhile
            except OSError:  # swapped for a link or a file meanwhile: not entered, not deleted
                foreign.append(rel)
                continue
            try:
                _remove_recorded(below, rel + "/", record, foreign, shown)
            finally:
                os.close(below)
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                pass  # it still holds something hardway did not write
        elif rel in record:
            try:
                with naming(shown / rel):
                    os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass  # gone meanwhile
        else:
            foreign.append(rel)


def clean_generated(directory: Path) -> list[str]:
    """Delete what hardway wrote in one of its output directories (bundles, kubeconfigs: the record
    beside it; the nodes tree: the record inside it), then the directory if nothing else is left and
    the operator did not link it. Follows `directory` itself if it is a link, never a link below it
    (the walk holds directory descriptors, see _remove_recorded). Returns the files left alone,
    relative to `directory`."""
    record = read_record(record_beside(directory)) | read_record(directory / RECORD) | {RECORD}
    foreign: list[str] = []
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _remove_recorded(fd, "", record, foreign, directory)
    finally:
        os.close(fd)
    record_beside(directory).unlink(missing_ok=True)
    inputs_beside(directory).unlink(missing_ok=True)
    if not foreign and not directory.is_symlink():  # a directory the operator linked stays, emptied
        try:
            directory.rmdir()
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            foreign = os.listdir(directory)  # written meanwhile by someone else: theirs, left alone
    return sorted(foreign)


def linked_dir_note(path: Path, mode: int) -> str | None:
    """Tighten a directory the operator linked to `mode` (following the link), with a note."""
    if not path.is_symlink() or not path.is_dir():
        return None
    st = path.stat()
    if st.st_mode & 0o777 == mode:
        return None
    os.chmod(path, mode)
    return f"{path} is a link to {path.resolve()}: its mode {st.st_mode & 0o777:04o} set to {mode:04o}"


def extract_bundle(archive: Path, dest: Path) -> None:
    """Unpack a bundle archive under `dest`, refusing links, devices and paths that leave it.

    Python 3.11.4+ has tarfile's "data" filter for this; older 3.11 releases (Debian 12 ships
    3.11.2) do not, so the same rules are checked by hand there.
    """
    import tarfile

    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = Path(dest).resolve()
        for member in tar.getmembers():
            target = (root / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
                raise tarfile.TarError(f"{archive}: refusing member {member.name!r}")
        tar.extractall(dest)
