"""Rendering: from the Cluster and the PKI materials, every node's file plan.

    node_plan(cluster, materials, node_name) -> NodePlan      one node, or WORKSTATION
    iter_node_plans(cluster, materials) -> Iterator[NodePlan] every node in spec order, then WORKSTATION
    kubeconfig(cluster, materials, identity, node=None) -> bytes
    iter_kubeconfigs(cluster, materials) -> Iterator[(file name, bytes)]

What each role gets is units/plan.yaml, the per-version data units/versions.yaml, the files
themselves the Jinja2 templates beside them. docs/rendering.md explains the choices.
"""

from .data import RenderDataError, layout, version_row
from .kubeconfigs import file_name as kubeconfig_file_name
from .kubeconfigs import identities as kubeconfig_identities
from .kubeconfigs import iter_kubeconfigs, kubeconfig
from .nodes import iter_node_plans, node_plan
from .templates import render_template

__all__ = [
    "RenderDataError",
    "iter_kubeconfigs",
    "iter_node_plans",
    "kubeconfig",
    "kubeconfig_file_name",
    "kubeconfig_identities",
    "layout",
    "node_plan",
    "render_template",
    "version_row",
]
