"""A bundle whose only changed input is the node table, rebuilt from its own archive instead of rendered.

Adding a worker changes the node table, which every bundle carries, and nothing else of the other
bundles (inputs.py: their spec, store and source digests are unchanged). Such a bundle is its old
archive with the table replaced, and the table's SHA-256 replaced in `SHA256SUMS` and in install.sh's
manifest. The archive is laid out for this (archive.Assembler): its first gzip member holds every
other member and is kept as it is, byte for byte; the second holds install.sh and SHA256SUMS (and the
first shared file's header), which are decompressed, get the new digest and are compressed again (a
few KB); the shared files follow, compressed once per run. `patched` works on the archive on disk after the caller checked its size
and SHA-256 against the record (so it is the one hardway wrote), and returns None whenever anything
is not as expected: the caller then renders the bundle in full. The result is byte for byte what a
full build gives (tests/test_bundle_incremental.py compares them).
"""

from __future__ import annotations

import re
import zlib

from .archive import Assembler
from .layout import ROOTFS, SUMS, Member, sha256


def parse_tar(data: bytes, limit: int | None = None) -> list[Member] | None:
    """The members of a tar hardway wrote (ustar, regular files and directories), or None; only the
    first `limit` members if given (what follows them may be a header without its data)."""
    members, at = [], 0
    try:
        while at + 512 <= len(data) and (limit is None or len(members) < limit):
            head = data[at:at + 512]
            if head == bytes(512):
                break
            if head[257:263] != b"ustar\0" or head[156:157] not in (b"0", b"5"):
                return None
            name = head[0:100].rstrip(b"\0").decode("ascii")
            prefix = head[345:500].rstrip(b"\0").decode("ascii")
            if prefix:
                name = f"{prefix}/{name}"
            mode = int(head[100:108].rstrip(b"\0 "), 8)
            size = int(head[124:136].rstrip(b"\0 "), 8)
            at += 512
            if head[156:157] == b"5":
                members.append(Member(name.rstrip("/"), mode))
                continue
            if at + size > len(data):
                return None
            members.append(Member(name, mode, data[at:at + size]))
            at += -(-size // 512) * 512
    except (ValueError, UnicodeDecodeError):
        return None
    return members


def patched(archive: bytes, head: int, node: str, derived_names: list[str], shared: list[Member],
            assembler: Assembler) -> bytes | None:
    """`archive` with its shared members replaced by `shared` (and their digests in the derived
    members, SHA256SUMS and install.sh); `head` is the recorded length of its first gzip member.
    None if the archive is not laid out as expected."""
    if not isinstance(head, int) or not 0 < head < len(archive):
        return None
    unpack = zlib.decompressobj(31)
    try:
        middle = unpack.decompress(archive[head:])
    except zlib.error:
        return None
    if not unpack.eof:
        return None
    derived = parse_tar(middle, limit=len(derived_names))  # then the first shared file's header
    if derived is None or [m.name for m in derived] != derived_names or any(m.is_dir for m in derived):
        return None
    sums = next((m.data for m in derived if m.name == f"{node}/{SUMS}"), None)
    if sums is None:
        return None
    swaps = []
    for m in shared:
        path = m.name[len(node) + 1:]
        old = re.findall(rb"^([0-9a-f]{64})  " + re.escape(path.encode()) + rb"$", sums, re.M)
        if len(old) != 1 or not path.startswith(ROOTFS + "/"):
            return None
        new = sha256(m.data).encode()
        if old[0] != new:
            swaps.append((old[0], new))
    out = []
    for m in derived:
        text = m.data
        for old_hex, new_hex in swaps:
            if text.count(old_hex) != 1:  # SHA256SUMS and the manifest name each file once
                return None
            text = text.replace(old_hex, new_hex)
        out.append(Member(m.name, m.mode, text))
    blocks = assembler.derived_blocks(out)
    if blocks is None:
        return None
    return archive[:head] + assembler.tail(blocks, shared)
