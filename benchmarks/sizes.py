"""Where the bytes of the bundles go: what each file of a bundle costs compressed, and the floor.

    python3 benchmarks/sizes.py OUT/bundles [NODE]

Reads the archives hardway wrote (never writes). Prints the bytes of all bundles together and, for
NODE (default: the middle worker), each file's cost in its archive: the size of the gzip member
that holds it minus the size of that member compressed again without it (what the file adds in
its context; what files share with each other is counted once, under "context"). Then the part of
the total that no encoding of the same content can remove: the node table's compressed data in
every bundle, and the random bytes every bundle must carry (private keys, certificates and their
base64 in kubeconfigs, the SHA-256 sums), measured the same way.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

# what gzip (any encoder) cannot squeeze: random bytes (keys, signatures, digests)
RANDOM = (".key", ".crt", ".kubeconfig", "SHA256SUMS")
TABLE = "rootfs/etc/kubernetes/cluster-nodes.tsv"


def gzip_members(data: bytes) -> list[tuple[int, bytes]]:
    """(compressed length, tar bytes) of each gzip member of an archive, in order."""
    out, at = [], 0
    while at < len(data):
        d = zlib.decompressobj(31)
        raw = d.decompress(data[at:])
        used = len(data) - at - len(d.unused_data)
        out.append((used, raw))
        at += used
    return out


def deflated(data: bytes) -> int:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return len(c.compress(data) + c.flush()) + 18  # + the gzip frame


def tar_entries(raw: bytes) -> list[tuple[str, int, int]]:
    """(name, start, end) of each member's header and data blocks inside a tar fragment."""
    entries, at = [], 0
    while at + 512 <= len(raw):
        head = raw[at:at + 512]
        if head == bytes(512) or head[257:263] != b"ustar\0":
            break
        name = head[:100].rstrip(b"\0").decode()
        prefix = head[345:500].rstrip(b"\0").decode()
        size = int(head[124:136].rstrip(b"\0 ") or b"0", 8)
        end = min(len(raw), at + 512 + -(-size // 512) * 512)
        entries.append((f"{prefix}/{name}" if prefix else name, at, end))
        at = end
    return entries


def costs(archive: bytes, only=lambda name: True) -> list[tuple[str, int]]:
    """(file, compressed bytes it adds) for one archive (the files `only` accepts, and what is left
    of each gzip member); a member of data without its own header (a shared file's data, compressed
    once per run) is named by the header before it."""
    rows, last = [], "?"
    for size, raw in gzip_members(archive):
        entries = tar_entries(raw)
        if not entries:  # a shared file's data (and maybe the end blocks)
            rows.append((f"{last} (data)", size))
            continue
        spent = 0
        for name, start, end in entries:
            last = name.split("/", 1)[1] if "/" in name.rstrip("/") else name
            if not only(last):
                continue
            cost = size - deflated(raw[:start] + raw[end:])
            rows.append((last + (" (header)" if end - start == 512 and end == len(raw) else ""), cost))
            spent += cost
        rows.append(("rest of the gzip member: what its files share, its frame", size - spent))
    return rows


def main() -> int:
    bundles = Path(sys.argv[1])
    archives = sorted(bundles.glob("*.tar.gz"))
    if not archives:
        print(f"no *.tar.gz in {bundles}", file=sys.stderr)
        return 2
    total = sum(p.stat().st_size for p in archives)
    workers = [p for p in archives if p.name.startswith("worker") or p.name.startswith("node")]
    pick = sys.argv[2] if len(sys.argv) > 2 else (workers or archives)[len(workers or archives) // 2].name[:-7]
    print(f"{len(archives)} bundles, {total} bytes ({total / 1e6:.2f} MB); {pick}:")
    rows = costs((bundles / f"{pick}.tar.gz").read_bytes())
    for name, cost in rows:
        print(f"  {cost:7d}  {name}")
    print(f"  {sum(c for _, c in rows):7d}  = {pick}.tar.gz")

    table = random = 0
    for path in archives:
        for name, cost in costs(path.read_bytes(), only=lambda name: name.endswith(RANDOM)):
            if name == f"{TABLE} (data)":
                table += cost
            elif name.endswith(RANDOM):
                random += cost
    print(f"node table data in every bundle: {table} bytes; keys, certificates, kubeconfigs, SHA256SUMS: "
          f"{random} bytes; together {(table + random) / 1e6:.2f} MB of {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
