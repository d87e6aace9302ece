"""Every certificate the PKI stage issues, parsed back and checked against the certificate table of
the design (subjects, usages, SANs, signers, extensions), then verified by the real OpenSSL CLI and
used in real TLS handshakes. Expectations come from the spec's values, not from pki/catalog.yaml.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hardway import spec
from hardway.pki import generate_materials, issue, node_files
from hardway.pki.catalog import Identity
from hardway.plan import WORKSTATION
from helpers import REPO, need_tool

SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
IP = ipaddress.ip_address


def load_example(name: str, **pki) -> spec.Cluster:
    data = yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text())
    data.setdefault("pki", {}).update(pki)
    return spec.loads(yaml.safe_dump(data), source=f"{name}.yaml")


def need_openssl() -> str:
    return need_tool("openssl", "apt-get install -y openssl")


# --- what the design says each certificate is (independent of the catalog file) -------------

def _host(value: str):
    try:
        return IP(value)
    except ValueError:
        return value


def _sans(values) -> tuple[set[str], set]:
    dns = {v.lower() for v in values if isinstance(v, str)}
    ips = {v for v in values if not isinstance(v, str)}
    return dns, ips


def apiserver_sans(c: spec.Cluster, n: spec.Node):
    return _sans(["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                  f"kubernetes.default.svc.{c.cluster_domain}", "localhost", n.name, *([n.fqdn] if n.fqdn else []),
                  IP("127.0.0.1"), c.kubernetes_service_ip, n.address, _host(c.api_endpoint),
                  *(_host(s) for s in c.extra_sans)])


EXPECTED = {
    # entry: (per, signer, CN (node -> str), O, EKUs, SANs (cluster, node) -> (dns, ips) or None)
    "kube-apiserver": ("controller", "ca", lambda n: "kube-apiserver", [], {SERVER}, apiserver_sans),
    "apiserver-kubelet-client": ("cluster", "ca", lambda n: "kube-apiserver-kubelet-client", [], {CLIENT}, None),
    "apiserver-etcd-client": ("cluster", "etcd-ca", lambda n: "kube-apiserver-etcd-client", [], {CLIENT}, None),
    "front-proxy-client": ("cluster", "front-proxy-ca", lambda n: "front-proxy-client", [], {CLIENT}, None),
    "etcd-server": ("controller", "etcd-ca", lambda n: n.name, [], {SERVER, CLIENT},
                    lambda c, n: _sans([n.name, "localhost", n.address, IP("127.0.0.1"), IP("::1")])),
    "etcd-peer": ("controller", "etcd-ca", lambda n: n.name, [], {SERVER, CLIENT},
                  lambda c, n: _sans([n.name, n.address])),
    "etcd-healthcheck-client": ("cluster", "etcd-ca", lambda n: "kube-etcd-healthcheck-client", [], {CLIENT}, None),
    "kube-controller-manager": ("cluster", "ca", lambda n: "system:kube-controller-manager", [], {CLIENT}, None),
    "kube-scheduler": ("cluster", "ca", lambda n: "system:kube-scheduler", [], {CLIENT}, None),
    "kube-proxy": ("cluster", "ca", lambda n: "system:kube-proxy", ["system:node-proxier"], {CLIENT}, None),
    "kubelet-client": ("worker", "ca", lambda n: f"system:node:{n.name}", ["system:nodes"], {CLIENT}, None),
    "kubelet-serving": ("worker", "ca", lambda n: f"system:node:{n.name}", ["system:nodes"], {SERVER},
                        lambda c, n: _sans([n.name, *([n.fqdn] if n.fqdn else []), n.address])),
    "admin": ("cluster", "ca", lambda n: "admin", ["hardway:cluster-admins"], {CLIENT}, None),
    "super-admin": ("cluster", "ca", lambda n: "super-admin", ["system:masters"], {CLIENT}, None),
}
CA_CN = {"ca": "kubernetes", "etcd-ca": "etcd-ca", "front-proxy-ca": "front-proxy-ca"}


def instances(c: spec.Cluster):
    """(entry, node or None) for every leaf the design asks for."""
    for entry, (per, *_rest) in EXPECTED.items():
        if per == "cluster":
            yield entry, None
        else:
            for n in (c.controllers if per == "controller" else c.workers):
                yield entry, n


CASES = [("kthw", "RSA-2048"), ("ha", "ECDSA-P256"), ("kthw", "ECDSA-P384")]


@pytest.fixture(scope="module", params=CASES, ids=[f"{e}-{a}" for e, a in CASES])
def issued(request):
    example, algorithm = request.param
    cluster = load_example(example, keyAlgorithm=algorithm)
    return cluster, generate_materials(cluster)


def _ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def _key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    return issue.same_public_key(x509.load_pem_x509_certificate(cert_pem).public_key(),
                                 issue.load_private_key(key_pem))


def _algorithm(public) -> str:
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA-{public.key_size}"
    return {"secp256r1": "ECDSA-P256", "secp384r1": "ECDSA-P384"}[public.curve.name]


# --- the CAs ---------------------------------------------------------------------------------

def test_cas_are_self_signed_cas_with_the_spec_validity(issued):
    cluster, m = issued
    for name, cn in CA_CN.items():
        cert = x509.load_pem_x509_certificate(m.cert(name))
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        assert cert.issuer == cert.subject
        cert.verify_directly_issued_by(cert)
        bc = _ext(cert, x509.BasicConstraints)
        assert bc.critical and bc.value.ca
        ku = _ext(cert, x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
        assert _ext(cert, x509.SubjectKeyIdentifier).value.digest == \
            x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert cluster.ca_validity < life <= cluster.ca_validity + timedelta(minutes=10)
        assert _algorithm(cert.public_key()) == cluster.key_algorithm
        assert _key_matches(m.cert(name), m.key(name))
    assert len({m.cert(n) for n in CA_CN}) == 3, "three distinct CAs"


# --- every leaf, entry by entry ----------------------------------------------------------------

def test_every_leaf_matches_the_design(issued):
    cluster, m = issued
    checked = 0
    for entry, node in instances(cluster):
        per, signer, cn, orgs, ekus, sans = EXPECTED[entry]
        where = f"{entry}@{node.name if node else '-'}"
        pem = m.cert(entry, node.name if node else None)
        cert = x509.load_pem_x509_certificate(pem)
        ca = x509.load_pem_x509_certificate(m.cert(signer))
        assert cert.version == x509.Version.v3, where
        assert cert.serial_number > 0, where
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn(node), where
        assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == orgs, where
        assert len(cert.subject) == 1 + len(orgs), f"{where}: no other subject attributes"
        cert.verify_directly_issued_by(ca)  # the right signer, a valid signature
        assert cert.issuer == ca.subject, where
        assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == \
            _ext(ca, x509.SubjectKeyIdentifier).value.digest, where
        assert _ext(cert, x509.SubjectKeyIdentifier).value.digest == \
            x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest, where
        bc = _ext(cert, x509.BasicConstraints)
        assert bc.critical and not bc.value.ca, where
        ku = _ext(cert, x509.KeyUsage)
        assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign, where
        assert ku.value.key_encipherment == isinstance(cert.public_key(), rsa.RSAPublicKey), where
        assert set(_ext(cert, x509.ExtendedKeyUsage).value) == ekus, where
        if sans is None:
            with pytest.raises(x509.ExtensionNotFound):
                _ext(cert, x509.SubjectAlternativeName)
        else:
            san = _ext(cert, x509.SubjectAlternativeName).value
            dns, ips = sans(cluster, node)
            got_dns = san.get_values_for_type(x509.DNSName)
            got_ips = san.get_values_for_type(x509.IPAddress)
            assert set(got_dns) == dns and set(got_ips) == ips, where
            assert len(got_dns) == len(set(got_dns)) and len(got_ips) == len(set(got_ips)), f"{where}: duplicates"
        now = issue.now()
        assert now - timedelta(minutes=30) < cert.not_valid_before_utc < now, f"{where}: NotBefore a little in the past"
        assert cert.not_valid_after_utc <= ca.not_valid_after_utc, f"{where}: outlives its CA"
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert cluster.cert_validity <= life <= cluster.cert_validity + timedelta(minutes=10), where
        assert _algorithm(cert.public_key()) == cluster.key_algorithm, where
        assert _key_matches(pem, m.key(entry, node.name if node else None)), where
        checked += 1
    assert checked == 3 * len(cluster.controllers) + 2 * len(cluster.workers) + 9
    issued_leaves = {k for k in m.certs if k[0] not in CA_CN}
    assert issued_leaves == {(e, n.name if n else None) for e, n in instances(cluster)}, "nothing more, nothing less"


def test_serials_and_keys_are_unique(issued):
    cluster, m = issued
    certs = [x509.load_pem_x509_certificate(m.cert(e, n.name if n else None)) for e, n in instances(cluster)]
    assert len({c.serial_number for c in certs}) == len(certs)
    keys = [m.key(e, n.name if n else None) for e, n in instances(cluster)] + [m.key(ca) for ca in CA_CN]
    assert len(set(keys)) == len(keys), "every certificate has its own key"


def test_service_account_pair_and_encryption_key(issued):
    cluster, m = issued
    private = issue.load_private_key(m.service_account_private)
    assert _algorithm(private.public_key()) == cluster.key_algorithm
    assert issue.public_pem(private) == m.service_account_public
    assert m.service_account_public.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert isinstance(m.encryption_key, bytes) and len(m.encryption_key) == 32
    assert m.encryption_key != generate_materials(load_example("ha")).encryption_key


def test_a_leaf_never_outlives_its_ca():
    ca_key = issue.generate_key("ECDSA-P256")
    ca = issue.make_ca("short-lived", ca_key, timedelta(days=10))
    leaf = issue.issue(Identity("x", (), frozenset({"clientAuth"}), (), ()), issue.generate_key("ECDSA-P256").public_key(),
                       ca, ca_key, timedelta(days=365))
    assert leaf.not_valid_after_utc == ca.not_valid_after_utc


@pytest.mark.parametrize("algorithm", ["RSA-3072", "RSA-4096", "ECDSA-P256", "ECDSA-P384"])
def test_each_key_algorithm(algorithm):
    key = issue.generate_key(algorithm)
    assert issue.key_algorithm(key) == algorithm
    assert issue.key_algorithm(issue.load_private_key(issue.private_pem(key))) == algorithm
    ca_key = issue.generate_key("ECDSA-P256")
    ca = issue.make_ca("test-ca", ca_key, timedelta(days=10))
    leaf = issue.issue(Identity("x", (), frozenset({"serverAuth"}), ("x",), ()), key.public_key(), ca, ca_key,
                       timedelta(days=1))
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_encipherment == algorithm.startswith("RSA")
    leaf.verify_directly_issued_by(ca)


# --- the real OpenSSL ----------------------------------------------------------------------------

def _write_all(cluster, m, root: Path) -> list[tuple[str, str | None, Path, Path]]:
    for name in CA_CN:
        (root / f"{name}.crt").write_bytes(m.cert(name))
    out = []
    for entry, node in instances(cluster):
        name = f"{entry}-{node.name}" if node else entry
        path = root / f"{name}.crt"
        path.write_bytes(m.cert(entry, node.name if node else None))
        out.append((entry, node.name if node else None, path, root / f"{EXPECTED[entry][1]}.crt"))
    return out


def _openssl_verify(openssl, ca: Path, cert: Path, purpose: str | None) -> subprocess.CompletedProcess:
    cmd = [openssl, "verify", "-x509_strict"] + (["-purpose", purpose] if purpose else []) + ["-CAfile", str(ca), str(cert)]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_openssl_verifies_every_leaf_strictly_for_its_purpose(issued, tmp_path):
    openssl = need_openssl()
    cluster, m = issued
    files = _write_all(cluster, m, tmp_path)
    for name in CA_CN:
        r = _openssl_verify(openssl, tmp_path / f"{name}.crt", tmp_path / f"{name}.crt", None)
        assert r.returncode == 0, r.stdout + r.stderr
    for entry, node, cert, ca in files:
        ekus = EXPECTED[entry][4]
        for eku, purpose in ((SERVER, "sslserver"), (CLIENT, "sslclient")):
            r = _openssl_verify(openssl, ca, cert, purpose)
            if eku in ekus:
                assert r.returncode == 0 and ": OK" in r.stdout, f"{entry}@{node} {purpose}: {r.stdout}{r.stderr}"
            else:
                assert r.returncode != 0, f"{entry}@{node} must not pass as {purpose}"


def test_openssl_rejects_a_leaf_against_another_ca(issued, tmp_path):
    openssl = need_openssl()
    cluster, m = issued
    _write_all(cluster, m, tmp_path)
    r = _openssl_verify(openssl, tmp_path / "etcd-ca.crt", tmp_path / "admin.crt", "sslclient")
    assert r.returncode != 0
    r = _openssl_verify(openssl, tmp_path / "ca.crt", tmp_path / "apiserver-etcd-client.crt", "sslclient")
    assert r.returncode != 0


# --- real TLS handshakes ---------------------------------------------------------------------------

def _files(tmp: Path, name: str, cert: bytes, key: bytes) -> tuple[str, str]:
    (tmp / f"{name}.crt").write_bytes(cert)
    (tmp / f"{name}.key").write_bytes(key)
    return str(tmp / f"{name}.crt"), str(tmp / f"{name}.key")


def handshake(tmp: Path, server: tuple[bytes, bytes], client_ca: bytes, client: tuple[bytes, bytes],
              server_ca: bytes, hostname: str) -> str:
    """A TLS server on 127.0.0.1 that requires a client certificate; returns the client's CN as the
    server saw it. Raises ssl.SSLError when either side refuses."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.verify_flags |= ssl.VERIFY_X509_STRICT
    sctx.load_cert_chain(*_files(tmp, "server", *server))
    sctx.verify_mode = ssl.CERT_REQUIRED
    sctx.load_verify_locations(cadata=client_ca.decode())
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
    cctx.verify_flags |= ssl.VERIFY_X509_STRICT
    cctx.load_verify_locations(cadata=server_ca.decode())
    cctx.load_cert_chain(*_files(tmp, "client", *client))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    seen: dict = {}

    def serve():
        try:
            conn, _ = listener.accept()
            with sctx.wrap_socket(conn, server_side=True) as s:
                peer = s.getpeercert()
                seen["cn"] = dict(x[0] for x in peer["subject"])["commonName"]
                s.sendall(b"ok")
        except Exception as e:  # noqa: BLE001  (reported to the test below)
            seen["error"] = e

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with cctx.wrap_socket(raw, server_hostname=hostname) as s:
                assert s.recv(2) == b"ok"
    finally:
        t.join(10)
        listener.close()
    if "error" in seen:
        raise seen["error"]
    return seen["cn"]


