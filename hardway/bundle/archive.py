"""Bundle archives on disk: written deterministically and atomically, read back defensively.

Same members in, same bytes out: members in a fixed order, one fixed mtime, owner root, no user or
host names, gzip without a file name or time stamp. One bundle's tar is built in memory (a few
hundred KB at most; the bundles of other nodes are never held at once) and compared with the tar
inside the archive already there: if equal, nothing is written and the file keeps its mtime;
otherwise it is compressed and written with `fsutil.atomic_write` (temp file, fsync, rename).
"""

from __future__ import annotations

import fcntl
import gzip
import io
import struct
import tarfile
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import HardwayError
from ..fsutil import atomic_write, fsync_dir, leftover_temp_files, open_lock
from .layout import Member

# 2000-01-01T00:00:00Z. Not 0: some tar versions warn about "implausibly old" time stamps.
MTIME = 946684800
SUFFIX = ".tar.gz"
COMPRESSLEVEL = 6  # 3x faster than 9 for 3% more bytes; any fixed level keeps archives reproducible
ARCHIVE_MODE = 0o600  # a bundle holds its node's private keys
DIR_MODE = 0o700


class ArchiveError(Exception):
    """An archive that is unreadable or not shaped like a bundle."""


def _tarinfo(m: Member) -> tarfile.TarInfo:
    info = tarfile.TarInfo(m.name)
    info.mode = m.mode
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if m.is_dir:
        info.type = tarfile.DIRTYPE
    else:
        info.size = len(m.data)
    return info


