"""What one bundle holds, as values: the members of the folder `<node>/`, built from the node's plan.

A node bundle is `rootfs/` (the plan's files at their install paths), `SHA256SUMS` over `rootfs/`,
`install.sh` (with the plan's manifest inside it) and `INSTALL.md`. The workstation bundle holds the
plan's files at the top of its folder (its paths are rooted at the operator's folder), `SHA256SUMS`
and a `README.md` with the bring-up order; it has no install.sh: the operator uses it in place.
Nothing here touches the disk.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache

from ..errors import HardwayError
from ..names import is_ip
from ..plan import WORKSTATION, NodePlan, hosts_markers
from ..resources import data_dir
from ..spec import Cluster

ROOTFS = "rootfs"
SUMS = "SHA256SUMS"
INSTALL_SH = "install.sh"
INSTALL_MD = "INSTALL.md"
FETCH_SH = "fetch-binaries.sh"  # downloads and verifies the binaries; install.sh never runs it
README = "README.md"
# Folder and archive modes: the folder holds keys, so only its owner may enter it once unpacked.
TOP_DIR_MODE = 0o700

# Paths go into a shell script and SHA256SUMS: keep them to characters that need no quoting.
_PATH = re.compile(r"^(/[A-Za-z0-9_@+][A-Za-z0-9._@+-]*)+$")
_UNIT = re.compile(r"^[A-Za-z0-9_@.:-]+\.(service|socket|target|timer|mount|path)$")
_MANIFEST = re.compile(r"<<'MANIFEST'\n(.*?)^MANIFEST$", re.S | re.M)


@dataclass(frozen=True)
class Member:
    """One entry of the bundle folder; `name` is relative to it ("rootfs/etc/...")."""

    name: str
    mode: int
    data: bytes | None = None  # None: a directory

    @property
    def is_dir(self) -> bool:
        return self.data is None


@dataclass(frozen=True)
class ManifestEntry:
    """One line of install.sh's manifest: what it creates (d), installs (f) or expects (b)."""

    kind: str  # "d" directory, "f" file from rootfs/, "b" binary the operator downloads
    mode: int
    sha256: str | None
    path: str


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def member_name(node: str, path: str) -> str:
    """Where a planned file sits in its bundle folder."""
    return path.lstrip("/") if node == WORKSTATION else ROOTFS + path


def install_path(node: str, name: str) -> str | None:
    """The planned path of a bundle member, or None for the bundle's own files."""
    if node == WORKSTATION:
        return None if name in (SUMS, README) else "/" + name
    return name[len(ROOTFS):] if name.startswith(ROOTFS + "/") else None


def validate(plan: NodePlan) -> None:
    """A plan the bundle can carry: safe paths, unique, sane modes, unit names. Else a HardwayError."""
    problems = []
    seen: set[str] = set()
    for kind, path, mode in [("file", f.path, f.mode) for f in plan.files] + [("directory", d.path, d.mode) for d in plan.directories]:
        if not _PATH.match(path) or any(part in (".", "..") for part in path.split("/")):
            problems.append(f"{kind} {path!r}: not an absolute path of plain names (letters, digits, . _ - @ +)")
        elif path in seen:
            problems.append(f"{kind} {path}: planned twice")
        seen.add(path)
        if not 0 <= mode <= 0o777:
            problems.append(f"{kind} {path}: mode {mode:o} is not a permission mode (0-777; no setuid/setgid/sticky)")
    if plan.node == WORKSTATION:
        for f in plan.files:
            if f.path.lstrip("/") in (SUMS, README):
                problems.append(f"file {f.path}: collides with the bundle's own {f.path.lstrip('/')}")
    for unit in plan.units:
        if not _UNIT.match(unit):
            problems.append(f"unit {unit!r}: not a systemd unit name")
    for b in plan.notes.binaries:
        path = str(b.get("path", ""))
        if not _PATH.match(path[:-1] if path.endswith("/") else path):  # a trailing / names a directory
            problems.append(f"binary {b.get('name')!r}: path {b.get('path')!r} is not an absolute path")
    if problems:
        raise HardwayError(f"the file plan of {plan.node} cannot be bundled (a rendering bug):\n  " + "\n  ".join(problems))