def test_tls_kube_apiserver_with_admin(issued, tmp_path):
    cluster, m = issued
    node = cluster.controllers[0].name
    for hostname in ("kubernetes.default.svc", cluster.controllers[0].name, "127.0.0.1"):
        cn = handshake(tmp_path, (m.cert("kube-apiserver", node), m.key("kube-apiserver", node)), m.cert("ca"),
                       (m.cert("admin"), m.key("admin")), m.cert("ca"), hostname)
        assert cn == "admin"


def test_tls_etcd_server_with_apiserver_etcd_client(issued, tmp_path):
    cluster, m = issued
    node = cluster.controllers[-1]
    cn = handshake(tmp_path, (m.cert("etcd-server", node.name), m.key("etcd-server", node.name)), m.cert("etcd-ca"),
                   (m.cert("apiserver-etcd-client"), m.key("apiserver-etcd-client")), m.cert("etcd-ca"), node.name)
    assert cn == "kube-apiserver-etcd-client"


def test_tls_kubelet_serving_with_apiserver_kubelet_client(issued, tmp_path):
    cluster, m = issued
    node = cluster.workers[-1]
    cn = handshake(tmp_path, (m.cert("kubelet-serving", node.name), m.key("kubelet-serving", node.name)), m.cert("ca"),
                   (m.cert("apiserver-kubelet-client"), m.key("apiserver-kubelet-client")), m.cert("ca"),
                   str(node.address))
    assert cn == "kube-apiserver-kubelet-client"


