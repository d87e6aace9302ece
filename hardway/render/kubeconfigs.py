"""One kubeconfig per identity, with the CA, the client certificate and its key embedded.

Which identities exist, which catalog entry each embeds and which server it talks to is data
(units/plan.yaml, `kubeconfigs`), the file itself units/kubeconfig.yaml.j2. The bytes are
deterministic: the same materials give the same file.
"""

from __future__ import annotations

import base64
from typing import Iterator, TYPE_CHECKING

from ..errors import HardwayError
from ..spec import Cluster
from .data import KubeconfigRule, layout
from .templates import render_template

if TYPE_CHECKING:
    from ..pki.materials import Materials

TEMPLATE = "kubeconfig.yaml.j2"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def identities() -> tuple[str, ...]:
    """The kubeconfig identities: admin, super-admin, kube-controller-manager, ..., kubelet."""
    return tuple(layout().kubeconfigs)


def _rule(identity: str) -> KubeconfigRule:
    rules = layout().kubeconfigs
    try:
        return rules[identity]
    except KeyError:
        raise HardwayError(f"no kubeconfig identity {identity!r}; identities: {', '.join(rules)}") from None


def file_name(identity: str, node: str | None = None) -> str:
    """`<identity>.kubeconfig`, or `kubelet-<node>.kubeconfig` for a per-node identity."""
    return f"{identity}-{node}.kubeconfig" if _rule(identity).per_node else f"{identity}.kubeconfig"


def kubeconfig(cluster: Cluster, materials: Materials, identity: str, node: str | None = None) -> bytes:
    """The kubeconfig of `identity` (for a per-node identity such as kubelet, of `node`)."""
    rule = _rule(identity)
    if rule.per_node:
        if node is None:
            raise HardwayError(f"the {identity} kubeconfig is per node: name the node")
        try:
            worker = cluster.node(node)
        except KeyError:
            raise HardwayError(f"no node {node!r} in {cluster.name}") from None
        if not worker.is_worker:
            raise HardwayError(f"{node} is not a worker: it has no {identity} kubeconfig")
    elif node is not None:
        raise HardwayError(f"the {identity} kubeconfig is cluster-wide; it takes no node")
    user = rule.user.format(node=node)
    context = f"{user}@{cluster.name}"
    return render_template(TEMPLATE, {
        "cluster_name": cluster.name,
        "server": getattr(cluster, rule.server),
        "ca_data": _b64(materials.cert("ca")),
        "user": user,
        "cert_data": _b64(materials.cert(rule.entry, node)),
        "key_data": _b64(materials.key(rule.entry, node)),
        "context": context,
    })


def iter_kubeconfigs(cluster: Cluster, materials: Materials) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes) of every kubeconfig of the cluster: cluster-wide ones, then one per worker."""
    for identity, rule in layout().kubeconfigs.items():
        if rule.per_node:
            for w in cluster.workers:
                yield file_name(identity, w.name), kubeconfig(cluster, materials, identity, w.name)
        else:
            yield file_name(identity), kubeconfig(cluster, materials, identity)


def count(cluster: Cluster) -> int:
    rules = layout().kubeconfigs.values()
    return sum(len(cluster.workers) if r.per_node else 1 for r in rules)
