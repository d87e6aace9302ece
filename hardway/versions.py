"""Which Kubernetes versions hardway generates for.

Per-version differences in what is rendered (flags, config API versions, containerd schema) live in
one data table next to the templates (units/versions.yaml), not in code.
"""

import re
from dataclasses import dataclass

DEFAULT_VERSION = "v1.37.2"
SUPPORTED_MINORS = ("1.35", "1.36", "1.37")

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


@dataclass(frozen=True, order=True)
class KubernetesVersion:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    @property
    def minor_key(self) -> str:
        """'1.37': the key of the per-version data table."""
        return f"{self.major}.{self.minor}"


def parse_version(text: str) -> KubernetesVersion:
    """Parse 'v1.37.2' (the 'v' is optional); raise ValueError naming what is supported."""
    m = _VERSION.match(str(text).strip())
    if not m:
        raise ValueError(
            f"{text!r} is not a Kubernetes release version; write it as vMAJOR.MINOR.PATCH, "
            f"e.g. {DEFAULT_VERSION} (supported minors: {', '.join(SUPPORTED_MINORS)})"
        )
    if any(len(g) > 3 for g in m.groups()):
        raise ValueError(f"{str(text)[:40]!r} is not a Kubernetes release version (a number of more than 3 digits); "
                         f"write it as vMAJOR.MINOR.PATCH, e.g. {DEFAULT_VERSION}")
    version = KubernetesVersion(*(int(g) for g in m.groups()))
    if version.minor_key not in SUPPORTED_MINORS:
        raise ValueError(
            f"Kubernetes {version} is not supported; supported minors: "
            f"{', '.join(SUPPORTED_MINORS)} (default {DEFAULT_VERSION})"
        )
    return version
