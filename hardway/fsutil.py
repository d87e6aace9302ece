"""Small durable-write helpers shared by the stages that write to disk (PKI store, bundles)."""

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
