"""The lab's OCI image archives: reproducible bytes, a structure checked by an independent reader,
and (with the real containerd and ctr) an import that names, completes and unpacks the images."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from hardway import binaries as binaries_mod
from hardway.lab import images
from hardway.lab.images import Image, ImageFile

REPO = Path(__file__).resolve().parent.parent
ARCH = "amd64"  # fixed, so the bytes do not depend on the machine running the tests


def fake_elf(dynamic: bool = False, payload: bytes = b"") -> bytes:
    """A 64-bit little-endian ELF header, with one PT_INTERP program header when `dynamic`."""
    phnum = 1 if dynamic else 0
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", 3, 4, 120, 0, 0, 28, 28, 1) if dynamic else b""
    return header + phdrs + payload


@pytest.fixture
def bins(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("pause", "coredns", "busybox"):
        p = tmp_path / name
        p.write_bytes(fake_elf(payload=f"{name} payload".encode()))
        p.chmod(0o755)
        out[name] = p
    return out


APPLETS = ("cat", "echo", "env", "hostname", "httpd", "id", "ip", "ls", "nc", "nslookup", "sh", "sleep", "wget")


def lab_images(bins: dict[str, Path]) -> list[Image]:
    return [
        images.pause_image(bins["pause"], "registry.k8s.io/pause:3.10.2"),
        images.coredns_image(bins["coredns"], "registry.k8s.io/coredns/coredns:v1.12.4"),
        images.busybox_image(bins["busybox"], applets=APPLETS),
    ]


# --- an independent reader of OCI image layout archives --------------------------------------------

def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_archive(archive: bytes) -> dict:
    """Check the layout, every blob and descriptor; return {name: {manifest, config, layer}}."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert json.loads(members.pop("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(members.pop("index.json"))
    blobs = {}
    for name, data in members.items():
        assert name.startswith("blobs/sha256/"), name
        assert hashlib.sha256(data).hexdigest() == name.removeprefix("blobs/sha256/"), f"{name} is not named by its digest"
        blobs["sha256:" + name.removeprefix("blobs/sha256/")] = data

    def blob(desc: dict, media_type: str) -> bytes:
        assert desc["mediaType"] == media_type
        data = blobs[desc["digest"]]
        assert len(data) == desc["size"], f"size of {desc['digest']}"
        return data

    assert index["schemaVersion"] == 2
    result, used = {}, set()
    for desc in index["manifests"]:
        name = desc["annotations"]["io.containerd.image.name"]
        assert desc["annotations"]["org.opencontainers.image.ref.name"] == name.rsplit(":", 1)[1]
        assert desc["platform"] == {"architecture": ARCH, "os": "linux"}
        manifest = json.loads(blob(desc, "application/vnd.oci.image.manifest.v1+json"))
        assert manifest["schemaVersion"] == 2
        config = json.loads(blob(manifest["config"], "application/vnd.oci.image.config.v1+json"))
        assert len(manifest["layers"]) == 1
        layer_gz = blob(manifest["layers"][0], "application/vnd.oci.image.layer.v1.tar+gzip")
        layer = gzip.decompress(layer_gz)
        assert config["rootfs"] == {"type": "layers", "diff_ids": [sha256(layer)]}
        assert (config["architecture"], config["os"]) == (ARCH, "linux")
        used |= {desc["digest"], manifest["config"]["digest"], manifest["layers"][0]["digest"]}
        result[name] = {"manifest": manifest, "config": config, "layer": layer}
    assert used == set(blobs), "blobs that no image uses"
    return result