def manifest(plan: NodePlan) -> list[ManifestEntry]:
    """Directories first (files may land in them), then files in path order, then binaries."""
    entries = [ManifestEntry("d", d.mode, None, d.path) for d in sorted(plan.directories, key=lambda d: d.path)]
    entries += [ManifestEntry("f", f.mode, sha256(f.data), f.path) for f in sorted(plan.files, key=lambda f: f.path)]
    entries += [ManifestEntry("b", 0o755, None, b["path"]) for b in sorted(plan.notes.binaries, key=lambda b: b["path"])]
    return entries


def manifest_text(entries: list[ManifestEntry]) -> str:
    return "".join(f"{e.kind} {e.mode:o} {e.sha256 or '-'} {e.path}\n" for e in entries)


def parse_manifest(install_sh: str) -> list[ManifestEntry]:
    """The manifest inside an install.sh this module generated; ValueError if there is none."""
    m = _MANIFEST.search(install_sh)
    if not m:
        raise ValueError("install.sh has no manifest block")
    entries = []
    for line in m.group(1).splitlines():
        kind, mode, digest, path = line.split(" ")
        entries.append(ManifestEntry(kind, int(mode, 8), None if digest == "-" else digest, path))
    return entries


def sums_text(node: str, plan: NodePlan) -> str:
    """`sha256sum -c` format, one line per planned file, in path order."""
    return "".join(f"{sha256(f.data)}  {member_name(node, f.path)}\n" for f in sorted(plan.files, key=lambda f: f.path))


def members(cluster: Cluster, plan: NodePlan) -> list[Member]:
    """Every member of the bundle folder in archive order: the folder itself, then its files."""
    validate(plan)
    node = plan.node
    files = [Member(member_name(node, f.path), f.mode, f.data) for f in plan.files]
    files.append(Member(SUMS, 0o644, sums_text(node, plan).encode()))
    texts = context(cluster, plan)
    if node == WORKSTATION:
        files.append(Member(README, 0o644, render("README.md.j2", texts).encode()))
    else:
        files.append(Member(INSTALL_SH, 0o755, render("install.sh.j2", texts).encode()))
        files.append(Member(INSTALL_MD, 0o644, render("INSTALL.md.j2", texts).encode()))
        if texts["fetched"]:
            files.append(Member(FETCH_SH, 0o755, render("fetch-binaries.sh.j2", texts).encode()))
    # The folder is the only directory entry: it carries a mode (0700, for the keys inside). The
    # directories below it would carry only 0755, which every tar gives a parent it creates for a
    # file (with the extracting user's umask); each entry costs about 25 compressed bytes a bundle.
    out = [Member(node, TOP_DIR_MODE)]
    out += [Member(f"{node}/{m.name}", m.mode, m.data) for m in files]
    # Parents before children, siblings by name: the same order on every run.
    return sorted(out, key=lambda m: m.name.split("/"))


# ---------------------------------------------------------------- texts -------------------------

def _md(value: object) -> str:
    """A table cell: no pipes or line breaks."""
    return str(value).replace("|", "\\|").replace("\n", " ")


@cache
def _env():
    import jinja2  # only when a bundle is rendered: a run with nothing to do never imports it
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("units") / "bundle")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        auto_reload=False,  # templates do not change during a run: no stat() per bundle
    )
    env.filters["md"] = _md
    env.tests["startingwith"] = lambda value, prefix: str(value).startswith(prefix)
    env.filters["octal"] = lambda mode: f"{mode:04o}"
    return env



def _modules(files: list) -> list[str]:
    """The kernel modules named by modules-load.d files (one per line; # and ; start comments)."""
    names = []
    for f in files:
        for line in f.data.decode(errors="replace").splitlines():
            line = line.strip()
            if line and line[0] not in "#;" and line not in names:
                names.append(line)
    return names