def test_tls_refuses_wrong_name_and_wrong_client_ca(issued, tmp_path):
    cluster, m = issued
    node = cluster.controllers[0].name
    server = (m.cert("kube-apiserver", node), m.key("kube-apiserver", node))
    with pytest.raises(ssl.SSLError):  # a name not in the SANs
        handshake(tmp_path, server, m.cert("ca"), (m.cert("admin"), m.key("admin")), m.cert("ca"), "evil.example.com")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):  # a client from the front-proxy CA
        handshake(tmp_path, server, m.cert("ca"), (m.cert("front-proxy-client"), m.key("front-proxy-client")),
                  m.cert("ca"), "kubernetes")


# --- what each node receives -------------------------------------------------------------------------

PKI = "/etc/kubernetes/pki"
CONTROLLER_FILES = {f"{PKI}/{n}" for n in [
    "ca.crt", "ca.key", "etcd-ca.crt", "front-proxy-ca.crt", "kube-apiserver.crt", "kube-apiserver.key",
    "apiserver-kubelet-client.crt", "apiserver-kubelet-client.key", "apiserver-etcd-client.crt",
    "apiserver-etcd-client.key", "front-proxy-client.crt", "front-proxy-client.key", "etcd-server.crt",
    "etcd-server.key", "etcd-peer.crt", "etcd-peer.key", "etcd-healthcheck-client.crt", "etcd-healthcheck-client.key",
    "service-account.key", "service-account.pub"]}