def layer_entries(layer: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """(entry, content of a regular file) in archive order."""
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return [(e, tar.extractfile(e).read() if e.isfile() else None) for e in tar.getmembers()]


# --- reproducibility ----------------------------------------------------------------------------------

def test_same_inputs_give_byte_identical_archives(bins, tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    images.write_oci_archive(lab_images(bins), a, arch=ARCH)
    images.write_oci_archive(reversed(lab_images(bins)), b, arch=ARCH)
    assert a.read_bytes() == b.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_one_changed_byte_changes_only_that_image(bins):
    before = read_archive(images.image_archive_bytes(lab_images(bins), arch=ARCH))
    data = bytearray(bins["coredns"].read_bytes())
    data[-1] ^= 1
    bins["coredns"].write_bytes(bytes(data))
    after = read_archive(images.image_archive_bytes(lab_images(bins), arch=ARCH))
    changed = {n for n in before if before[n]["manifest"] != after[n]["manifest"]}
    assert changed == {"registry.k8s.io/coredns/coredns:v1.12.4"}
    assert before[next(iter(changed))]["config"]["rootfs"] != after[next(iter(changed))]["config"]["rootfs"]


def test_layers_carry_no_time_owner_or_pax_headers(bins):
    for image in read_archive(images.image_archive_bytes(lab_images(bins), arch=ARCH)).values():
        for e, _ in layer_entries(image["layer"]):
            assert (e.mtime, e.uid, e.gid, e.uname, e.gname, e.pax_headers) == (0, 0, 0, "", "", {}), e.name


# --- structure ----------------------------------------------------------------------------------------

def test_layer_holds_files_parents_and_symlinks_in_order():
    image = Image("example.test/tree:1", (
        ImageFile("/usr/lib/x/tool", b"#!tool", mode=0o750),
        ImageFile("/bin/sh", link="busybox"),
        ImageFile("/bin/busybox", b"bb"),
        ImageFile("/tmp", mode=0o1777),
        ImageFile("/etc/passwd", b"root:x:0:0::/:/bin/sh\n", mode=0o644),
    ))
    layer = read_archive(images.image_archive_bytes([image], arch=ARCH))["example.test/tree:1"]["layer"]
    got = [(e.name, e.type, e.mode, e.linkname, content) for e, content in layer_entries(layer)]
    D, F, L = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE
    assert got == [
        ("bin", D, 0o755, "", None),
        ("bin/busybox", F, 0o755, "", b"bb"),
        ("bin/sh", L, 0o777, "busybox", None),
        ("etc", D, 0o755, "", None),
        ("etc/passwd", F, 0o644, "", b"root:x:0:0::/:/bin/sh\n"),
        ("tmp", D, 0o1777, "", None),
        ("usr", D, 0o755, "", None),
        ("usr/lib", D, 0o755, "", None),
        ("usr/lib/x", D, 0o755, "", None),
        ("usr/lib/x/tool", F, 0o750, "", b"#!tool"),
    ]


def test_config_and_index_of_the_lab_images(bins):
    archive = images.image_archive_bytes(lab_images(bins), arch=ARCH)
    found = read_archive(archive)
    assert sorted(found) == ["hardway.local/busybox:lab", "registry.k8s.io/coredns/coredns:v1.12.4",
                             "registry.k8s.io/pause:3.10.2"]
    path = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

    pause = found["registry.k8s.io/pause:3.10.2"]
    assert pause["config"]["config"] == {"Entrypoint": ["/pause"], "User": "65535:65535", "Env": path}
    assert [(e.name, content) for e, content in layer_entries(pause["layer"])] == [("pause", bins["pause"].read_bytes())]

    coredns = found["registry.k8s.io/coredns/coredns:v1.12.4"]
    assert coredns["config"]["config"] == {
        "Entrypoint": ["/coredns"], "User": "65532:65532", "WorkingDir": "/", "Env": path,
        "ExposedPorts": {"53/tcp": {}, "53/udp": {}, "9153/tcp": {}}}
    files = {e.name: (e, content) for e, content in layer_entries(coredns["layer"])}
    assert files["coredns"][1] == bins["coredns"].read_bytes() and files["coredns"][0].mode == 0o755
    uid = coredns["config"]["config"]["User"].split(":")[0]
    assert any(line.split(":")[2] == uid for line in files["etc/passwd"][1].decode().splitlines())

    busybox = found["hardway.local/busybox:lab"]
    assert busybox["config"]["config"] == {"Cmd": ["sh"], "Env": path}
    files = {e.name: (e, content) for e, content in layer_entries(busybox["layer"])}
    assert {n.removeprefix("bin/") for n, (e, _) in files.items() if e.issym() and e.linkname == "busybox"} == set(APPLETS)
    assert files["tmp"][0].isdir() and files["tmp"][0].mode == 0o1777
    users = {line.split(":")[0]: line.split(":")[2] for line in files["etc/passwd"][1].decode().splitlines()}
    assert users == {"root": "0", "nobody": "65534"}

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert "manifest.json" not in tar.getnames()


def test_coredns_user_matches_the_manifest():
    """The project's CoreDNS manifest either names a user the image's /etc/passwd knows, or leaves
    the image's own user (65532, upstream's `nonroot`) in force."""
    template = (REPO / "units" / "manifests" / "10-coredns.yaml.j2").read_text()
    run_as = re.findall(r"runAsUser:\s*(\d+)", template)
    assert set(run_as) <= {"65532"}, f"the CoreDNS manifest runs as {run_as}: give the image that user"


def test_blobs_shared_between_images_are_stored_once(bins):
    twin = images.pause_image(bins["pause"], "registry.k8s.io/pause:twin")
    archive = images.image_archive_bytes([images.pause_image(bins["pause"], "registry.k8s.io/pause:3.10.2"), twin], arch=ARCH)
    found = read_archive(archive)
    assert len({json.dumps(f["manifest"]) for f in found.values()}) == 1
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert len([n for n in tar.getnames() if n.startswith("blobs/sha256/")]) == 3


def test_host_architecture_names():
    assert images.goarch("x86_64") == "amd64" and images.goarch("aarch64") == "arm64"
    with pytest.raises(ValueError, match="mips"):
        images.goarch("mips")


# --- refused inputs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("ref", ["busybox", "busybox:lab", "docker.io/busybox", "library/busybox:1",
                                 "Registry.io/Busy:1", "reg.io/a:1@sha256:" + "0" * 64, "reg.io/a:",
                                 "reg.io//a:1", "reg.io/a:-x"])
