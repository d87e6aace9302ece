"""Each node's file plan: its PKI files, its kubeconfigs, and the units and configs rendered for it.

What a role receives is data (units/plan.yaml); the templates are in units/. This module only builds
the template context: the Cluster value itself, the node, its versions.yaml row and a few values
that are per cluster (hosts lines, routes, names read from the certificates), computed once.
"""

from __future__ import annotations

import base64
import posixpath
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Iterator, TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID

from .. import pki
from ..errors import HardwayError
from ..names import first_names
from ..plan import WORKSTATION, NodeNotes, NodePlan, PlannedDir, PlannedFile, hosts_markers, node_table
from ..spec import ROLES, Cluster, Node
from .data import FileRule, Layout, RoleRules, layout, version_row
from .kubeconfigs import kubeconfig
from .templates import render_template

if TYPE_CHECKING:
    from ..pki.materials import Materials


def _subject(pem: bytes, oid) -> list[str]:
    cert = x509.load_pem_x509_certificate(pem)
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def _one(values: list[str], what: str) -> str:
    if len(values) != 1:
        raise HardwayError(f"the {what} must have exactly one value, it has {values}")
    return values[0]


@dataclass
class _Shared:
    """Per-cluster values, computed once for every node plan of one rendering."""

    cluster: Cluster
    materials: object

    @cached_property
    def layout(self) -> Layout:
        return layout()

    @cached_property
    def version(self) -> dict:
        return version_row(self.cluster.version)

    @cached_property
    def all_routes(self) -> tuple[dict, ...]:
        return tuple({"cidr": str(w.pod_cidr), "via": str(w.address), "node": w.name} for w in self.cluster.workers)

    @cached_property
    def _route_index(self) -> dict[str, int]:
        return {r["node"]: i for i, r in enumerate(self.all_routes)}

    def routes_of(self, node: Node) -> tuple[dict, ...]:
        """The routes a node keeps: every worker's pod range but its own (no quadratic filter)."""
        i = self._route_index.get(node.name)
        return self.all_routes if i is None else self.all_routes[:i] + self.all_routes[i + 1:]

    @cached_property
    def node_table(self) -> tuple[tuple[str, ...], ...]:
        return node_table(self.cluster)

    @cached_property
    def hosts_lines(self) -> tuple[str, ...]:
        # address, the other names (the FQDN), the name: what hardway-nodes prints from the same table
        return tuple(" ".join([row[0], *row[3:], row[2]]) for row in self.node_table)

    def shared_file(self, rule: FileRule) -> PlannedFile:
        """A `shared: true` file, rendered once per run from the cluster alone."""
        cache = self.__dict__.setdefault("_shared_files", {})
        if rule.path not in cache:
            data = render_template(rule.template, {**self.base_context, **self.whole_cluster_context})
            cache[rule.path] = PlannedFile(path=rule.path, mode=rule.mode, data=data, purpose=rule.purpose,
                                           source=f"units/{rule.template}", shared=True)
        return cache[rule.path]

    @cached_property
    def base_context(self) -> dict:
        return {
            "cluster": self.cluster,
            "v": self.version,
            "paths": self.layout.paths,
            "kubernetes_version": str(self.cluster.version),
            # /etc/hosts lines sit between these, so a re-run replaces them instead of adding duplicates
            "hosts_markers": hosts_markers(self.cluster.name),
        }

    @cached_property
    def whole_cluster_context(self) -> dict:
        """What only the shared files and the workstation see: every node's hosts line and route. A
        node's own templates never do (StrictUndefined): what other workers are reaches a node only
        through the node table, which is what lets `bundle` skip or patch a bundle (bundle/inputs.py)."""
        return {"hosts_lines": self.hosts_lines, "all_routes": self.all_routes, "node_table": self.node_table}

    @cached_property
    def controller_context(self) -> dict:
        m = self.materials
        return {
            # [{provider, keys: [{name, secret}]}]: consecutive keys of one provider share its entry; the
            # first key writes, every one reads (a provider change or rotation keeps the old key to read).
            "encryption_providers": _encryption_providers(
                m.encryption_keys or ((self.cluster.encryption_provider, "key1", m.encryption_key),)),
            # The names other components check, read from the certificates that carry them.
            "front_proxy_client_cn": _one(_subject(m.cert("front-proxy-client"), NameOID.COMMON_NAME),
                                          "front-proxy-client certificate's CN"),
        }

    @cached_property
    def workstation_context(self) -> dict:
        m = self.materials
        return {
            "kubelet_client_user": _one(_subject(m.cert("apiserver-kubelet-client"), NameOID.COMMON_NAME),
                                        "apiserver-kubelet-client certificate's CN"),
            "cluster_admins_group": _one(_subject(m.cert("admin"), NameOID.ORGANIZATION_NAME),
                                         "admin certificate's O"),
        }

    def binaries(self, names: list[str]) -> list[dict]:
        out = []
        for name in names:
            b = self.layout.binaries[name]
            if "package" in b:  # from the distribution, not downloaded
                out.append({"name": name, "version": "Debian package", "path": b["path"], "package": b["package"],
                            "url_hint": f"the Debian package `{b['package']}` (step 2)"})
                continue
            version = str(self.cluster.version).lstrip("v") if b["version"] == "kubernetes" else str(self.version[b["version"]])
            fetch = {k: v.replace("{version}", version) if isinstance(v, str) else v
                     for k, v in (b.get("fetch") or {}).items()}
            out.append({"name": name, "version": f"v{version}", "path": b["path"],
                        "url_hint": b["url"].replace("{version}", version), "fetch": fetch})
        return out


