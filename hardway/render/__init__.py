"""Rendering: from the Cluster and the PKI materials, every node's file plan.

    node_plan(cluster, materials, node_name) -> NodePlan      one node, or WORKSTATION
    iter_node_plans(cluster, materials) -> Iterator[NodePlan] every node in spec order, then WORKSTATION
    kubeconfig(cluster, materials, identity, node=None) -> bytes
    iter_kubeconfigs(cluster, materials) -> Iterator[(file name, bytes)]

What each role gets is units/plan.yaml, the per-version data units/versions.yaml, the files
themselves the Jinja2 templates beside them. docs/rendering.md explains the choices.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .data import RenderDataError, layout, version_row  # noqa: F401
    from .kubeconfigs import file_name as kubeconfig_file_name  # noqa: F401
    from .kubeconfigs import identities as kubeconfig_identities  # noqa: F401
    from .kubeconfigs import iter_kubeconfigs, kubeconfig  # noqa: F401
    from .nodes import iter_node_plans, node_plan  # noqa: F401
    from .templates import render_template  # noqa: F401

# Imported on first use (PEP 562): the PKI reads plan.yaml through .data, and a run with nothing to
# render never loads Jinja2.
_LAZY = {"RenderDataError": ("data", "RenderDataError"), "layout": ("data", "layout"),
         "version_row": ("data", "version_row"), "kubeconfig_file_name": ("kubeconfigs", "file_name"),
         "kubeconfig_identities": ("kubeconfigs", "identities"), "iter_kubeconfigs": ("kubeconfigs", "iter_kubeconfigs"),
         "kubeconfig": ("kubeconfigs", "kubeconfig"), "iter_node_plans": ("nodes", "iter_node_plans"),
         "node_plan": ("nodes", "node_plan"), "render_template": ("templates", "render_template")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
