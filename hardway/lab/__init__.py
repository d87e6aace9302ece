"""The local lab: a cluster's control plane booted from its own bundles, in network namespaces.

`hardway lab.up` lets an operator try a cluster's bundles on one machine before touching real ones;
the end-to-end tests use it to prove that what hardway generates runs. See docs/lab.md.
"""

from .lab import Lab, down, is_up, status, up
from .netns import LabError

__all__ = ["Lab", "LabError", "down", "is_up", "status", "up"]