def _encryption_providers(keys) -> list[dict]:
    providers: list[dict] = []
    for provider, name, raw in keys:
        if not providers or providers[-1]["provider"] != provider:
            providers.append({"provider": provider, "keys": []})
        providers[-1]["keys"].append({"name": name, "secret": base64.b64encode(raw).decode("ascii")})
    return providers



def _merge(rules: list[RoleRules]) -> tuple[list[PlannedDir], list[FileRule], list[str], list[str], list[str]]:
    dirs: dict[str, PlannedDir] = {}
    files: dict[str, FileRule] = {}
    units: list[str] = []
    binaries: list[str] = []
    packages: set[str] = set()
    for r in rules:
        for d in r.directories:
            dirs.setdefault(d.path, d)
        for f in r.files:
            files.setdefault(f.path, f)
        units += [u for u in r.units if u not in units]
        binaries += [b for b in r.binaries if b not in binaries]
        packages.update(r.packages)
    return list(dirs.values()), list(files.values()), units, binaries, sorted(packages)


def _render_file(shared: _Shared, rule: FileRule, context: dict, node: str | None) -> PlannedFile:
    if rule.shared:
        return shared.shared_file(rule)
    if rule.kubeconfig is not None:
        per_node = shared.layout.kubeconfigs[rule.kubeconfig].per_node
        data = kubeconfig(shared.cluster, shared.materials, rule.kubeconfig, node if per_node else None)
        source = f"kubeconfig:{rule.kubeconfig}"
    else:
        data = render_template(rule.template, context)
        source = f"units/{rule.template}"
    return PlannedFile(path=rule.path, mode=rule.mode, data=data, purpose=rule.purpose, source=source)


def _plan(shared: _Shared, node: Node | None) -> NodePlan:
    c = shared.cluster
    if node is None:
        name, roles = WORKSTATION, frozenset()
        rules = [shared.layout.workstation]
        context = {**shared.base_context, **shared.whole_cluster_context, **shared.workstation_context, "node": None}
    else:
        name, roles = node.name, node.roles
        rules = [shared.layout.roles[r] for r in ROLES if r in node.roles]
        context = {**shared.base_context, "node": node}
        if node.is_controller:
            context.update(shared.controller_context)
            context["etcd_member"] = next(m for m in c.etcd_members if m.name == node.name)
    dirs, file_rules, units, binaries, packages = _merge(rules)
    if node is not None and node.is_worker:
        packages = sorted(set(packages) | set(shared.version["kube_proxy"]["packages"]))
    if node is None or node.is_loadbalancer:
        routes: list[dict] = []
    else:
        routes = shared.routes_of(node)
    if not routes:  # a file `when: routes` (and its unit) only where there are routes to keep
        dropped = {posixpath.basename(r.path) for r in file_rules if r.only_with_routes}
        file_rules = [r for r in file_rules if not r.only_with_routes]
        units = [u for u in units if u not in dropped]
    context = {**context, "routes": routes}

    files = {f.path: f for f in (_render_file(shared, r, context, name) for r in file_rules)}
    for f in pki.node_files(c, shared.materials, name):
        if node is None:
            # The workstation bundle is a folder, not a filesystem: its files sit at its top.
            f = PlannedFile(path="/" + posixpath.basename(f.path), mode=f.mode, data=f.data,
                            purpose=f.purpose, source=f.source)
        if f.path in files:
            raise HardwayError(f"{name}: {f.path} is both a PKI file ({f.source}) and a rendered file "
                               f"({files[f.path].source})")
        files[f.path] = f

    notes = NodeNotes(binaries=tuple(shared.binaries(binaries)), packages=tuple(packages), routes=tuple(routes),
                      hosts=shared.hosts_lines)
    return NodePlan(
        node=name,
        roles=roles,
        files=tuple(sorted(files.values(), key=lambda f: f.path)),
        directories=tuple(sorted(dirs, key=lambda d: d.path)),
        units=tuple(units),
        notes=notes,
    )


def node_plan(cluster: Cluster, materials: Materials, node_name: str) -> NodePlan:
    """The file plan of one node, or of the operator's workstation (`WORKSTATION`)."""
    shared = _Shared(cluster, materials)
    if node_name == WORKSTATION:
        return _plan(shared, None)
    try:
        node = cluster.node(node_name)
    except KeyError:
        shown = first_names((n.name for n in cluster.nodes), 8, more=", ...")
        raise HardwayError(f"no node {node_name!r} in {cluster.name}; nodes: {shown} (or {WORKSTATION!r})") from None
    return _plan(shared, node)


class Planner:
    """Node plans one at a time, the per-cluster values (node table, shared files, contexts)
    computed once: what `iter_node_plans` uses, and the bundle stage's workers."""

    def __init__(self, cluster: Cluster, materials: Materials):
        self.cluster = cluster
        self._shared = _Shared(cluster, materials)

    def plan(self, name: str) -> NodePlan:
        return _plan(self._shared, None if name == WORKSTATION else self.cluster.node(name))

    def shared_files(self, name: str) -> list[PlannedFile]:
        """The `shared: true` files of a node's plan (the node table), without rendering the rest."""
        node = self.cluster.node(name)
        rules = [self._shared.layout.roles[r] for r in ROLES if r in node.roles]
        found = {f.path: f for r in rules for f in r.files if f.shared}
        return [self._shared.shared_file(f) for f in found.values()]


def iter_node_plans(cluster: Cluster, materials: Materials, only: Iterable[str] | None = None) -> Iterator[NodePlan]:
    """Every node's plan in spec order, then the workstation's; one at a time. `only`: just these
    names (nodes, WORKSTATION), in the same order, with the per-cluster values still computed once."""
    wanted = None if only is None else set(only)
    planner = Planner(cluster, materials)
    for name in [n.name for n in cluster.nodes] + [WORKSTATION]:
        if wanted is None or name in wanted:
            yield planner.plan(name)