def _pax_tar(members: list[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            tar.addfile(_tarinfo(m), None if m.is_dir else io.BytesIO(m.data))
    return buf.getvalue()


def _ustar_split(name: str) -> tuple[bytes, bytes] | None:
    """(prefix, name) fields of a ustar header as tarfile splits them (the shortest prefix that
    fits), or None if the name does not fit ustar."""
    if not name.isascii():
        return None
    raw = name.encode("ascii")
    if len(raw) <= 100:
        return b"", raw
    parts = raw.split(b"/")
    for i in range(1, len(parts)):
        prefix, rest = b"/".join(parts[:i]), b"/".join(parts[i:])
        if len(prefix) <= 155 and len(rest) <= 100:
            return prefix, rest
    return None


_HEAD = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_ROOT = b"root"


def _ustar_header(prefix: bytes, name: bytes, mode: int, size: int, is_dir: bool) -> bytes:
    """One ustar header, byte for byte what tarfile writes for the same member (USTAR_FORMAT)."""
    fields = [name, b"%07o\0" % mode, b"0000000\0", b"0000000\0", b"%011o\0" % size, b"%011o\0" % MTIME,
              b"        ", b"5" if is_dir else b"0", b"", b"ustar\0", b"00", _ROOT, _ROOT, b"",
              b"", prefix]
    head = _HEAD.pack(*fields)
    chksum = b"%06o\0 " % sum(head)
    return head[:148] + chksum + head[156:]


def _blocks(m: Member) -> bytes | None:
    """One member as ustar blocks (header, data, padding), or None if its name does not fit ustar."""
    split = _ustar_split(m.name + "/" if m.is_dir else m.name)  # as tarfile: a directory's name ends in /
    if split is None or not 0 <= m.mode <= 0o7777:
        return None
    size = 0 if m.is_dir else len(m.data)
    head = _ustar_header(*split, m.mode, size, m.is_dir)
    return head if not size else head + m.data + bytes(-size % 512)


def tar_bytes(members: Iterable[Member]) -> bytes:
    """The uncompressed tar of one bundle (a bundle is small; 1000 of them never coexist).

    ustar headers built directly, the bytes tarfile's USTAR_FORMAT writes (tarfile spends more time
    on headers than zlib on the data); pax, as tarfile writes it, only if a name does not fit ustar.
    For names up to 100 bytes, tarfile's pax and ustar output are the same bytes too."""
    members = list(members)
    parts = []
    for m in members:
        blocks = _blocks(m)
        if blocks is None:
            return _pax_tar(members)
        parts.append(blocks)
    parts.append(bytes(1024))  # two zero blocks end the archive
    total = sum(len(p) for p in parts)
    parts.append(bytes(-total % tarfile.RECORDSIZE))  # tarfile pads to a whole record
    return b"".join(parts)


_END = bytes(1024)


class Assembler:
    """Node archives as a few gzip members in a row (one gzip stream to every reader: gzip, tar,
    Python), so that what many bundles share is compressed once and what a small change leaves
    alone can be kept compressed:

        gzip(the node's own members) + gzip(install.sh, SHA256SUMS, the first shared file's header)
          + gzip(the first shared file's data) + gzip(the next one's header) + gzip(its data) ...
          + gzip(the end blocks, in the same member as the last shared file's data)

    The shared files' data (the node table and its script) are compressed once per run for every
    bundle; a header, which names the node, goes into the member before its data (a gzip member of
    its own costs 18 bytes of frame and a fresh start for the compressor: about 100 bytes).
    The tar inside is the members in that order: the folder, the bundle's own files sorted,
    then the two files that list the shared files' digests, then the shared files. `assemble`
    returns the archive and the length of its first gzip member, which `patch.py` reuses as is."""

    def __init__(self):
        self._blobs: dict[tuple[bytes, bool], bytes] = {}  # (shared data, last) -> its compressed blocks

    def _blob(self, data: bytes, end: bool) -> bytes:
        """A shared file's data, padded to whole blocks (then the end blocks, if it is the last),
        compressed once per run."""
        key = (data, end)
        if key not in self._blobs:
            if len(self._blobs) > 16:
                self._blobs.clear()
            self._blobs[key] = compress(data + bytes(-len(data) % 512) + (_END if end else b""))
        return self._blobs[key]

    def assemble(self, own: list[Member], derived: list[Member], shared: list[Member]) -> tuple[bytes, int] | None:
        """(archive, length of its first gzip member), or None if a name does not fit ustar."""
        own_blocks = [_blocks(m) for m in own]
        derived_blocks = [_blocks(m) for m in derived]
        if any(b is None for b in own_blocks + derived_blocks) or any(_blocks(m) is None for m in shared):
            return None
        head = compress(b"".join(own_blocks))
        return head + self.tail(derived_blocks, shared), len(head)

    def tail(self, derived_blocks: list[bytes], shared: list[Member]) -> bytes:
        pending = b"".join(derived_blocks)  # what goes into the next node-specific member
        parts = []
        for i, m in enumerate(shared):
            parts.append(compress(pending + _blocks(m)[:512]))
            parts.append(self._blob(m.data, end=i == len(shared) - 1))
            pending = b""
        if not shared:
            parts.append(compress(pending + _END))
        return b"".join(parts)

    def derived_blocks(self, derived: list[Member]) -> list[bytes] | None:
        blocks = [_blocks(m) for m in derived]
        return None if any(b is None for b in blocks) else blocks


def compress(data: bytes) -> bytes:
    """gzip without a file name or time stamp: the same bytes for the same tar."""
    return gzip.compress(data, compresslevel=COMPRESSLEVEL, mtime=0)


def archive_bytes(members: Iterable[Member]) -> bytes:
    """The .tar.gz bytes of one bundle."""
    return compress(tar_bytes(members))


def _gzip(data: bytes, fileobj) -> None:
    fileobj.write(compress(data))


def _unpacked(path: Path) -> bytes | None:
    """The tar inside an existing archive, or None if there is none or it is unreadable."""
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, EOFError, gzip.BadGzipFile):
        return None


class ArchiveStatus(StrEnum):
    """What `write_archive` did."""
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def write_archive(path: Path, members: Iterable[Member]) -> ArchiveStatus:
    """Write the archive unless an identical one is there: created, updated or unchanged.

    Identical means the same tar inside: gzip is a function of it, so an unchanged bundle costs a
    decompression, not a compression, and keeps its file (and mtime)."""
    data = tar_bytes(members)
    existed = path.exists()
    if existed and _unpacked(path) == data:
        return ArchiveStatus.UNCHANGED
    compressed = io.BytesIO()
    _gzip(data, compressed)
    atomic_write(path, compressed.getvalue(), ARCHIVE_MODE)
    return ArchiveStatus.UPDATED if existed else ArchiveStatus.CREATED


def remove_archive(path: Path) -> None:
    path.unlink()
    fsync_dir(path.parent)


def lock_path(bundles: Path) -> Path:
    return bundles.parent / f".{bundles.name}.lock"


@contextmanager
def locked(bundles: Path) -> Iterator[None]:
    """One writer per bundles directory at a time; stale temp files of a killed run are removed.

    The lock file is `.<name>.lock` beside the directory (`<out>/.bundles.lock`), not in it: the
    bundles directory holds only what an operator copies to the nodes. It stays (unlinking a file
    others may be waiting to flock would let two runs hold "the" lock at once)."""
    if bundles.exists() and not bundles.is_dir():
        raise HardwayError(f"{bundles} is not a directory; hardway writes the bundles there: move it away")
    bundles.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    try:
        fd = open_lock(lock_path(bundles))  # never through a (dangling) link
    except OSError as e:
        raise HardwayError(f"cannot open the lock file {lock_path(bundles)}: {e.strerror}") from None
    with open(fd, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HardwayError(f"another hardway run is writing {bundles}; wait for it to finish") from None
        for stale in leftover_temp_files(bundles) + _old_temp_files(bundles):
            stale.unlink(missing_ok=True)
        yield


def _old_temp_files(bundles: Path) -> list[Path]:
    """Temp files of hardway releases before fsutil's naming (`.<node>.tar.gz.<pid>.tmp`)."""
    return sorted(bundles.glob(f".*{SUFFIX}.*.tmp"))


def archived_nodes(bundles: Path) -> list[str]:
    """The node names of the archives present in a bundles directory."""
    if not bundles.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in bundles.iterdir()
                  if p.name.endswith(SUFFIX) and not p.name.startswith(".") and p.is_file())


def read_archive(path: Path, node: str) -> dict[str, Member]:
    """The members of a bundle archive, by name relative to its folder (directories left out).

    Refuses what a bundle never holds: a member outside the folder `<node>/`, an absolute or `..`
    path, links, devices, duplicates.
    """
    out: dict[str, Member] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for info in tar:
                name = info.name
                parts = name.split("/")
                if name.startswith("/") or ".." in parts or parts[0] != node:
                    raise ArchiveError(f"member {name!r} is outside the folder {node}/")
                rel = "/".join(parts[1:])
                if info.isdir():
                    continue
                if not info.isreg():
                    raise ArchiveError(f"member {name!r} is not a regular file or directory")
                if rel in out:
                    raise ArchiveError(f"member {name!r} appears twice")
                data = tar.extractfile(info).read()
                out[rel] = Member(rel, info.mode & 0o7777, data)
    except FileNotFoundError:
        raise
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as e:
        raise ArchiveError(f"unreadable: {e}") from None
    return out
