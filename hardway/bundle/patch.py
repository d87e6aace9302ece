"""A bundle whose only changed input is the node table, rebuilt from its own archive instead of rendered.

Adding a worker changes the node table, which every bundle carries, and nothing else of the other
bundles (inputs.py: their spec, store and source digests are unchanged). Those bundles are then
the old archive with three members changed: the table itself, and its SHA-256 in `SHA256SUMS` and
in install.sh's manifest. `patched` does exactly that to the archive on disk (whose size and
SHA-256 the caller has checked against the record, so it is the one hardway wrote), and returns
None whenever anything is not as expected: the caller then renders the bundle in full. The result
is byte for byte what a full rendering gives (tests/test_bundle_incremental.py compares them).
"""

from __future__ import annotations

import gzip
import hashlib
import zlib

from .archive import archive_bytes, tar_bytes
from .layout import INSTALL_SH, ROOTFS, SUMS, Member


def parse_tar(data: bytes) -> list[Member] | None:
    """The members of a tar hardway wrote (ustar, regular files and directories), or None."""
    members, at = [], 0
    try:
        while at + 512 <= len(data):
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
            members.append(Member(name, mode, data[at:at + size]))
            at += -(-size // 512) * 512
    except (ValueError, UnicodeDecodeError):
        return None
    return members


def patched(archive: bytes, node: str, shared: dict[str, bytes]) -> bytes | None:
    """`archive` (a node's .tar.gz) with its shared files (install path -> new bytes) replaced, and
    their digests with them; None if the archive is not shaped as expected."""
    try:
        tar = gzip.decompress(archive)
    except (OSError, EOFError, zlib.error):
        return None
    members = parse_tar(tar)
    if members is None or tar_bytes(members) != tar:  # the parse must give back exactly these bytes
        return None
    by_name = {m.name: i for i, m in enumerate(members)}
    swaps: list[tuple[bytes, bytes]] = []
    for path, data in shared.items():
        i = by_name.get(f"{node}/{ROOTFS}{path}")
        if i is None:
            return None
        old = members[i]
        if old.data != data:
            swaps.append((hashlib.sha256(old.data).hexdigest().encode(), hashlib.sha256(data).hexdigest().encode()))
            members[i] = Member(old.name, old.mode, data)
    for own in (SUMS, INSTALL_SH):
        i = by_name.get(f"{node}/{own}")
        if i is None:
            return None
        text = members[i].data
        for old_hex, new_hex in swaps:
            if text.count(old_hex) != 1:  # SHA256SUMS and the manifest name each file once
                return None
            text = text.replace(old_hex, new_hex)
        members[i] = Member(members[i].name, members[i].mode, text)
    return archive_bytes(members)
