"""OCI image archives for the lab's workers, built in plain Python.

The lab's workers reach no registry, so every image a pod needs (the sandbox `pause`, CoreDNS, a
busybox for test pods) is written here as an OCI image layout tar and imported into each worker's
containerd with `import_argv()`. One image is one gzip layer plus a config and a manifest.

Naming: containerd 2.1's import (core/transfer/local/import.go and core/transfer/image/imagestore.go)
names an image after the `io.containerd.image.name` annotation of its descriptor in index.json when
that is a full reference; with only `org.opencontainers.image.ref.name` (a bare tag, per the OCI
spec) it would invent `import-<date>:<tag>`. So each descriptor carries both, as containerd's own
exporter writes them. A Docker-style `manifest.json` is not written: when `oci-layout` is present
containerd reads index.json and ignores manifest.json (core/images/archive/importer.go).

Reproducible: the same inputs give the same bytes (sorted entries, mtime 0, owner 0:0 without
names, gzip without a timestamp, JSON with sorted keys), so image digests only change with content.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import re
import struct
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..fsutil import atomic_write

__all__ = [
    "BUSYBOX_APPLETS",
    "BUSYBOX_REF",
    "Image",
    "ImageFile",
    "busybox_image",
    "check_ref",
    "coredns_image",
    "goarch",
    "image_archive_bytes",
    "import_argv",
    "layer_tar",
    "pause_image",
    "require_static",
    "write_oci_archive",
]

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_REF = "hardway.local/busybox:lab"
CREATED = "1970-01-01T00:00:00Z"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

# The distribution reference grammar (github.com/distribution/reference), restricted to what the
# lab accepts: an explicit registry host (a dot, a port or "localhost", as Docker decides) and a tag.
_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN}(?:\.{_DOMAIN})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REF = re.compile(rf"(?P<host>{_HOST})/(?P<path>{_COMPONENT}(?:/{_COMPONENT})*):(?P<tag>[\w][\w.-]{{0,127}})")

# Applets the lab's test pods use; `nc` is linked too when the binary has it.
BUSYBOX_APPLETS = ("cat", "echo", "env", "hostname", "httpd", "id", "ip", "ls", "nslookup", "sh",
                   "sleep", "wget")

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


@dataclass(frozen=True)
class ImageFile:
    """One entry of the image's layer: a regular file (`data` or `source`), a symlink (`link`),
    or, with none of them, a directory."""
    path: str
    data: bytes | None = None
    source: Path | None = None
    mode: int = 0o755
    link: str | None = None

    def __post_init__(self) -> None:
        parts = self.path.split("/")
        if not self.path.startswith("/") or self.path == "/" or any(p in ("", ".", "..") for p in parts[1:]):
            raise ValueError(f"image file path {self.path!r} is not a normalized absolute path")
        if sum(x is not None for x in (self.data, self.source, self.link)) > 1:
            raise ValueError(f"image file {self.path}: give at most one of data, source, link")
        if not 0 <= self.mode <= 0o7777:
            raise ValueError(f"image file {self.path}: mode {self.mode:o} is not a permission mode")

    @property
    def is_dir(self) -> bool:
        return self.data is None and self.source is None and self.link is None


@dataclass(frozen=True)
class Image:
    name: str  # a full reference with registry host and tag: "registry.k8s.io/pause:3.10.2"
    files: tuple[ImageFile, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = (DEFAULT_PATH,)
    user: str = ""
    workdir: str = ""
    exposed_ports: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_ref(self.name)
        for port in self.exposed_ports:
            if not re.fullmatch(r"[0-9]+/(tcp|udp|sctp)", port):
                raise ValueError(f"image {self.name}: exposed port {port!r} is not like '53/udp'")


def check_ref(ref: str) -> str:
    """`ref` itself if it is a normalized reference with a registry host and a tag."""
    m = _REF.fullmatch(ref)
    host = m.group("host") if m else ""
    if not m or not ("." in host or ":" in host or host == "localhost") or m.start("tag") - 1 > 255:
        raise ValueError(f"image reference {ref!r} is not a full reference with registry host and tag, "
                         f"like registry.k8s.io/pause:3.10.2")
    return ref


def goarch(machine: str | None = None) -> str:
    """The OCI architecture of this host (Go's GOARCH names)."""
    machine = machine or platform.machine()
    try:
        return _GOARCH[machine.lower()]
    except KeyError:
        raise ValueError(f"no OCI architecture known for machine {machine!r}") from None


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.linkname = kind, mode, size, link
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
    return ti


def _tar(entries: Iterable[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    # PAX only adds a header for what ustar cannot hold (long or non-ASCII names): never a time.
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def layer_tar(files: Iterable[ImageFile]) -> bytes:
    """The uncompressed layer: every file and every parent directory (0755 unless given), parents
    first, names without the leading '/'."""
    entries: dict[str, ImageFile] = {}
    for f in files:
        if f.path in entries:
            raise ValueError(f"image file {f.path} is given twice")
        entries[f.path] = f
    for path in list(entries):
        parent = os.path.dirname(path)
        while parent != "/":
            if parent in entries and not entries[parent].is_dir:
                raise ValueError(f"image file {path}: its parent {parent} is not a directory")
            entries.setdefault(parent, ImageFile(parent))
            parent = os.path.dirname(parent)

    def member(f: ImageFile) -> tuple[tarfile.TarInfo, bytes | None]:
        name = f.path[1:]
        if f.link is not None:
            return _tarinfo(name, tarfile.SYMTYPE, 0o777, link=f.link), None
        if f.is_dir:
            return _tarinfo(name, tarfile.DIRTYPE, f.mode), None
        data = f.data if f.data is not None else Path(f.source).read_bytes()
        return _tarinfo(name, tarfile.REGTYPE, f.mode, len(data)), data

    # Sorting by components puts each directory right before its contents.
    return _tar(member(entries[p]) for p in sorted(entries, key=lambda p: p.split("/")))


def _image_blobs(image: Image, arch: str) -> tuple[dict, dict[str, bytes]]:
    """The index descriptor of `image` and its blobs by digest."""
    layer = layer_tar(image.files)
    # mtime=0 keeps the gzip header free of the build time (the OS byte is fixed by gzip.compress).
    layer_gz = gzip.compress(layer, compresslevel=6, mtime=0)
    settings = {"Env": list(image.env), "Entrypoint": list(image.entrypoint), "Cmd": list(image.cmd),
                "User": image.user, "WorkingDir": image.workdir,
                "ExposedPorts": {p: {} for p in image.exposed_ports}}
    config = _json({
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "config": {k: v for k, v in settings.items() if v},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
    })
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": MT_LAYER, "digest": _digest(layer_gz), "size": len(layer_gz)}],
    })
    descriptor = {
        "mediaType": MT_MANIFEST,
        "digest": _digest(manifest),
        "size": len(manifest),
        "platform": {"architecture": arch, "os": "linux"},
        "annotations": {NAME_ANNOTATION: image.name, REF_ANNOTATION: image.name.rsplit(":", 1)[1]},
    }
    return descriptor, {_digest(b): b for b in (layer_gz, config, manifest)}


def image_archive_bytes(images: Iterable[Image], arch: str | None = None) -> bytes:
    """An OCI image layout tar holding `images` (for the host's architecture unless `arch`)."""
    arch = arch or goarch()
    images = sorted(images, key=lambda i: i.name)
    names = [i.name for i in images]
    if not images or len(set(names)) != len(names):
        raise ValueError(f"an image archive needs one or more distinct image names, got {names}")
    descriptors, blobs = [], {}
    for image in images:
        descriptor, image_blobs = _image_blobs(image, arch)
        descriptors.append(descriptor)
        blobs.update(image_blobs)
    index = _json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": descriptors})
    layout = _json({"imageLayoutVersion": "1.0.0"})
    members = [(_tarinfo("blobs", tarfile.DIRTYPE, 0o755), None),
               (_tarinfo("blobs/sha256", tarfile.DIRTYPE, 0o755), None)]
    for digest in sorted(blobs):
        blob = blobs[digest]
        members.append((_tarinfo(f"blobs/sha256/{digest[7:]}", tarfile.REGTYPE, 0o644, len(blob)), blob))
    members += [(_tarinfo("index.json", tarfile.REGTYPE, 0o644, len(index)), index),
                (_tarinfo("oci-layout", tarfile.REGTYPE, 0o644, len(layout)), layout)]
    return _tar(members)


def write_oci_archive(images: Iterable[Image], dest: Path, arch: str | None = None) -> None:
    """Write `image_archive_bytes(images, arch)` to `dest`, replacing it atomically."""
    atomic_write(Path(dest), image_archive_bytes(images, arch), 0o644)


def import_argv(ctr: str | os.PathLike, archive: str | os.PathLike, address: str | os.PathLike | None = None,
                namespace: str = "k8s.io") -> list[str]:
    """The `ctr` command that imports an archive of this module into containerd's CRI namespace,
    named as written and unpacked for the default snapshotter (what the kubelet runs from)."""
    argv = [str(ctr)]
    if address is not None:
        argv += ["--address", str(address)]
    return argv + ["--namespace", namespace, "images", "import", str(archive)]


def require_static(binary: Path) -> Path:
    """`binary` if it is an ELF executable with no program interpreter: the images hold no libc,
    and a dynamic binary would fail in the container with a bare 'no such file or directory'."""
    binary = Path(binary)
    elf = binary.read_bytes()
    if elf[:4] != b"\x7fELF" or elf[4:6] not in (b"\1\1", b"\1\2", b"\2\1", b"\2\2"):
        raise ValueError(f"{binary} is not an ELF executable")
    end = "<" if elf[5] == 1 else ">"
    # e_phoff, e_phentsize and e_phnum sit at different offsets in 32- and 64-bit headers.
    phoff_fmt, phoff_at, phent_at = ("Q", 0x20, 0x36) if elf[4] == 2 else ("I", 0x1C, 0x2A)
    try:
        (phoff,) = struct.unpack_from(end + phoff_fmt, elf, phoff_at)
        phentsize, phnum = struct.unpack_from(end + "HH", elf, phent_at)
        types = [struct.unpack_from(end + "I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
    except struct.error:
        raise ValueError(f"{binary} is a truncated ELF file") from None
    if 3 in types:  # PT_INTERP: the path of the dynamic loader
        raise ValueError(f"{binary} is dynamically linked; the lab images need a static binary")
    return binary


def pause_image(pause_binary: Path, ref: str) -> Image:
    """The sandbox image, as upstream's: /pause only, run as 65535:65535."""
    return Image(ref, (ImageFile("/pause", source=require_static(pause_binary)),),
                 entrypoint=("/pause",), user="65535:65535")


def coredns_image(coredns_binary: Path, ref: str) -> Image:
    """CoreDNS as upstream runs it: /coredns as the distroless `nonroot` user 65532. The manifest
    sets no runAsUser, so it runs as 65532 and binds :53 thanks to containerd's CRI default
    enable_unprivileged_ports = true (net.ipv4.ip_unprivileged_port_start=0 in each pod).
    No CA certificates: the Corefile forwards plain DNS and reaches the apiserver with the
    service-account CA."""
    return Image(ref, (
        ImageFile("/coredns", source=require_static(coredns_binary)),
        ImageFile("/etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n",
                  mode=0o644),
        ImageFile("/etc/group", b"root:x:0:\nnonroot:x:65532:\n", mode=0o644),
    ), entrypoint=("/coredns",), user="65532:65532", workdir="/",
        exposed_ports=("53/tcp", "53/udp", "9153/tcp"))


def busybox_image(busybox_binary: Path, ref: str = BUSYBOX_REF, applets: Iterable[str] | None = None) -> Image:
    """A busybox for test pods: /bin/busybox with a /bin symlink per applet (every applet the
    binary lists, unless `applets` is given), root and nobody, a sticky /tmp, `sh` by default."""
    binary = require_static(busybox_binary)
    if applets is None:
        listed = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=True, timeout=30)
        applets = listed.stdout.split()
    applets = sorted(set(applets) - {"busybox"})
    absent = [a for a in BUSYBOX_APPLETS if a not in applets]
    if absent:
        raise ValueError(f"{binary} lacks the applets {', '.join(absent)} that the lab's test pods use")
    links = tuple(ImageFile(f"/bin/{a}", link="busybox") for a in applets if "/" not in a)
    return Image(ref, (
        ImageFile("/bin/busybox", source=binary),
        *links,
        ImageFile("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
                  mode=0o644),
        ImageFile("/etc/group", b"root:x:0:\nnobody:x:65534:\n", mode=0o644),
        ImageFile("/root", mode=0o700),
        ImageFile("/tmp", mode=0o1777),
    ), cmd=("sh",))
