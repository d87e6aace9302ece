"""Kubeconfigs, read by kubectl and used for a real TLS handshake.

`kubectl config view` reads every kubeconfig (a client-only command: the system kubectl will do).
Then each client kubeconfig talks, through the pinned kubectl, to a small Python TLS server on
127.0.0.1 that serves the generated kube-apiserver certificate and requires a client certificate
signed by the generated CA: that proves the embedded CA data, the client certificate and key, and
(with --tls-server-name set to the kubeconfig's real server host) the serving certificate's SANs.
"""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from hardway import binaries
from hardway.plan import WORKSTATION
from hardway.render import iter_kubeconfigs, kubeconfig, kubeconfig_file_name, kubeconfig_identities, node_plan
from helpers import missing
from render_helpers import cert, cluster, cn, kubeconfig_parts, materials, need, url_host

BUILD_HOW = "python -m hardway.binaries"


def pinned_kubectl() -> str:
    version = binaries.pinned_version()
    found = binaries.find_binaries(version).get("kubectl")
    if found:
        return str(found)
    missing(f"kubectl {version} is not built in {binaries.cache_dir(version)}", BUILD_HOW)


def any_kubectl() -> str:
    """For client-only commands: the pinned kubectl, else the one on PATH."""
    found = binaries.find_binaries(binaries.pinned_version()).get("kubectl")
    if found:
        return str(found)
    return need("kubectl", BUILD_HOW)


def all_kubeconfigs(example: str) -> list[tuple[str, bytes]]:
    return list(iter_kubeconfigs(cluster(example), materials(example)))


@pytest.mark.parametrize("example", ["kthw", "ha", "six"])
def test_kubectl_reads_every_kubeconfig(tmp_path, example):
    kubectl = any_kubectl()
    c = cluster(example)
    names = []
    for name, data in all_kubeconfigs(example):
        names.append(name)
        path = tmp_path / name
        path.write_bytes(data)
        result = subprocess.run([kubectl, "config", "view", "--kubeconfig", str(path), "--raw", "-o", "yaml"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        seen = yaml.safe_load(result.stdout)
        assert seen["current-context"] and [cl["name"] for cl in seen["clusters"]] == [c.name]
        assert kubeconfig_parts(result.stdout.encode()) == kubeconfig_parts(data)
    expected = {"admin", "super-admin", "kube-controller-manager", "kube-scheduler", "kube-proxy"}
    assert {f"{i}.kubeconfig" for i in expected} | {f"kubelet-{w.name}.kubeconfig" for w in c.workers} == set(names)


def test_kubeconfig_identities_and_their_errors():
    from hardway.errors import HardwayError
    c, m = cluster("ha"), materials("ha")
    assert set(kubeconfig_identities()) == {"admin", "super-admin", "kube-controller-manager", "kube-scheduler",
                                            "kube-proxy", "kubelet"}
    assert kubeconfig_file_name("kubelet", "node-0") == "kubelet-node-0.kubeconfig"
    with pytest.raises(HardwayError, match="per node"):
        kubeconfig(c, m, "kubelet")
    with pytest.raises(HardwayError, match="not a worker"):
        kubeconfig(c, m, "kubelet", "controller-0")
    with pytest.raises(HardwayError, match="cluster-wide"):
        kubeconfig(c, m, "admin", "node-0")
    with pytest.raises(HardwayError, match="no kubeconfig identity 'root'"):
        kubeconfig(c, m, "root")
    # what a node receives is byte for byte the kubeconfig of its identity
    assert node_plan(c, m, "node-0").file("/etc/kubernetes/kubelet.kubeconfig").data == kubeconfig(c, m, "kubelet", "node-0")
    assert node_plan(c, m, WORKSTATION).file("/admin.kubeconfig").data == kubeconfig(c, m, "admin")


class _Healthz(http.server.BaseHTTPRequestHandler):
    clients: list

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        subject = dict(x[0] for x in self.connection.getpeercert()["subject"])
        path = urlsplit(self.path).path
        self.paths.append(path)
        if path == "/healthz":
            self.clients.append(subject.get("commonName"))
            status, body = 200, b"ok"
        else:
            status, body = 404, b"not found"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class FakeApiServer:
    """HTTPS on 127.0.0.1 with a given serving certificate, requiring client certificates of a CA."""

    def __init__(self, tmp: Path, cert_pem: bytes, key_pem: bytes, ca_pem: bytes):
        (tmp / "srv.crt").write_bytes(cert_pem)
        (tmp / "srv.key").write_bytes(key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp / "srv.crt", tmp / "srv.key")
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=ca_pem.decode())
        ctx.set_alpn_protocols(["http/1.1"])
        handler = type("Handler", (_Healthz,), {"clients": [], "paths": []})
        self.clients, self.paths = handler.clients, handler.paths
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _get_healthz(kubectl: str, tmp: Path, name: str, data: bytes, port: int, server_name: str):
    """kubectl get --raw /healthz with the kubeconfig's server moved to 127.0.0.1:<port>."""
    doc = yaml.safe_load(data)
    for cl in doc["clusters"]:
        cl["cluster"]["server"] = f"https://127.0.0.1:{port}"
    copy = tmp / f"local-{name}"
    copy.write_text(yaml.safe_dump(doc))
    return subprocess.run([kubectl, "--kubeconfig", str(copy), "--tls-server-name", server_name,
                           "--request-timeout", "20s", "get", "--raw", "/healthz"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECACHEDIR": str(tmp / "cache")})


@pytest.mark.parametrize("example", ["kthw", "ha", "six"])
def test_every_client_kubeconfig_completes_a_mutual_tls_handshake(tmp_path, example):
    kubectl = pinned_kubectl()
    c, m = cluster(example), materials(example)
    ctrl = c.controllers[0].name
    with FakeApiServer(tmp_path, m.cert("kube-apiserver", ctrl), m.key("kube-apiserver", ctrl), m.cert("ca")) as srv:
        expected = []
        for name, data in all_kubeconfigs(example):
            parts = kubeconfig_parts(data)
            result = _get_healthz(kubectl, tmp_path, name, data, srv.port, url_host(parts["server"]))
            assert (result.returncode, result.stdout.strip()) == (0, "ok"), f"{name}: {result.stderr} {srv.paths}"
            expected.append(cn(cert(parts["cert"])))
        assert srv.clients == expected  # each kubeconfig presented its own identity


def test_the_handshake_fails_with_another_clusters_credentials_or_a_wrong_name(tmp_path):
    kubectl = pinned_kubectl()
    c, m = cluster("ha"), materials("ha")
    with FakeApiServer(tmp_path, m.cert("kube-apiserver", "controller-0"), m.key("kube-apiserver", "controller-0"),
                       m.cert("ca")) as srv:
        foreign = kubeconfig(cluster("six"), materials("six"), "admin")
        result = _get_healthz(kubectl, tmp_path, "foreign", foreign, srv.port, c.api_endpoint)
        assert result.returncode != 0
        own = kubeconfig(c, m, "admin")
        result = _get_healthz(kubectl, tmp_path, "wrong-name", own, srv.port, "not-the-api.example")
        assert result.returncode != 0 and "not-the-api.example" in result.stderr
        assert srv.clients == []
