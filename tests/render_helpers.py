"""Shared helpers of the rendering tests (tests/test_render_*.py); no tests of its own.

Materials are generated once per cluster and process (hardway.pki.generate_materials, in memory).
Rendered output is parsed back here with independent parsers (shlex for unit command lines, yaml,
json, tomllib), so the tests compare facts, not template text.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import shlex
from functools import lru_cache

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from hardway import spec
from hardway.pki import generate_materials
from hardway.plan import NodePlan
from hardway.versions import SUPPORTED_MINORS, parse_version

from helpers import REPO, need_tool
EXAMPLES = ("kthw", "ha", "large")
VERSIONS = {"1.35": "v1.35.4", "1.36": "v1.36.3", "1.37": "v1.37.2"}
assert set(VERSIONS) == set(SUPPORTED_MINORS), "a supported minor has no test version"
PKI = "/etc/kubernetes/pki"

# A small IPv6 cluster: exercises the templates' IPv6 branches (brackets in URLs, ip6tables, ::/0).
V6_SPEC = """
name: six
network:
  podCIDR: fd00:200::/56
  serviceCIDR: fd00:32::/112
apiServer:
  endpoint: api.six.example
pki:
  keyAlgorithm: ECDSA-P256
nodes:
  - {name: lb, address: "fd00::10", roles: [loadbalancer]}
  - {name: c0, address: "fd00::11", roles: [controller]}
  - {name: c1, address: "fd00::12", roles: [controller]}
  - {name: c2, address: "fd00::13", roles: [controller, worker]}
  - {name: w0, address: "fd00::20", roles: [worker], fqdn: w0.six.example}
"""


need = need_tool  # noqa: E305  (the name the render tests use)


@lru_cache(maxsize=None)
def cluster(name: str) -> spec.Cluster:
    if name == "six":
        return spec.loads(V6_SPEC, source="six.yaml")
    return spec.load(REPO / "examples" / f"{name}.yaml")


@lru_cache(maxsize=None)
def materials(name: str):
    return generate_materials(cluster(name))


def at_version(c: spec.Cluster, minor: str) -> spec.Cluster:
    """The same cluster at another supported minor (the PKI does not depend on the version)."""
    return dataclasses.replace(c, version=parse_version(VERSIONS[minor]))


# ---------------------------------------------------------------- parsing rendered files --------

def text(plan: NodePlan, path: str) -> str:
    return plan.file(path).data.decode("utf-8")


def exec_starts(unit: str) -> list[list[str]]:
    """Every ExecStart= command line of a unit (a oneshot may have several), split as systemd would
    (continuations joined)."""
    joined = unit.replace("\\\n", " ")
    return [shlex.split(line[len("ExecStart="):]) for line in joined.splitlines() if line.startswith("ExecStart=")]


def exec_start(unit: str) -> list[str]:
    """The ExecStart= command line of a unit that has one."""
    lines = exec_starts(unit)
    assert len(lines) == 1, f"expected one ExecStart=, found {len(lines)}"
    return lines[0]


def flags(args: list[str]) -> dict[str, str | bool]:
    """--name=value -> {name: value}; a bare --name -> {name: True}. Repeated flags are an error."""
    out: dict[str, str | bool] = {}
    for a in args[1:]:
        assert a.startswith("--"), f"not a flag: {a!r}"
        name, eq, value = a[2:].partition("=")
        assert name not in out, f"--{name} given twice"
        out[name] = value if eq else True
    return out


def unit_flags(plan: NodePlan, unit: str) -> dict[str, str | bool]:
    return flags(exec_start(text(plan, f"/etc/systemd/system/{unit}")))


def yaml_file(plan: NodePlan, path: str):
    return yaml.safe_load(plan.file(path).data)


def yaml_docs(plan: NodePlan, path: str) -> list:
    return [d for d in yaml.safe_load_all(plan.file(path).data) if d is not None]


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def cn(c: x509.Certificate) -> str:
    return c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def orgs(c: x509.Certificate) -> list[str]:
    return [a.value for a in c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def sans(c: x509.Certificate) -> tuple[set[str], set]:
    ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), set(ext.get_values_for_type(x509.IPAddress))


def covers(c: x509.Certificate, host: str) -> bool:
    """Does the certificate's SAN list name `host` (a DNS name or an IP address)?"""
    dns, ips = sans(c)
    try:
        return ipaddress.ip_address(host) in ips
    except ValueError:
        return host in dns


def url_host(url: str) -> str:
    from urllib.parse import urlsplit
    return urlsplit(url).hostname


def kubeconfig_parts(data: bytes) -> dict:
    """server, CA, client certificate and key of a single-context kubeconfig."""
    import base64
    doc = yaml.safe_load(data)
    ctx_name = doc["current-context"]
    ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
    cl = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
    us = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
    return {
        "server": cl["server"],
        "cluster": ctx["cluster"],
        "ca": base64.b64decode(cl["certificate-authority-data"]),
        "cert": base64.b64decode(us["client-certificate-data"]),
        "key": base64.b64decode(us["client-key-data"]),
    }
