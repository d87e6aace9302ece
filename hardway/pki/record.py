"""verified.json: what each leaf of the store was last verified as, so a run with nothing to do
skips re-parsing and re-verifying every certificate (docs/pki.md, 'What the store records').

For each leaf (`admin`, `nodes/worker-0001/kubelet-client`) the record holds a `Vouch`: the SHA-256
of its certificate file and of its key file, the digest of what the catalog asked of it for this
spec (`want_digest`: identity, signer, key algorithm), the SHA-256 of the signing CA's certificate
file, and the certificate's NotBefore/NotAfter. A leaf is kept without being parsed only when every
one of those still matches: the same bytes on disk, the same desired state, the same CA bytes (a CA
that is itself kept, after its full check). Time is still checked on every run (expired or not yet
valid falls to the full check, which says why). Anything else (a changed or missing file, a changed
spec value, another CA, another version of these checks) gets the full check of `assess`, and the
next record is written from what that check found.

The record only ever skips work: a missing, unreadable or malformed record means "verify
everything", silently. `hardway check` never reads it. It is written atomically (the store's one
write path), after the leaves it names are durable, and only when it changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

from .catalog import Desired

RECORD = "verified.json"
RECORD_FORMAT = 1
# What a vouch stands for: the checks of assess._assess_leaf (key readable and of the spec's algorithm,
# certificate readable, matching its key, signed by its CA, no `issue.differences`). Change this when
# those checks change: a record made by other checks is then not trusted.
CHECKS = "leaf-checks-1"
_HEX = re.compile(r"[0-9a-f]{64}")
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode  # one encoder: json.dumps(..., separators=) makes one a call


@dataclass(frozen=True)
class Vouch:
    """One leaf as last verified: digests of its files, of its desired state and of its CA's
    certificate, and its validity (seconds since the epoch)."""

    crt: str
    key: str
    want: str
    ca: str
    not_before: int
    not_after: int

    def to_list(self) -> list:
        return [self.crt, self.key, self.want, self.ca, self.not_before, self.not_after]

    @property
    def not_before_utc(self) -> datetime:
        return datetime.fromtimestamp(self.not_before, timezone.utc)

    @property
    def not_after_utc(self) -> datetime:
        return datetime.fromtimestamp(self.not_after, timezone.utc)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def want_digest(d: Desired, key_algorithm: str) -> str:
    """The digest of what the catalog asks of this leaf for this spec: entry, node, signer, the spec's
    key algorithm, and the identity (subject, usages, SANs in catalog order)."""
    i = d.identity
    text = _COMPACT([d.entry, d.node, d.signer, key_algorithm, i.cn, list(i.organizations), sorted(i.usages),
                     list(i.dns_names), [str(ip) for ip in i.ip_addresses]])
    return digest(text.encode())


def leaf_name(entry: str, node: str | None) -> str:
    return f"nodes/{node}/{entry}" if node else entry


def epoch(at: datetime) -> int:
    return int(at.timestamp())


def read_record(data: bytes | None) -> dict[str, Vouch]:
    """The vouches of a record file; {} when there is none or it is not one this version wrote (the
    full check then runs for every leaf, and the next run writes a good record)."""
    if not data:
        return {}
    try:
        record = json.loads(data)
        if not (isinstance(record, dict) and record.get("format") == RECORD_FORMAT and record.get("checks") == CHECKS
                and isinstance(record.get("leaves"), dict)):
            return {}
        vouches = {}
        for name, v in record["leaves"].items():
            if not (isinstance(name, str) and isinstance(v, list) and len(v) == 6
                    and all(isinstance(x, str) and _HEX.fullmatch(x) for x in v[:4])
                    and all(type(x) is int for x in v[4:])):
                return {}
            vouches[name] = Vouch(*v)
        return vouches
    except (ValueError, TypeError, RecursionError):  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return {}


def record_bytes(vouches: Mapping[str, Vouch]) -> bytes:
    """The record file: one leaf a line, sorted, so an unchanged store writes the same bytes."""
    lines = [f"  {_COMPACT(name)}: {_COMPACT(vouches[name].to_list())}" for name in sorted(vouches)]
    head = f'{{\n  "format": {RECORD_FORMAT},\n  "checks": "{CHECKS}",\n  "leaves": {{\n'
    return (head + ",\n".join("  " + line for line in lines) + ("\n" if lines else "") + "  }\n}\n").encode()
