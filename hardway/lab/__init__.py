"""The local lab: a cluster's control plane booted from its own bundles, in network namespaces.

`hardway lab.up` lets an operator try a cluster's bundles on one machine before touching real ones;
the end-to-end tests use it to prove that what hardway generates runs. See docs/lab.md.
"""

__all__ = ["Lab", "LabError", "down", "is_up", "status", "up"]


def __getattr__(name: str):
    # Imported on first use, so `hardway --help` does not pay for the lab (hardway.lab.tasks is light).
    if name == "LabError":
        from .netns import LabError
        return LabError
    if name in __all__:
        from . import lab
        return getattr(lab, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