def test_refs_without_registry_or_tag_are_refused(ref):
    with pytest.raises(ValueError, match=re.escape(repr(ref))):
        Image(ref, ())


@pytest.mark.parametrize("ref", ["registry.k8s.io/pause:3.10.2", "hardway.local/busybox:lab",
                                 "localhost:5000/a/b_c:v1.0-rc.1", "localhost/x:y"])
def test_full_refs_are_accepted(ref):
    assert Image(ref, ()).name == ref


@pytest.mark.parametrize("kwargs", [dict(path="bin/sh"), dict(path="/"), dict(path="/a/../b"), dict(path="/a//b"),
                                    dict(path="/a", data=b"", link="b"), dict(path="/a", mode=0o10000)])
def test_bad_image_files_are_refused(kwargs):
    with pytest.raises(ValueError):
        ImageFile(**kwargs)


def test_duplicates_and_files_under_files_are_refused(bins):
    with pytest.raises(ValueError, match="/a.*twice"):
        images.layer_tar([ImageFile("/a", b""), ImageFile("/a", b"")])
    with pytest.raises(ValueError, match="/a/b.*not a directory"):
        images.layer_tar([ImageFile("/a", b""), ImageFile("/a/b", b"")])
    with pytest.raises(ValueError, match="distinct"):
        images.image_archive_bytes([images.pause_image(bins["pause"], "r.io/p:1")] * 2, arch=ARCH)


def test_dynamic_binaries_and_non_elf_files_are_refused(tmp_path):
    dynamic, text = tmp_path / "dyn", tmp_path / "script"
    dynamic.write_bytes(fake_elf(dynamic=True))
    text.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(ValueError, match="dyn is dynamically linked"):
        images.pause_image(dynamic, "registry.k8s.io/pause:3.10.2")
    with pytest.raises(ValueError, match="script is not an ELF"):
        images.coredns_image(text, "registry.k8s.io/coredns/coredns:v1.12.4")


def test_busybox_without_a_needed_applet_is_refused(bins):
    with pytest.raises(ValueError, match="lacks the applets wget"):
        images.busybox_image(bins["busybox"], applets=[a for a in APPLETS if a != "wget"])


def host_busybox() -> Path:
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file():
            try:
                return images.require_static(candidate)
            except ValueError:
                pass
    pytest.skip("no static busybox on this machine (apt-get install -y busybox-static)")


def test_busybox_links_every_applet_the_real_binary_lists():
    busybox = host_busybox()
    listed = set(subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split())
    image = images.busybox_image(busybox)
    links = {f.path.removeprefix("/bin/") for f in image.files if f.link == "busybox"}
    assert links == listed - {"busybox"}
    assert set(images.BUSYBOX_APPLETS) <= links


