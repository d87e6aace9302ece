"""Readiness checks, run from inside the lab (the host cannot reach it, by design).

A probe is an HTTPS GET made by a short Python program started in a namespace: etcd's /health with
the health-check client certificate, kube-apiserver's /readyz, the controller-manager's and the
scheduler's /healthz on their secure ports, and the API through the load balancer. Which URL and
which certificates is read from the unit's own flags, so a probe checks what the unit serves.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..names import url_host
from ..pki.catalog import install_dir
from .units import ServiceUnit

# Standard library only; argv: url cafile certfile keyfile expect ('' for none).
_PROBE = r"""
import json, ssl, sys, urllib.request, urllib.error
url, ca, cert, key, expect = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
if cert:
    ctx.load_cert_chain(cert, key)
try:
    with urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)).open(url, timeout=5) as r:
        body = r.read().decode(errors="replace").strip()
except urllib.error.HTTPError as e:
    print(f"HTTP {e.code}: {e.read().decode(errors='replace').strip()[:300]}"); sys.exit(1)
except Exception as e:
    print(f"{type(e).__name__}: {e}"); sys.exit(2)
if expect and expect not in body:
    print(f"unexpected answer: {body[:300]}"); sys.exit(1)
print(body[:300])
"""

# Default secure ports (each binary's own default, when the unit does not set --secure-port).
_DEFAULT_PORTS = {"kube-controller-manager": 10257, "kube-scheduler": 10259}


@dataclass(frozen=True)
class Probe:
    node: str  # whose namespace the probe runs in
    what: str  # one line: "etcd /health on 10.240.0.11:2379"
    url: str
    ca: str = ""  # host paths
    cert: str = ""
    key: str = ""
    expect: str = ""
    argv: tuple[str, ...] = ()  # a command instead of an HTTPS GET: ready when it exits 0 (and prints expect)
    env: tuple[tuple[str, str], ...] = ()  # its environment, besides a plain PATH

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Probe":
        d = dict(d)
        d["argv"] = tuple(d.get("argv", ()))
        d["env"] = tuple(tuple(kv) for kv in d.get("env", ()))
        return cls(**d)


def run_probe(probe: Probe, sandbox_command) -> tuple[bool, str]:
    """Run the probe with `sandbox_command(node, argv) -> host argv`; (ok, one-line answer)."""
    if probe.argv:
        argv = sandbox_command(probe.node, list(probe.argv))
    else:
        argv = sandbox_command(probe.node, [sys.executable, "-I", "-c", _PROBE, probe.url, probe.ca,
                                            probe.cert, probe.key, probe.expect])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=15,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **dict(probe.env)})
    except subprocess.TimeoutExpired:
        return False, "no answer within 15s"
    answer = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    ok = proc.returncode == 0 and (not probe.argv or probe.expect in proc.stdout)
    return ok, answer[-1][:300] if answer else f"exit {proc.returncode}"


def _first_url(value: str | None, default: str) -> str:
    return (value or default).split(",")[0].rstrip("/")


def probe_for(node: str, unit: ServiceUnit, on_host) -> Probe | None:
    """The readiness probe of a kube-* or etcd unit, or None when it has none (see
    `loadbalancer_probe`). `on_host(path on node) -> host path` maps the unit's file flags into
    the node's root."""
    name = unit.binary
    if name == "etcd":
        f = unit.flags()
        url = _first_url(f.get("advertise-client-urls") or f.get("listen-client-urls"), "https://127.0.0.1:2379")
        # The health-check client identity exists for this; its files land where every PKI file does.
        return Probe(node, f"etcd /health at {url}", f"{url}/health", on_host(f.get("trusted-ca-file", "")),
                     on_host(f"{install_dir()}/etcd-healthcheck-client.crt"),
                     on_host(f"{install_dir()}/etcd-healthcheck-client.key"), '"health":"true"')
    if name == "kube-apiserver":
        f = unit.flags()
        host = f.get("advertise-address") or "127.0.0.1"
        host = url_host(host)
        port = f.get("secure-port") or "6443"
        url = f"https://{host}:{port}/readyz"
        # Any identity the cluster CA signed may read /readyz; the controller holds this one.
        cert, key = f.get("kubelet-client-certificate", ""), f.get("kubelet-client-key", "")
        return Probe(node, f"kube-apiserver /readyz at {host}:{port}", url, on_host(f.get("client-ca-file", "")),
                     on_host(cert) if cert else "", on_host(key) if key else "", "ok")
    if name in _DEFAULT_PORTS:
        f = unit.flags()
        port = f.get("secure-port") or str(_DEFAULT_PORTS[name])
        # Their serving certificates are self-signed at start unless --tls-cert-file is set.
        return Probe(node, f"{name} /healthz at 127.0.0.1:{port}", f"https://127.0.0.1:{port}/healthz", expect="ok")
    return None


def loadbalancer_probe(client_node: str, ca_on_host: str, address: str, port: int) -> Probe:
    """The API through a load balancer, checked from a client: a load balancer holds no
    certificate, so the client's CA verifies the apiserver behind it."""
    host = url_host(address)
    return Probe(client_node, f"the API through the load balancer at {host}:{port}",
                 f"https://{host}:{port}/readyz", ca_on_host, expect="ok")


def host_path(root: Path):
    """A mapper from node paths to the files installed under `root`."""
    def on_host(path: str) -> str:
        return str(root / path.lstrip("/")) if path else ""
    return on_host
