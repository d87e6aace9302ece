"""The rendering data: units/plan.yaml (what each role gets) and units/versions.yaml (per version).

Both are read once and checked for the shape the renderer relies on, so a broken edit of either
file fails with the file and the key, not with a KeyError deep in a template.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from ..errors import HardwayError
from ..plan import PlannedDir
from ..resources import data_dir
from ..spec import ROLES
from ..versions import SUPPORTED_MINORS, KubernetesVersion
from ..yamlshape import Scan, Strict, parse_yaml, validate

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
    shared: bool = False  # `shared: true`: rendered once per run, without a node: the same bytes everywhere


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


# The shape of units/plan.yaml, checked as cluster.yaml's is (hardway.yamlshape); what the fields
# mean together (known kubeconfigs and binaries, absolute paths, octal modes) is parse_layout's.
class _Directory(Strict):
    path: str
    mode: str
    purpose: str = ""


class _File(Strict):
    path: str
    mode: str
    purpose: str = ""
    template: str | None = None
    kubeconfig: str | None = None
    when: Literal["routes"] | None = None  # only on a node with pod routes to other workers
    shared: bool = False  # rendered once per run, without a node


class _RoleRules(Strict):
    directories: list[_Directory] = []
    files: list[_File] = []
    units: list[str] = []
    binaries: list[str] = []
    packages: list[str] = []


class _Roles(Strict):  # one field per spec.ROLES
    controller: _RoleRules
    worker: _RoleRules
    loadbalancer: _RoleRules


class _Kubeconfig(Strict):
    entry: str
    user: str
    server: Literal["api_url", "local_api_url"]
    per_node: bool = False


class _Fetch(Strict):  # units/plan.yaml's comment above `binaries:` says what each field means
    artifact: str
    checksum: str
    sums: bool = False
    take: str | None = None


class _Binary(Strict):
    path: str
    version: str | None = None
    url: str | None = None
    package: str | None = None
    fetch: _Fetch | None = None


class PlanFile(Strict):
    paths: dict[str, str]
    kubeconfigs: dict[str, _Kubeconfig]
    roles: _Roles
    workstation: _RoleRules
    binaries: dict[str, _Binary]


_EXAMPLES = {"mode": '"0644" (an octal string)'}


def _mode(source: str, where: str, value: str) -> int:
    if not value.isdigit():
        raise _fail(source, where, f"mode must be an octal string like \"0644\", got {value!r}")
    return int(value, 8)


def _role_rules(source: str, where: str, raw: _RoleRules, kubeconfigs: Mapping[str, KubeconfigRule],
                binaries: Mapping[str, Any]) -> RoleRules:
    files = []
    for i, f in enumerate(raw.files):
        at = f"{where}.files[{i}]"
        if (f.template is None) == (f.kubeconfig is None):
            raise _fail(source, at, "needs exactly one of `template` or `kubeconfig`")
        if f.kubeconfig is not None and f.kubeconfig not in kubeconfigs:
            raise _fail(source, at, f"unknown kubeconfig {f.kubeconfig!r}; known: {', '.join(kubeconfigs)}")
        if not f.path.startswith("/"):
            raise _fail(source, at, f"path must be absolute, got {f.path!r}")
        if f.shared and (f.template is None or f.when is not None):
            raise _fail(source, at, "`shared: true` needs a `template` and no `when` (it is the same on every node)")
        files.append(FileRule(path=f.path, mode=_mode(source, at, f.mode), purpose=f.purpose,
                              template=f.template, kubeconfig=f.kubeconfig, only_with_routes=f.when == "routes",
                              shared=f.shared))
    dirs = tuple(PlannedDir(d.path, _mode(source, f"{where}.directories[{i}]", d.mode), d.purpose)
                 for i, d in enumerate(raw.directories))
    unknown = [b for b in raw.binaries if b not in binaries]
    if unknown:
        raise _fail(source, f"{where}.binaries", f"unknown {unknown}; known: {', '.join(binaries)}")
    return RoleRules(directories=dirs, files=tuple(files), units=tuple(raw.units),
                     binaries=tuple(raw.binaries), packages=tuple(raw.packages))


def parse_layout(raw: Any, source: str = PLAN_FILE, scan: Scan | None = None) -> Layout:
    """`scan`: the file's lines, for the messages."""
    shape, problems = validate(PlanFile, raw, scan or Scan(None), examples=_EXAMPLES)
    if shape is None:
        raise RenderDataError("\n".join(f"{source}: {p}" for p in problems))
    kubeconfigs = {name: KubeconfigRule(identity=name, entry=k.entry, user=k.user, server=k.server, per_node=k.per_node)
                   for name, k in shape.kubeconfigs.items()}
    binaries = raw["binaries"]  # the mappings as written: INSTALL.md shows their fields
    roles = {role: _role_rules(source, f"roles.{role}", getattr(shape.roles, role), kubeconfigs, binaries)
             for role in ROLES}
    workstation = _role_rules(source, "workstation", shape.workstation, kubeconfigs, binaries)
    return Layout(paths=dict(shape.paths), kubeconfigs=kubeconfigs, roles=roles, workstation=workstation,
                  binaries=binaries)


def _read(name: str) -> Any:
    path = data_dir("units") / name
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise RenderDataError(f"cannot read {path}: {e}") from None


@cache
def layout() -> Layout:
    path = data_dir("units") / PLAN_FILE
    try:
        tree, raw = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise RenderDataError(f"cannot read {path}: {e}") from None
    return parse_layout(raw, str(path), Scan(tree))


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
