"""`hardway check` for bundles: what is on disk in <out>/bundles, read back and verified.

For every bundle: the archive is readable and shaped like a bundle; every SHA256SUMS line matches
its member and every file is listed; install.sh's manifest agrees with the files; least privilege
holds (by content, see privilege.py); and every path a unit, config or kubeconfig names is provided
by the same bundle (references.py). Plus: a bundle for each node of the spec, none for others.
The same checks run on each plan before `hardway bundle` writes it (`plan_problems`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..plan import WORKSTATION
from ..progress import Progress, silent
from ..spec import Cluster
from . import layout, references
from .archive import SUFFIX, ArchiveError, archived_nodes, read_archive
from .privilege import Checker

if TYPE_CHECKING:
    from ..pki.materials import Materials

_SUM_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$")


@dataclass
class BundleRow:
    node: str
    archive: str
    files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"node": self.node, "archive": self.archive, "files": self.files, "ok": self.ok,
                "problems": self.problems}


@dataclass
class BundleReport:
    bundles: Path
    rows: list[BundleRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # not tied to one bundle
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.rows)

    def all_problems(self) -> list[str]:
        return self.problems + [f"{r.node}: {p}" for r in self.rows for p in r.problems]

    def to_dict(self) -> dict:
        return {"dir": str(self.bundles), "ok": self.ok, "bundles": [r.to_dict() for r in self.rows],
                "problems": self.problems, "notes": self.notes}


@dataclass(frozen=True)
class _File:
    path: str
    mode: int
    data: bytes


def plan_problems(checker: Checker | None, plan) -> list[str]:
    """Least privilege and references of a plan, before it is written."""
    problems = []
    if checker is not None:
        problems += [f"{f.path}: {f.problem}" for f in checker.check(plan.node, plan.files)]
    binaries = [b["path"] for b in plan.notes.binaries]
    for ref in references.unresolved(list(plan.files), [d.path for d in plan.directories], binaries):
        problems.append(f"{ref.path} names {ref.target}, which this node's bundle does not provide")
    return problems


def _sums_problems(members: dict[str, layout.Member], node: str) -> list[str]:
    problems = []
    sums = members.get(layout.SUMS)
    if sums is None:
        return [f"{layout.SUMS} is missing"]
    listed: set[str] = set()
    for i, line in enumerate(sums.data.decode("utf-8", "replace").splitlines(), 1):
        m = _SUM_LINE.match(line)
        if not m:
            problems.append(f"{layout.SUMS} line {i} is not `<sha256>  <path>`: {line[:80]!r}")
            continue
        digest, name = m.groups()
        listed.add(name)
        member = members.get(name)
        if member is None:
            problems.append(f"{name}: listed in {layout.SUMS} but missing from the bundle")
        elif layout.sha256(member.data) != digest:
            problems.append(f"{name}: checksum mismatch (the file was changed after `hardway bundle`)")
    for name in sorted(members):
        if layout.install_path(node, name) is not None and name not in listed:
            problems.append(f"{name}: in the bundle but not listed in {layout.SUMS}")
    return problems


def check_bundle(cluster: Cluster, checker: Checker | None, path: Path, node: str) -> BundleRow:
    row = BundleRow(node, str(path))
    try:
        members = read_archive(path, node)
    except ArchiveError as e:
        row.problems.append(f"{path.name}: {e}")
        return row
    files = [_File(layout.install_path(node, name), m.mode, m.data) for name, m in members.items()
             if layout.install_path(node, name) is not None]
    row.files = len(files)
    row.problems += _sums_problems(members, node)
    directories: list[str] = []
    binaries: list[str] = []
    if node != WORKSTATION:
        script = members.get(layout.INSTALL_SH)
        if layout.INSTALL_MD not in members:
            row.problems.append(f"{layout.INSTALL_MD} is missing")
        if script is None:
            row.problems.append(f"{layout.INSTALL_SH} is missing")
        else:
            try:
                manifest = layout.parse_manifest(script.data.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                row.problems.append(f"{layout.INSTALL_SH}: {e}")
                manifest = []
            planned = {e.path: e for e in manifest if e.kind == "f"}
            directories = [e.path for e in manifest if e.kind == "d"]
            binaries = [e.path for e in manifest if e.kind == "b"]
            by_path = {f.path: f for f in files}
            for p in sorted(set(planned) - set(by_path)):
                row.problems.append(f"{p}: in install.sh's manifest but not in rootfs/")
            for p in sorted(set(by_path) - set(planned)):
                row.problems.append(f"{p}: in rootfs/ but not in install.sh's manifest (it would refuse to install)")
            for p in sorted(set(planned) & set(by_path)):
                e, f = planned[p], by_path[p]
                if e.sha256 != layout.sha256(f.data):
                    row.problems.append(f"{p}: differs from the checksum in install.sh's manifest")
                if e.mode != f.mode:
                    row.problems.append(f"{p}: mode {f.mode:04o} in the archive, {e.mode:04o} in install.sh's manifest")
            # install.sh installs with the manifest's modes: judge those.
            files = [_File(f.path, planned[f.path].mode if f.path in planned else f.mode, f.data) for f in files]
    if checker is not None:
        row.problems += [f"{f.path}: {f.problem}" for f in checker.check(node, files)]
    for ref in references.unresolved(files, directories, binaries):
        row.problems.append(f"{ref.path} names {ref.target}, which this bundle does not provide")
    return row


def check_bundles(cluster: Cluster, out: Path, materials: Materials | None = None, materials_error: str | None = None, *,
                  progress: Progress = silent) -> BundleReport:
    bundles = out / "bundles"
    report = BundleReport(bundles)
    present = set(archived_nodes(bundles))
    if not present:
        report.notes.append(f"no bundles in {bundles} yet: `hardway bundle` writes them")
        return report
    checker = Checker(cluster, materials) if materials is not None else None
    if checker is None:
        report.problems.append(f"least privilege not verified: {materials_error or 'no PKI materials'}")
    with progress("checking bundles", len(cluster.nodes) + 1) as advance:
        for node in [n.name for n in cluster.nodes] + [WORKSTATION]:
            path = bundles / f"{node}{SUFFIX}"
            if node not in present:
                report.problems.append(f"{node}: no bundle ({path.name} missing); run `hardway bundle`")
            else:
                report.rows.append(check_bundle(cluster, checker, path, node))
            advance()
    wanted = {n.name for n in cluster.nodes} | {WORKSTATION}
    for node in sorted(present - wanted):
        report.problems.append(f"{node}{SUFFIX}: a bundle for a node that is not in the spec; "
                               "`hardway bundle` removes it")
    return report