WORKER_FILES = {f"{PKI}/{n}" for n in ["ca.crt", "kubelet-serving.crt", "kubelet-serving.key"]}


def _by_path(files):
    return {f.path: f for f in files}


def test_node_files_follow_the_delivery_convention():
    cluster = load_example("ha")
    m = generate_materials(cluster)
    for node in cluster.nodes:
        files = _by_path(node_files(cluster, m, node.name))
        want = (CONTROLLER_FILES if node.is_controller else set()) | (WORKER_FILES if node.is_worker else set())
        assert set(files) == want, node.name
        for path, f in files.items():
            assert f.mode == (0o600 if path.endswith(".key") else 0o644), path
        if node.is_controller:
            assert files[f"{PKI}/kube-apiserver.crt"].data == m.cert("kube-apiserver", node.name), "its own, not another's"
            assert files[f"{PKI}/etcd-peer.key"].data == m.key("etcd-peer", node.name)
            assert files[f"{PKI}/service-account.key"].data == m.service_account_private
        if node.is_worker:
            assert files[f"{PKI}/kubelet-serving.key"].data == m.key("kubelet-serving", node.name)
        assert files == {} or files[f"{PKI}/ca.crt"].data == m.cert("ca")
    assert node_files(cluster, m, "lb") == []
    ws = _by_path(node_files(cluster, m, WORKSTATION))
    assert set(ws) == {f"{PKI}/ca.crt"}
    everything = b"".join(f.data for n in [*(n.name for n in cluster.nodes), WORKSTATION]
                          for f in node_files(cluster, m, n))
    assert m.key("etcd-ca") not in everything and m.key("front-proxy-ca") not in everything
    with pytest.raises(KeyError):
        node_files(cluster, m, "no-such-node")


