"""The large example (1000 workers): the rules that need every node, in one lazy pass.

`iter_node_plans` runs once; each plan is checked and dropped, so the 1000 workers never sit in
memory together (the test keeps only the facts it compares across nodes).
"""

from __future__ import annotations

import ipaddress
import json

import pytest
import yaml

from hardway.plan import WORKSTATION
from hardway.render import iter_node_plans
from render_helpers import PKI, cert, cluster, cn, covers, kubeconfig_parts, materials, unit_flags


@pytest.mark.slow
def test_every_node_of_the_large_cluster():
    c, m = cluster("large"), materials("large")
    assert len(c.workers) == 1000
    pod_net = ipaddress.ip_network(str(c.pod_cidr))
    order, ranges, etcd_lists, proxy_cidrs = [], {}, set(), set()
    for plan in iter_node_plans(c, m):
        order.append(plan.node)
        assert len(plan.paths) == len(plan.files), f"{plan.node}: a path twice"
        assert [f.path for f in plan.files] == sorted(f.path for f in plan.files)
        if plan.node == WORKSTATION:
            continue
        node = c.node(plan.node)
        if node.is_worker:
            bridge = json.loads(plan.file("/etc/cni/net.d/10-bridge.conflist").data)
            net = ipaddress.ip_network(bridge["plugins"][0]["ipam"]["ranges"][0][0]["subnet"])
            assert net.subnet_of(pod_net) and net.prefixlen == c.node_pod_cidr_size
            ranges[plan.node] = net
            proxy_cidrs.add(yaml.safe_load(plan.file("/etc/kubernetes/kube-proxy-config.yaml").data)["clusterCIDR"])
            kubelet = cert(kubeconfig_parts(plan.file("/etc/kubernetes/kubelet.kubeconfig").data)["cert"])
            assert cn(kubelet) == f"system:node:{plan.node}"
            assert covers(cert(plan.file(f"{PKI}/kubelet-serving.crt").data), str(node.address))
            assert len(plan.notes.routes) == len(c.workers) - 1
            assert plan.node not in {r["node"] for r in plan.notes.routes}
        if node.is_controller:
            etcd_lists.add(unit_flags(plan, "etcd.service")["initial-cluster"])
            assert len(plan.notes.routes) == len(c.workers)
    assert order == [n.name for n in c.nodes] + [WORKSTATION]
    assert len(etcd_lists) == 1
    assert proxy_cidrs == {str(c.pod_cidr)}
    # disjoint: sorted by address, each range ends before the next begins
    nets = sorted(ranges.values(), key=lambda n: int(n.network_address))
    for a, b in zip(nets, nets[1:]):
        assert int(a.broadcast_address) < int(b.network_address), f"{a} overlaps {b}"