def _sysctls(files: list) -> list[tuple[str, str]]:
    """(key, value) of the sysctl.d files: `key = value` lines (# and ; start comments)."""
    found = []
    for f in files:
        for line in f.data.decode(errors="replace").splitlines():
            key, eq, value = line.strip().partition("=")
            if eq and key and key.strip()[0] not in "#;":
                found.append((key.strip(), value.strip()))
    return found


def _cert_window(files: list) -> tuple[int, int] | None:
    """(latest notBefore, earliest notAfter) of the node's certificates, as Unix times: the clock of a
    node must lie between them, or TLS fails (install.sh's preflight `clock`)."""
    from cryptography import x509
    starts, ends = [], []
    for f in files:
        if f.path.endswith(".crt"):
            cert = x509.load_pem_x509_certificate(f.data)
            starts.append(int(cert.not_valid_before_utc.timestamp()))
            ends.append(int(cert.not_valid_after_utc.timestamp()))
    return (max(starts), min(ends)) if starts else None


def _window_text(window: tuple[int, int] | None) -> str:
    from datetime import datetime, timezone
    if window is None:
        return ""
    start, end = (datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M") for t in window)
    return f"{start} to {end} UTC"


def _node_spec(cluster: Cluster, name: str):
    try:
        return cluster.node(name)
    except KeyError:  # the workstation
        return None


def context(cluster: Cluster, plan: NodePlan) -> dict:
    """What the templates of units/bundle/ see, built once per bundle."""
    notes = plan.notes
    files = sorted(plan.files, key=lambda f: f.path)
    modules_files = [f for f in files if f.path.startswith("/etc/modules-load.d/")]
    entries = manifest(plan) if plan.node != WORKSTATION else []
    downloads = [b for b in notes.binaries if "package" not in b]
    return dict(
        cluster=cluster,
        plan=plan,
        node=plan.node,
        roles=sorted(plan.roles),
        files=files,
        modules_files=modules_files,
        modules=_modules(modules_files),
        sysctl_files=[f for f in files if f.path.startswith("/etc/sysctl.d/")],
        sysctls=_sysctls([f for f in files if f.path.startswith("/etc/sysctl.d/")]),
        cert_window=_cert_window(files),
        cert_window_text=_window_text(_cert_window(files)),
        node_spec=_node_spec(cluster, plan.node),
        directories=sorted(plan.directories, key=lambda d: d.path),
        units=list(plan.units),
        manifest=manifest_text(entries),
        binaries=list(notes.binaries),
        downloads=downloads,  # the other binaries come from Debian packages
        fetched=[b for b in downloads if b.get("fetch")],
        fetch_sh=FETCH_SH,
        packaged=[b for b in notes.binaries if "package" in b],
        packages=list(notes.packages),
        # whether this node keeps pod routes (its pod-routes.service); the routes themselves are in the
        # node table, which INSTALL.md points at instead of repeating it (it would grow with the cluster)
        routes=any(f.path.endswith("/pod-routes.service") for f in files),
        node_table=next((f.path for f in files if f.shared and f.path.endswith("/cluster-nodes.tsv")), None),
        node_tool=next((f.path for f in files if f.shared and f.path.endswith("/hardway-nodes.sh")), None),
        hosts_markers=hosts_markers(cluster.name),
        has=lambda path: path in plan.paths,
        endpoint_is_name=not is_ip(cluster.api_endpoint),
        example_binary=next((b for b in downloads if not b["path"].endswith("/")
                             and not str(b.get("url_hint", "")).split()[0].endswith((".tar.gz", ".tgz"))),
                            (downloads or [None])[0]),
        hosts_file=next((f.path.lstrip("/") for f in files if f.path == "/hosts"), None),
        routes_file=next((f.path.lstrip("/") for f in files if f.path.rsplit("/", 1)[-1].startswith("routes")), None),
        ROOTFS=ROOTFS,
        member_name=lambda path: member_name(plan.node, path),
    )


def render(template: str, context: dict) -> str:
    import jinja2
    try:
        return _env().get_template(template).render(context)
    except jinja2.UndefinedError as e:
        raise HardwayError(f"units/bundle/{template}: {e} (node {context['node']})") from None
