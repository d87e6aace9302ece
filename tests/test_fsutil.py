"""Bundle extraction is safe on every Python 3.11, with or without tarfile's data filter."""

import io
import tarfile

import pytest
from pathlib import Path

from hardway.fsutil import extract_bundle


def _archive(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


@pytest.fixture(params=["with data_filter", "without data_filter"])
def python_flavour(request, monkeypatch):
    if request.param == "without data_filter":  # Debian 12's Python 3.11.2
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


def test_regular_members_are_extracted(tmp_path, python_flavour):
    archive = tmp_path / "ok.tar.gz"
    _archive(archive, [_file("node/rootfs/etc/a.conf", b"hello")])
    extract_bundle(archive, tmp_path / "dest")
    assert (tmp_path / "dest/node/rootfs/etc/a.conf").read_bytes() == b"hello"


@pytest.mark.parametrize("member", [
    _file("../escape.txt"),
    _link("node/link", "/etc/passwd"),
], ids=["dot-dot", "symlink"])
def test_unsafe_members_are_refused_and_nothing_escapes(tmp_path, python_flavour, member):
    archive = tmp_path / "bad.tar.gz"
    _archive(archive, [member])
    dest = tmp_path / "a" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(tarfile.TarError):
        extract_bundle(archive, dest)
    assert not (tmp_path / "a" / "escape.txt").exists()
    assert not (dest / "node" / "link").is_symlink()


def test_an_absolute_member_never_lands_outside(tmp_path, python_flavour):
    archive = tmp_path / "abs.tar.gz"
    _archive(archive, [_file("/hardway-test-escape/escape.txt")])
    try:
        extract_bundle(archive, tmp_path / "dest")
    except tarfile.TarError:
        pass  # refused (no data filter), or ...
    else:  # ... made relative by the data filter
        assert (tmp_path / "dest/hardway-test-escape/escape.txt").is_file()
    assert not Path("/hardway-test-escape").exists()
