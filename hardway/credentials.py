"""`hardway credentials`: the cluster's admin credentials merged into the user's own kubeconfig, the
way `kind export kubeconfig` and `gcloud container clusters get-credentials` do it.

The entries hardway owns are named after the cluster: the cluster and the context `<name>`, the user
`<name>-admin` (a bare `admin` would collide with another cluster's). Every other cluster, user and
context, and every other top-level key, is kept as it was; an entry of ours is replaced in place, so a
re-run after `hardway renew` updates the credentials without duplicating anything. `merge` is the
pure part (values in, a value out); `merge_into_file` reads and writes the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import HardwayError
from .fsutil import atomic_write

ADMIN = "admin"  # the kubeconfig identity merged (units/plan.yaml, kubeconfigs)
NEW_FILE_MODE = 0o600  # it holds a private key
SECTIONS = ("clusters", "users", "contexts")


def default_path(environ=os.environ) -> Path:
    """$KUBECONFIG's first file (kubectl's own choice for new entries), else ~/.kube/config."""
    first = next((p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p), None)
    return Path(first).expanduser() if first else Path("~/.kube/config").expanduser()


def names(cluster_name: str) -> dict[str, str]:
    """The name of each entry hardway owns in the user's kubeconfig."""
    return {"clusters": cluster_name, "users": f"{cluster_name}-{ADMIN}", "contexts": cluster_name}


def ours(admin_kubeconfig: bytes, cluster_name: str) -> dict[str, dict]:
    """The cluster, user and context entries to merge, from the admin kubeconfig (CA embedded), renamed."""
    config = yaml.safe_load(admin_kubeconfig)
    own = names(cluster_name)
    cluster = dict(config["clusters"][0], name=own["clusters"])
    user = dict(config["users"][0], name=own["users"])
    context = {"name": own["contexts"], "context": {"cluster": own["clusters"], "user": own["users"]}}
    return {"clusters": cluster, "users": user, "contexts": context}


def merge(existing: dict | None, entries: dict[str, dict], set_current: bool) -> dict:
    """`existing` with `entries` (one per section, by name) added or replaced in place; nothing else changed."""
    merged = dict(existing or {})
    merged.setdefault("apiVersion", "v1")
    merged.setdefault("kind", "Config")
    for section in SECTIONS:
        items = list(merged.get(section) or [])
        entry = entries[section]
        at = next((i for i, item in enumerate(items) if isinstance(item, dict) and item.get("name") == entry["name"]),
                  None)
        if at is None:
            items.append(entry)
        else:
            items[at] = entry
        merged[section] = items
    if set_current:
        merged["current-context"] = entries["contexts"]["name"]
    return merged


@dataclass(frozen=True)
class Merged:
    path: Path
    context: str
    status: str  # "added", "updated" or "unchanged"
    current: bool  # the context is the file's current context
    new_file: bool = False


def merge_into_file(path: Path, admin_kubeconfig: bytes, cluster_name: str, set_current: bool = False) -> Merged:
    """Merge the admin credentials into the kubeconfig at `path` (created 0600 when missing; an existing
    file keeps its mode); write only when something changes."""
    target = path.resolve() if path.is_symlink() else path
    try:
        old = target.read_bytes()
    except FileNotFoundError:
        old = None
    except OSError as e:
        raise HardwayError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        existing = yaml.safe_load(old) if old else None
    except yaml.YAMLError as e:
        raise HardwayError(f"{path} is not YAML ({e}); kubectl cannot read it either: fix it, or name another "
                           "file with --kubeconfig") from None
    if existing is not None and (not isinstance(existing, dict)
                                 or any(not isinstance(existing.get(s) or [], list) for s in SECTIONS)):
        raise HardwayError(f"{path} is not a kubeconfig (a mapping with lists of clusters, users, contexts): "
                           "name another file with --kubeconfig")
    entries = ours(admin_kubeconfig, cluster_name)
    merged = merge(existing, entries, set_current)
    context = entries["contexts"]["name"]
    current = merged.get("current-context") == context
    if merged == existing:
        return Merged(path, context, "unchanged", current)
    known = any(isinstance(e, dict) and e.get("name") == context for e in (existing or {}).get("contexts") or [])
    data = yaml.safe_dump(merged, sort_keys=False, default_flow_style=False).encode()
    mode = NEW_FILE_MODE if old is None else target.stat().st_mode & 0o7777
    if old is None:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(target, data, mode)
    return Merged(path, context, "updated" if known else "added", current, new_file=old is None)
