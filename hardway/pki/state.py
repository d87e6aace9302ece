"""state.json: what the PKI store records about itself, as a value.

Each CA's public-key fingerprint (so a CA copied over another is refused, not adopted) and the
encryption keys with their providers, the writing key first (docs/pki.md, 'What the store records').
`read_state` parses it, strictly; `StoreState.to_bytes` is what a run writes, and only when it changes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from .store import ENCRYPTION, STATE, Store

STATE_FORMAT = 1
_KEY_NAME = re.compile(r"key[1-9][0-9]{0,5}")
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


class EncryptionKey(NamedTuple):
    """One entry of state.json's "encryption": a key of the store and the provider it serves."""

    provider: str
    name: str  # key1, key2, ...

    @property
    def file(self) -> str:
        return encryption_file(self.name)

    @property
    def label(self) -> str:
        return f"the {self.provider} key {self.name}"

    def to_dict(self) -> dict:
        return {"provider": self.provider, "name": self.name}


@dataclass(frozen=True)
class StoreState:
    """state.json as a value: `authorities` maps each CA's name to `sha256:<hex>` of its public key;
    `encryption` is None when the file has no record of the keys (a store from before it kept one)."""

    authorities: tuple[tuple[str, str], ...] = ()
    encryption: tuple[EncryptionKey, ...] | None = None
    cluster: str | None = None  # the name of the cluster the store belongs to (None: not recorded yet)

    def fingerprint(self, name: str) -> str | None:
        return dict(self.authorities).get(name)

    def with_authorities(self, fingerprints: Iterable[tuple[str, str]]) -> StoreState:
        """A new state with these CAs' fingerprints set (added or replaced)."""
        merged = dict(self.authorities)
        merged.update(fingerprints)
        return StoreState(tuple(merged.items()), self.encryption, self.cluster)

    def to_bytes(self) -> bytes:
        data = {"format": STATE_FORMAT, "authorities": dict(self.authorities),
                "encryption": [e.to_dict() for e in self.encryption or ()]}
        if self.cluster is not None:
            data["cluster"] = self.cluster
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def encryption_file(name: str) -> str:
    """The store file of an encryption key: key1 (the first one) is encryption.key, keyN encryption-keyN.key."""
    return ENCRYPTION if name == "key1" else f"encryption-{name}.key"


def next_key_name(keys: Iterable[EncryptionKey]) -> str:
    return f"key{max((int(e.name[3:]) for e in keys), default=0) + 1}"


def read_state(store: Store, providers: Iterable[str] = ()) -> tuple[StoreState | None, str | None]:
    """(the state, None), (None, None) when there is none, (None, message) when it is broken."""
    data = store.read(STATE)
    if data is None:
        return None, None
    try:
        state = json.loads(data)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a state file of format {STATE_FORMAT}")
        authorities = state.setdefault("authorities", {})
        if not isinstance(authorities, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and _FINGERPRINT.fullmatch(v)
                for k, v in authorities.items()):
            raise ValueError("'authorities' must map each CA to sha256:<64 hex digits>")
        keys = state.get("encryption")
        if keys is not None:
            if not isinstance(keys, list) or not keys or not all(
                    isinstance(e, dict) and set(e) == {"provider", "name"} and isinstance(e["name"], str)
                    and _KEY_NAME.fullmatch(e["name"]) and isinstance(e["provider"], str) for e in keys):
                raise ValueError("'encryption' must be a list of {provider, name: keyN}, the writing key first")
            if len({e["name"] for e in keys}) != len(keys):
                raise ValueError("'encryption' names a key twice")
            unknown = sorted({e["provider"] for e in keys} - set(providers)) if providers else []
            if unknown:
                raise ValueError(f"unknown encryption provider {unknown[0]!r}")
        cluster = state.get("cluster")
        if cluster is not None and not (isinstance(cluster, str) and cluster):
            raise ValueError("'cluster' must be the cluster's name")
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        return None, (f"{STATE}: {e}. It records the identity of each CA and the encryption keys: restore it from a "
                      "backup, or delete it (the next `hardway pki` records what the store holds, trusting it on "
                      "first use)")
    encryption = None if keys is None else tuple(EncryptionKey(e["provider"], e["name"]) for e in keys)
    return StoreState(tuple(authorities.items()), encryption, cluster), None


RENAME_FLAG = "--rename-cluster"


def cluster_name_problem(state: StoreState, name: str, where: str, rename: bool = False) -> str | None:
    """Why a spec naming cluster `name` may not use this store (None: it may). A store belongs to one
    cluster: a second cluster on the same CAs would trust the first one's certificates. `where` is the
    store's directory, for the message; `rename` is the explicit way to keep the CAs under a new name."""
    if state.cluster is None or state.cluster == name or rename:
        return None
    return (f"the PKI store {where} belongs to the cluster {state.cluster!r} ({STATE}), and the spec names {name!r}: "
            "two clusters must not share CAs. For a separate cluster, give it its own store (--out other); if this "
            f"is the same cluster under a new name, run `hardway pki {RENAME_FLAG}` once")