def test_controller_and_worker_gets_the_union():
    data = yaml.safe_load((REPO / "examples" / "kthw.yaml").read_text())
    data["pki"]["keyAlgorithm"] = "ECDSA-P256"
    data["nodes"][0]["roles"] = ["controller", "worker"]
    cluster = spec.loads(yaml.safe_dump(data))
    m = generate_materials(cluster)
    files = _by_path(node_files(cluster, m, "server"))
    assert set(files) == CONTROLLER_FILES | WORKER_FILES
    assert files[f"{PKI}/kubelet-serving.crt"].data == m.cert("kubelet-serving", "server")


def test_ipv6_cluster_gets_ip_sans():
    text = """
name: six
network: {podCIDR: "fd00:10::/56", serviceCIDR: "fd00:20::/112"}
pki: {keyAlgorithm: ECDSA-P256}
nodes:
  - {name: c0, address: "fd00::10", roles: [controller]}
  - {name: w0, address: "fd00::20", roles: [worker]}
"""
    cluster = spec.loads(text)
    m = generate_materials(cluster)
    cert = x509.load_pem_x509_certificate(m.cert("kube-apiserver", "c0"))
    ips = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress))
    assert {IP("fd00::10"), cluster.kubernetes_service_ip, IP("127.0.0.1")} <= ips
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
