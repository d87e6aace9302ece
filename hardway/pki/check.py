"""`hardway check` for the PKI store: every chain, key pair, subject, SAN, usage and expiry against the
catalog and the spec, as rows like `kubeadm certs check-expiration` prints, plus the problems found.

It reuses the reconciler's assessment: anything `pki` would create or re-issue is a problem here,
anything it would refuse to touch is a problem too. Expiring within 30 days is a warning.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from cryptography import x509

from ..names import first_names
from ..spec import Cluster
from . import issue
from .catalog import Catalog, default_catalog
from .actions import ERROR, KEEP, Action
from .assess import assess
from .store import DIR_MODE, DiskStore, cert_rel, leftover_temp_files

WARN_WITHIN = timedelta(days=30)


class Status(StrEnum):
    """A row of `check`."""

    OK = "ok"
    WARNING = "warning"
    FAILED = "error"


OK, WARNING, FAILED = Status


@dataclass(frozen=True)
class CertRow:
    certificate: str
    node: str | None
    signer: str  # the CA's name; "self-signed" for a CA
    expires: datetime | None
    residual: timedelta | None
    status: Status
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"certificate": self.certificate, "node": self.node, "signer": self.signer,
                "expires": self.expires.isoformat() if self.expires else None,
                "residual_seconds": int(self.residual.total_seconds()) if self.residual is not None else None,
                "residual": format_residual(self.residual), "status": self.status, "problems": list(self.problems)}


@dataclass
class CheckReport:
    store: str
    rows: list[CertRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, "store": self.store, "certificates": [r.to_dict() for r in self.rows],
                "problems": self.problems, "warnings": self.warnings}


def format_residual(residual: timedelta | None) -> str:
    """kubeadm's short spelling: 9y, 364d, 23h; 'expired' when past."""
    if residual is None:
        return "-"
    seconds = residual.total_seconds()
    if seconds <= 0:
        return "expired"
    hours = seconds / 3600
    if hours < 48:
        return f"{int(hours)}h"
    days = hours / 24
    return f"{int(days)}d" if days < 365 * 2 else f"{int(days // 365)}y"


def _label(entry: str, node: str | None) -> str:
    return f"{entry} ({node})" if node else entry


def _structure(cert: x509.Certificate) -> list[str]:
    """What `openssl verify -x509_strict` would object to, checked without it."""
    found = []
    if cert.version != x509.Version.v3:
        found.append("not an X.509 v3 certificate")
    if cert.serial_number <= 0:
        found.append("serial number is not positive")
    for ext in (x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier):
        try:
            cert.extensions.get_extension_for_class(ext)
        except x509.ExtensionNotFound:
            found.append(f"{ext.__name__} extension missing")
    return found


def check_store(cluster: Cluster, store_dir: Path, catalog: Catalog | None = None,
                at: datetime | None = None) -> CheckReport:
    catalog = catalog or default_catalog()
    at = at or issue.now()
    root = Path(store_dir)
    report = CheckReport(store=str(root))
    if not root.is_dir():
        report.problems.append(f"no PKI store at {root}; run `hardway pki`")
        return report
    store = DiskStore(root)
    plan = assess(cluster, store, catalog, at, thorough=True)

    def row(entry: str, node: str | None, signer: str, data: bytes | None, verdict: Action) -> None:
        problems = []
        if verdict.action != KEEP:
            problems.append(verdict.reason if verdict.action == ERROR else f"`hardway pki` would {verdict.action} it: {verdict.reason}")
        cert = None
        if data is not None:
            try:
                cert = issue.load_cert(data)
            except ValueError:
                pass
        expires = cert.not_valid_after_utc if cert else None
        residual = expires - at if expires else None
        status = FAILED if problems else OK
        if status == OK and residual is not None and residual < WARN_WITHIN:
            status = WARNING
            when = f"expires in {format_residual(residual)} ({expires:%Y-%m-%d %H:%M} UTC)"
            if entry in catalog.authority_names:
                report.warnings.append(f"{entry}: the CA {when}; plan its replacement (docs/pki.md, 'Replacing a CA')")
            else:
                report.warnings.append(f"{_label(entry, node)}: {when}; renew it: hardway renew --entry {entry}"
                                       + (f" --node {node}" if node else ""))
        if cert is not None and entry not in catalog.authority_names:
            problems += [p for p in _structure(cert) if p not in problems]
            status = FAILED if problems else status
        report.problems += [f"{_label(entry, node)}: {p}" for p in problems]
        report.rows.append(CertRow(entry, node, signer, expires, residual, status, tuple(problems)))

    for ca in plan.authorities:
        name = ca.name
        row(name, None, "self-signed" if ca.cert is None or ca.cert.issuer == ca.cert.subject else "external",
            store.read(f"{name}.crt"), ca.action)
    for leaf in plan.leaves:
        d = leaf.desired
        row(d.entry, d.node, d.signer, store.read(cert_rel(d.entry, d.node)), leaf.action)
    for action in (plan.service_account.action, plan.encryption.action):
        if action.action != KEEP:
            report.problems.append(f"{action.entry}: " + (action.reason if action.action == ERROR
                                                           else f"`hardway pki` would {action.action} it: {action.reason}"))
    report.problems += [e for e in plan.errors if not any(e in p for p in report.problems)]
    if plan.encryption.note and plan.encryption.action.action == KEEP:
        report.warnings.append(f"encryption: {plan.encryption.note}")

    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o777 != DIR_MODE:
            report.problems.append(f"{path}: directory mode {st.st_mode & 0o777:04o}, want {DIR_MODE:04o}")
        elif stat.S_ISREG(st.st_mode) and path.suffix == ".key" and st.st_mode & 0o077:
            report.problems.append(f"{path}: key mode {st.st_mode & 0o777:04o} lets others read it, want 0600")
    for p in leftover_temp_files(root):
        report.warnings.append(f"{p}: left by an interrupted run (the next `hardway pki` removes it)")
    stale = sorted(set(store.node_dirs()) - {n.name for n in cluster.nodes})
    if stale:
        report.warnings.append(f"{os.path.join(root, 'nodes')}: directories of nodes not in the spec: "
                               f"{first_names(stale, 10, ', ...')}")
    return report
