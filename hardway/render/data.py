"""The rendering data: units/plan.yaml (what each role gets) and units/versions.yaml (per version).

Both are read once and checked for the shape the renderer relies on, so a broken edit of either
file fails with the file and the key, not with a KeyError deep in a template.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import HardwayError
from ..plan import PlannedDir
from ..resources import data_dir
from ..spec import ROLES
from ..versions import SUPPORTED_MINORS, KubernetesVersion

PLAN_FILE = "plan.yaml"
VERSIONS_FILE = "versions.yaml"
_VERSION_KEYS = ("etcd", "coredns", "pause", "containerd", "runc", "cni_plugins", "crictl",
                 "containerd_config", "kube_proxy", "api")
_API_KEYS = ("kubelet", "kube_proxy", "kube_scheduler", "encryption", "audit")


class RenderDataError(HardwayError):
    """units/plan.yaml or units/versions.yaml is not what the renderer needs."""


@dataclass(frozen=True)
class FileRule:
    path: str
    mode: int
    purpose: str
    template: str | None = None
    kubeconfig: str | None = None
    only_with_routes: bool = False  # `when: routes`: only on a node with pod routes to other workers


@dataclass(frozen=True)
class RoleRules:
    directories: tuple[PlannedDir, ...]
    files: tuple[FileRule, ...]
    units: tuple[str, ...]
    binaries: tuple[str, ...]
    packages: tuple[str, ...]


@dataclass(frozen=True)
class KubeconfigRule:
    identity: str
    entry: str
    user: str  # may hold {node}
    server: str  # the name of a Cluster attribute: api_url or local_api_url
    per_node: bool = False


@dataclass(frozen=True)
class Layout:
    paths: Mapping[str, str]
    kubeconfigs: Mapping[str, KubeconfigRule]
    roles: Mapping[str, RoleRules]
    workstation: RoleRules
    binaries: Mapping[str, Mapping[str, str]]


def _fail(source: str, where: str, what: str) -> RenderDataError:
    return RenderDataError(f"{source}: {where}: {what}")


def _mode(source: str, where: str, value: Any) -> int:
    if not isinstance(value, str) or not value.isdigit():
        raise _fail(source, where, f"mode must be an octal string like \"0644\", got {value!r}")
    return int(value, 8)


def _role_rules(source: str, where: str, raw: Any, kubeconfigs: Mapping[str, KubeconfigRule],
                binaries: Mapping[str, Any]) -> RoleRules:
    if not isinstance(raw, dict):
        raise _fail(source, where, "must be a mapping with directories, files, units, binaries, packages")
    files = []
    for i, f in enumerate(raw.get("files") or []):
        at = f"{where}.files[{i}]"
        if ("template" in f) == ("kubeconfig" in f):
            raise _fail(source, at, "needs exactly one of `template` or `kubeconfig`")
        if "kubeconfig" in f and f["kubeconfig"] not in kubeconfigs:
            raise _fail(source, at, f"unknown kubeconfig {f['kubeconfig']!r}; known: {', '.join(kubeconfigs)}")
        if not str(f.get("path", "")).startswith("/"):
            raise _fail(source, at, f"path must be absolute, got {f.get('path')!r}")
        if f.get("when", "routes") != "routes":
            raise _fail(source, at, f"when: only `routes` is known, got {f['when']!r}")
        files.append(FileRule(path=f["path"], mode=_mode(source, at, f.get("mode")), purpose=f.get("purpose", ""),
                              template=f.get("template"), kubeconfig=f.get("kubeconfig"),
                              only_with_routes="when" in f))
    dirs = tuple(PlannedDir(d["path"], _mode(source, f"{where}.directories[{i}]", d.get("mode")), d.get("purpose", ""))
                 for i, d in enumerate(raw.get("directories") or []))
    names = tuple(raw.get("binaries") or ())
    unknown = [b for b in names if b not in binaries]
    if unknown:
        raise _fail(source, f"{where}.binaries", f"unknown {unknown}; known: {', '.join(binaries)}")
    return RoleRules(directories=dirs, files=tuple(files), units=tuple(raw.get("units") or ()),
                     binaries=names, packages=tuple(raw.get("packages") or ()))


def parse_layout(raw: Any, source: str = PLAN_FILE) -> Layout:
    if not isinstance(raw, dict):
        raise _fail(source, "(top level)", "must be a mapping")
    for key in ("paths", "kubeconfigs", "roles", "workstation", "binaries"):
        if not isinstance(raw.get(key), dict):
            raise _fail(source, key, "missing, or not a mapping")
    kubeconfigs = {}
    for name, k in raw["kubeconfigs"].items():
        if k.get("server") not in ("api_url", "local_api_url"):
            raise _fail(source, f"kubeconfigs.{name}.server", f"must be api_url or local_api_url, got {k.get('server')!r}")
        kubeconfigs[name] = KubeconfigRule(identity=name, entry=k["entry"], user=k["user"], server=k["server"],
                                           per_node=bool(k.get("per_node", False)))
    roles = {}
    for role in ROLES:
        if role not in raw["roles"]:
            raise _fail(source, "roles", f"no rules for role {role!r}")
        roles[role] = _role_rules(source, f"roles.{role}", raw["roles"][role], kubeconfigs, raw["binaries"])
    workstation = _role_rules(source, "workstation", raw["workstation"], kubeconfigs, raw["binaries"])
    return Layout(paths=dict(raw["paths"]), kubeconfigs=kubeconfigs, roles=roles, workstation=workstation,
                  binaries=raw["binaries"])


def _read(name: str) -> Any:
    path = data_dir("units") / name
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise RenderDataError(f"cannot read {path}: {e}") from None


@cache
def layout() -> Layout:
    return parse_layout(_read(PLAN_FILE), str(data_dir("units") / PLAN_FILE))


def check_version_table(table: Any, source: str = VERSIONS_FILE) -> dict[str, dict]:
    if not isinstance(table, dict):
        raise _fail(source, "(top level)", "must map each minor (\"1.37\") to its row")
    missing = [m for m in SUPPORTED_MINORS if m not in table]
    if missing:
        raise _fail(source, "(top level)", f"no row for supported minor(s) {', '.join(missing)}")
    for minor, row in table.items():
        absent = [k for k in _VERSION_KEYS if k not in (row or {})]
        if absent:
            raise _fail(source, f'"{minor}"', f"missing {', '.join(absent)}")
        absent = [k for k in _API_KEYS if k not in row["api"]]
        if absent:
            raise _fail(source, f'"{minor}".api', f"missing {', '.join(absent)}")
    return table


@cache
def version_table() -> dict[str, dict]:
    return check_version_table(_read(VERSIONS_FILE), str(data_dir("units") / VERSIONS_FILE))


def version_row(version: KubernetesVersion) -> dict:
    """The versions.yaml row for `version`'s minor."""
    table = version_table()
    try:
        return table[version.minor_key]
    except KeyError:
        raise RenderDataError(f"{data_dir('units') / VERSIONS_FILE}: no row for Kubernetes {version.minor_key}; "
                              f"rows: {', '.join(table)}") from None


def units_dir() -> Path:
    return data_dir("units")