# --- the real containerd --------------------------------------------------------------------------------

def containerd_binaries() -> dict[str, Path]:
    from helpers import BUILD_COMMAND, missing

    version = binaries_mod.pinned_version()
    dirs = [Path(d) for d in [os.environ.get("HARDWAY_BIN_DIR")] if d] + [binaries_mod.cache_dir(version)]
    found = {}
    for name in ("containerd", "ctr"):
        for d in dirs:
            if os.access(d / name, os.X_OK):
                found[name] = d / name
                break
    absent = [n for n in ("containerd", "ctr") if n not in found]
    if absent:
        missing(f"{' and '.join(absent)} {'is' if len(absent) == 1 else 'are'} not built "
                f"(looked in {', '.join(map(str, dirs))})", BUILD_COMMAND)
    if os.geteuid() != 0:
        missing("a throwaway containerd needs root", "sudo -E python -m pytest ...")
    return found


@pytest.fixture
def containerd():
    """A containerd of its own (root, state, socket, no CRI) for one test; yields its socket."""
    bins = containerd_binaries()
    base = Path(tempfile.mkdtemp(prefix="hw-ctrd-"))  # short: a unix socket path has 108 bytes
    sock = base / "c.sock"
    config = base / "config.toml"
    config.write_text(f"""version = 3
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images",
                    "io.containerd.nri.v1.nri"]
[grpc]
  address = "{sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
""")
    # containerd always creates /run/containerd (its shims' socket root): remove it if it was not there.
    default_state = Path("/run/containerd")
    had_default_state = default_state.exists()
    log = open(base / "containerd.log", "wb")
    proc = subprocess.Popen([bins["containerd"], "--config", config], stdout=log, stderr=subprocess.STDOUT)
    ctr = lambda *args, **kw: subprocess.run([bins["ctr"], "--address", sock, "--namespace", "k8s.io", *args],  # noqa: E731
                                             capture_output=True, text=True, timeout=120, **kw)
    try:
        deadline = time.monotonic() + 30
        while not (sock.exists() and ctr("version").returncode == 0):
            assert proc.poll() is None and time.monotonic() < deadline, (base / "containerd.log").read_text()[-3000:]
            time.sleep(0.2)
        yield bins["ctr"], sock, ctr
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", base / "mnt"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        if not had_default_state:
            try:
                default_state.rmdir()
            except OSError:  # in use by another containerd meanwhile
                pass


@pytest.mark.slow
def test_ctr_imports_names_and_unpacks_the_images(bins, tmp_path, containerd):
    ctr_path, sock, ctr = containerd
    archive = tmp_path / "images.tar"
    arch = images.goarch()
    images.write_oci_archive(lab_images(bins), archive, arch=arch)

    imported = subprocess.run(images.import_argv(ctr_path, archive, address=sock), capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr

    names = sorted(ctr("images", "ls", "-q").stdout.split())
    assert names == ["hardway.local/busybox:lab", "registry.k8s.io/coredns/coredns:v1.12.4", "registry.k8s.io/pause:3.10.2"]
    # `check -q` lists only the images whose content is complete and unpacked for the default snapshotter.
    checked = ctr("images", "check", "-q")
    assert checked.returncode == 0 and sorted(checked.stdout.split()) == names, ctr("images", "check").stdout

    # The unpacked root filesystem is the one written.
    mnt = sock.parent / "mnt"
    mnt.mkdir()
    mounted = ctr("images", "mount", "hardway.local/busybox:lab", mnt)
    assert mounted.returncode == 0, mounted.stderr
    try:
        assert (mnt / "bin" / "busybox").read_bytes() == bins["busybox"].read_bytes()
        assert os.readlink(mnt / "bin" / "sh") == "busybox"
        assert stat.S_IMODE((mnt / "tmp").lstat().st_mode) == 0o1777
        assert "nobody:x:65534" in (mnt / "etc" / "passwd").read_text()
    finally:
        ctr("images", "unmount", mnt)

    # Importing the same archive again changes nothing.
    before = ctr("images", "ls").stdout
    assert subprocess.run(images.import_argv(ctr_path, archive, address=sock), capture_output=True).returncode == 0
    assert ctr("images", "ls").stdout == before
