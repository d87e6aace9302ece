"""Least privilege, judged by content: which secrets a node's files really hold, and may they.

Every file of a plan or a bundle is searched for private keys (PEM blocks, and base64 data that
decodes to one, as in a kubeconfig's client-key-data) and for the encryption-at-rest key (raw or
base64). Each private key is identified by its public key against the PKI store: whose key it is
(catalog entry and node), not what the file is called. A secret is allowed only when the table
below grants it to one of the node's roles; anything else is a finding, as is a key the store does
not know, a file that is unreadable as a key, or a secret file readable by group or others.

The table is written from the delivery rules, independently of the catalog's `deliver` lists, so a
mistake in the catalog or in rendering shows up here.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Iterable, TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..pki.issue import key_fingerprint
from ..plan import WORKSTATION

if TYPE_CHECKING:
    from ..pki.materials import Materials

OWN, CLUSTER = "own", "cluster"
SERVICE_ACCOUNT, ENCRYPTION = "service-account", "encryption"

# role -> the secrets it may hold: (entry, OWN: this node's own | CLUSTER: the cluster-wide one)
ALLOWED: dict[str, frozenset[tuple[str, str]]] = {
    "controller": frozenset({
        ("ca", CLUSTER),  # kube-controller-manager signs kubelet CSRs with it
        ("kube-apiserver", OWN), ("apiserver-kubelet-client", CLUSTER), ("apiserver-etcd-client", CLUSTER),
        ("front-proxy-client", CLUSTER), ("etcd-server", OWN), ("etcd-peer", OWN),
        ("etcd-healthcheck-client", CLUSTER), ("kube-controller-manager", CLUSTER), ("kube-scheduler", CLUSTER),
        (SERVICE_ACCOUNT, CLUSTER), (ENCRYPTION, CLUSTER),
    }),
    "worker": frozenset({("kubelet-serving", OWN), ("kubelet-client", OWN), ("kube-proxy", CLUSTER)}),
    "loadbalancer": frozenset(),
    WORKSTATION: frozenset({("admin", CLUSTER), ("super-admin", CLUSTER)}),
}
# Keys that never leave the store, whatever a table above says.
NEVER = frozenset({"etcd-ca", "front-proxy-ca"})

_PEM_KEY = re.compile(rb"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY)-----.+?-----END \1-----", re.S)
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_BASE64 = re.compile(rb"[A-Za-z0-9+/]{40,}={0,2}")
_CLIENT_KEY = re.compile(rb"client-key-data:[ \t]*[\"']?([A-Za-z0-9+/]{40,}={0,2})")


@dataclass(frozen=True)
class Finding:
    node: str
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.node}: {self.path}: {self.problem}"


@dataclass(frozen=True)
class FoundKey:
    where: str  # "PEM block", "client-key-data of user X", ...
    fingerprint: str | None  # sha256 of the public key (SPKI DER); None if unreadable
    error: str = ""


def cert_fingerprint(pem: bytes) -> str:
    """The public key fingerprint of a PEM certificate."""
    return key_fingerprint(x509.load_pem_x509_certificate(pem).public_key())


def _key_fingerprint(pem: bytes) -> FoundKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=True)
    except TypeError:
        return FoundKey("PEM block", None, "an encrypted private key (hardway never writes one)")
    except (ValueError, TypeError, binascii.Error):
        return FoundKey("PEM block", None, "an unreadable private key")
    return FoundKey("PEM block", key_fingerprint(key))


def _decoded_tokens(data: bytes) -> Iterable[bytes]:
    for token in _BASE64.findall(data):
        try:
            yield base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            continue


def _kubeconfig_key_tokens(data: bytes) -> set[bytes]:
    """The values of client-key-data fields (a kubeconfig), found without parsing YAML (fast)."""
    return set(_CLIENT_KEY.findall(data))


def private_keys(data: bytes) -> list[FoundKey]:
    """Every private key in a file: PEM blocks, and PEM blocks inside base64 data."""
    found = [_key_fingerprint(m.group(0)) for m in _PEM_KEY.finditer(data)]
    in_kubeconfig = _kubeconfig_key_tokens(data)
    for token in _BASE64.findall(data):
        try:
            decoded = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            continue
        if b"PRIVATE KEY-----" not in decoded:
            continue
        where = "a kubeconfig's client-key-data" if token in in_kubeconfig else "base64 data"
        for m in _PEM_KEY.finditer(decoded):
            k = _key_fingerprint(m.group(0))
            found.append(FoundKey(where, k.fingerprint, k.error))
    return found


def certificates(data: bytes) -> list[bytes]:
    """Every PEM certificate in a file, directly or inside base64 data (kubeconfigs)."""
    found = [m.group(0) for m in _PEM_CERT.finditer(data)]
    for decoded in _decoded_tokens(data):
        if b"-----BEGIN CERTIFICATE-----" in decoded:
            found += [m.group(0) for m in _PEM_CERT.finditer(decoded)]
    return found


def holds_encryption_key(data: bytes, key: bytes) -> bool:
    return key in data or base64.b64encode(key) in data or key.hex().encode() in data


class Checker:
    """Least privilege for the nodes of one cluster against one PKI store's materials."""

    def __init__(self, cluster, materials: Materials):
        self.cluster = cluster
        self.materials = materials
        self._allowed: dict[tuple, str | None] = {}
        self._index: dict[str, tuple[str, str | None]] | None = None
        self._shared: dict[tuple[str, bytes], tuple[list, bool]] = {}  # shared files (node table): scanned once

    def roles(self, node: str) -> frozenset[str]:
        if node == WORKSTATION:
            return frozenset({WORKSTATION})
        return self.cluster.node(node).roles

    def allowed(self, node: str) -> dict[str, tuple[str, str | None]]:
        """fingerprint -> (entry, node) of every key this node may hold."""
        grants = {g for role in self.roles(node) for g in ALLOWED.get(role, ())}
        out = {}
        for entry, scope in grants:
            if entry in NEVER or entry == ENCRYPTION:
                continue
            owner = node if scope == OWN else None
            fp = self._fingerprint_of(entry, owner)
            if fp:
                out[fp] = (entry, owner)
        return out

    def may_hold_encryption_key(self, node: str) -> bool:
        return any((ENCRYPTION, CLUSTER) in ALLOWED.get(role, ()) for role in self.roles(node))

    def _fingerprint_of(self, entry: str, node: str | None) -> str | None:
        if (entry, node) not in self._allowed:
            try:
                if entry == SERVICE_ACCOUNT:
                    fp = key_fingerprint(serialization.load_pem_public_key(self.materials.service_account_public))
                else:
                    fp = cert_fingerprint(self.materials.cert(entry, node))
            except (KeyError, ValueError):
                fp = None
            self._allowed[(entry, node)] = fp
        return self._allowed[(entry, node)]

    def identify(self, fp: str) -> tuple[str, str | None] | None:
        """Whose key this is in the store (built once, on the first key that is not allowed)."""
        if self._index is None:
            self._index = {}
            for (entry, node), pem in self.materials.certs.items():
                try:
                    self._index[cert_fingerprint(pem)] = (entry, node)
                except ValueError:
                    continue
            sa = self._fingerprint_of(SERVICE_ACCOUNT, None)
            if sa:
                self._index[sa] = (SERVICE_ACCOUNT, None)
        return self._index.get(fp)

    def _scan(self, f) -> tuple[list, bool]:
        """(private keys, holds the encryption key) of one file; the same for every node, so a shared
        file's scan is kept for the run."""
        key = (f.path, f.data) if getattr(f, "shared", False) else None
        if key is not None and key in self._shared:
            return self._shared[key]
        found = (private_keys(f.data), any(holds_encryption_key(f.data, k) for k in
                 [k for _, _, k in self.materials.encryption_keys] or [self.materials.encryption_key]))
        if key is not None:
            self._shared[key] = found
        return found

    def check(self, node: str, files: Iterable) -> list[Finding]:
        """`files`: objects with .path, .mode and .data (PlannedFile, or members read from a bundle)."""
        allowed = None  # computed on the first key found (most files hold none; the node table never)
        may_encrypt = self.may_hold_encryption_key(node)
        kind = "the workstation" if node == WORKSTATION else f"a {'+'.join(sorted(self.roles(node)))} node"
        findings = []
        for f in files:
            secret = False
            keys, holds_encryption = self._scan(f)
            for k in keys:
                secret = True
                if k.fingerprint is None:
                    findings.append(Finding(node, f.path, f"{k.where}: {k.error}"))
                    continue
                if allowed is None:
                    allowed = self.allowed(node)
                if k.fingerprint in allowed:
                    continue
                owner = self.identify(k.fingerprint)
                if owner is None:
                    findings.append(Finding(node, f.path, f"{k.where}: a private key the PKI store does not know "
                                                          "(a stale bundle, or a key made outside hardway)"))
                else:
                    findings.append(Finding(node, f.path, f"{k.where}: the private key of {_label(*owner)}, "
                                                          f"which {kind} must not hold"))
            if holds_encryption:
                secret = True
                if not may_encrypt:
                    findings.append(Finding(node, f.path, f"the encryption-at-rest key, which {kind} must not hold"))
            if secret and f.mode & 0o077:
                findings.append(Finding(node, f.path, f"holds a secret but its mode is {f.mode:04o}; "
                                                      "secrets must be 0600"))
        return findings


def _label(entry: str, node: str | None) -> str:
    return f"{entry} of {node}" if node else entry
