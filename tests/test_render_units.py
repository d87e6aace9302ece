"""The rendered units and scripts, checked by the programs that will run them.

- `systemd-analyze verify` on each node's units together, in a throwaway root holding the host's
  own system units (targets) and a fake executable at every Exec*= path: a correct set gives exit 0
  and no output at all (a warning is a failure). A deliberately broken unit proves the check bites.
- `haproxy -c` on the load balancer's configuration.
- routes.sh run by `sh` with a fake `ip` that records what it is asked to do.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hardway.plan import WORKSTATION, NodePlan
from hardway.render import node_plan
from helpers import missing
from render_helpers import VERSIONS, at_version, cluster, materials, need, text

SYSTEMD_HOW = "apt-get install systemd"
EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecReload")


def _host_units() -> Path:
    for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (d / "multi-user.target").is_file():
            return d
    missing("no system units (multi-user.target) on this host", SYSTEMD_HOW)


def _programs(unit: str) -> set[str]:
    joined = unit.replace("\\\n", " ")
    found = set()
    for line in joined.splitlines():
        key, eq, value = line.partition("=")
        if eq and key.strip() in EXEC_KEYS:
            found.add(value.strip().lstrip("-@:+!").split()[0])
    return found


def _root_for(tmp: Path, units: dict[str, str], fake_programs: bool = True) -> tuple[Path, list[str]]:
    root = tmp / "root"
    shutil.copytree(_host_units(), root / "usr/lib/systemd/system", symlinks=True)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    for name, body in units.items():
        (unit_dir / name).write_text(body)
        if fake_programs:
            for program in _programs(body):
                fake = root / program.lstrip("/")
                fake.parent.mkdir(parents=True, exist_ok=True)
                fake.write_text("#!/bin/sh\nexit 0\n")
                fake.chmod(0o755)
    return root, [str(unit_dir / name) for name in units]


def verify(tmp: Path, units: dict[str, str], fake_programs: bool = True) -> subprocess.CompletedProcess:
    tool = need("systemd-analyze", SYSTEMD_HOW)
    root, paths = _root_for(tmp, units, fake_programs)
    return subprocess.run([tool, "verify", f"--root={root}", "--man=no", "--generators=no", *paths],
                          capture_output=True, text=True, timeout=120)


def units_of(plan: NodePlan) -> dict[str, str]:
    return {f.path.rsplit("/", 1)[1]: f.data.decode() for f in plan.files if f.path.startswith("/etc/systemd/system/")}


def _nodes(example: str) -> list[str]:
    c = cluster(example)
    seen, names = set(), []
    for n in c.nodes:  # one node per combination of roles is enough
        if n.roles not in seen:
            seen.add(n.roles)
            names.append(n.name)
    return names


NODE_CASES = [pytest.param(e, n, id=f"{e}-{n}") for e in ("kthw", "ha", "six") for n in _nodes(e)]


@pytest.mark.parametrize("example,node", NODE_CASES)
def test_systemd_accepts_each_nodes_units_without_a_word(tmp_path, example, node):
    plan = node_plan(cluster(example), materials(example), node)
    units = units_of(plan)
    assert set(units) == set(plan.units)
    result = verify(tmp_path, units)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", f"systemd-analyze verify on {node}:\n{output}"


@pytest.mark.parametrize("minor", VERSIONS)
def test_systemd_accepts_the_units_of_every_version(tmp_path, minor):
    c = at_version(cluster("kthw"), minor)
    units = {}
    for name in ("server", "node-0"):
        units.update(units_of(node_plan(c, materials("kthw"), name)))
    result = verify(tmp_path, units)
    assert (result.returncode, (result.stdout + result.stderr).strip()) == (0, "")


@pytest.mark.parametrize("breakage,expect", [
    pytest.param(lambda u: u.replace("Restart=on-failure", "Restart=sometimes"), "sometimes", id="bad-value"),
    pytest.param(lambda u: u.replace("[Service]\n", "[Service]\nExecStartt=/bin/true\n"), "ExecStartt", id="unknown-key"),
    pytest.param(lambda u: u.replace("Type=notify", "Type=notifyy"), "notifyy", id="bad-type"),
])
def test_a_broken_unit_fails_the_check(tmp_path, breakage, expect):
    units = units_of(node_plan(cluster("ha"), materials("ha"), "controller-0"))
    broken = breakage(units["etcd.service"])
    assert broken != units["etcd.service"]
    units["etcd.service"] = broken
    result = verify(tmp_path, units)
    output = (result.stdout + result.stderr).strip()
    assert output and expect in output  # the same rule as above: any output fails a unit


def test_a_missing_program_fails_the_check(tmp_path):
    units = units_of(node_plan(cluster("ha"), materials("ha"), "node-0"))
    result = verify(tmp_path, units, fake_programs=False)
    assert result.returncode != 0
    assert "/usr/local/bin/kubelet" in result.stdout + result.stderr


@pytest.mark.parametrize("example", ["ha", "large", "six"])
def test_haproxy_accepts_the_load_balancer_config(tmp_path, example):
    haproxy = need("haproxy", "apt-get install haproxy")
    c = cluster(example)
    [lb] = c.loadbalancers
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_bytes(node_plan(c, materials(example), lb.name).file("/etc/haproxy/haproxy.cfg").data)
    result = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALERT" not in result.stdout + result.stderr


def _run_routes(tmp_path: Path, example: str, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    sh = need("sh", "apt-get install dash")
    script = tmp_path / "routes.sh"
    script.write_bytes(node_plan(cluster(example), materials(example), WORKSTATION).file("/routes.sh").data)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "ip.log"
    log.write_text("")
    fake = bin_dir / "ip"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    result = subprocess.run([sh, str(script), *args], capture_output=True, text=True, env=env, timeout=60)
    return result, log.read_text().splitlines()


@pytest.mark.parametrize("example,node", [("kthw", "node-0"), ("kthw", "server"), ("ha", "node-2"),
                                          ("ha", "controller-1"), ("six", "c2")])
def test_routes_script_adds_every_other_workers_range(tmp_path, example, node):
    c = cluster(example)
    result, calls = _run_routes(tmp_path, example, node)
    assert result.returncode == 0, result.stderr
    expected = [f"route replace {w.pod_cidr} via {w.address}" for w in c.workers if w.name != node]
    assert calls == expected
    assert calls == [f"route replace {r['cidr']} via {r['via']}" for r in node_plan(c, materials(example), node).notes.routes]


@pytest.mark.parametrize("args,code", [((), 2), (("nope",), 1), (("lb",), 1)])
def test_routes_script_refuses_a_wrong_node_and_touches_nothing(tmp_path, args, code):
    result, calls = _run_routes(tmp_path, "ha", *args)
    assert result.returncode == code and calls == []
    assert result.stderr.strip()


def test_pod_nat_rule_is_added_and_removed_symmetrically():
    plan = node_plan(cluster("ha"), materials("ha"), "node-1")
    unit = text(plan, "/etc/systemd/system/pod-nat.service")
    lines = dict(line.split("=", 1) for line in unit.splitlines() if line.startswith("Exec"))
    add = lines["ExecStart"].split()
    delete = lines["ExecStop"].split()
    assert add[add.index("-A")] and delete[delete.index("-D")]
    assert [a for a in add if a != "-A"] == [a for a in delete if a != "-D"]
    assert lines["ExecStartPre"].lstrip("-") == lines["ExecStop"]
    c = cluster("ha")
    assert add[add.index("-s") + 1] == str(c.node("node-1").pod_cidr)
    assert add[add.index("!") + 2] == str(c.pod_cidr)
    assert add[-2:] == ["-j", "MASQUERADE"]
    # and the bridge itself does not masquerade pod-to-pod traffic between nodes
    assert re.search(r'"ipMasq":\s*false', text(plan, "/etc/cni/net.d/10-bridge.conflist"))


# ---------------------------------------------------------------- HAProxy, running --------------

def _self_signed(tmp: Path) -> ssl.SSLContext:
    """A server-side TLS context with a throwaway certificate for 127.0.0.1 (HAProxy checks with `verify none`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in kube-apiserver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
           .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
           .not_valid_after(now + datetime.timedelta(hours=1))
           .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
           .sign(key, hashes.SHA256()))
    (tmp / "tls.crt").write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    (tmp / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "tls.crt", tmp / "tls.key")
    return ctx


class _StandInApi(ThreadingHTTPServer):
    """A TLS-only HTTP server on 127.0.0.1 standing in for one kube-apiserver: GET /readyz answers
    `readyz`, any other GET answers the server's name. It records every request it could read, so
    a request it saw came over TLS. The handshake runs in the request's thread (a client that never
    finishes one blocks nothing)."""

    daemon_threads = True

    def __init__(self, name: str, readyz: int, tls: ssl.SSLContext):
        self.name, self.readyz, self.tls = name, readyz, tls
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server API)
                server.requests.append(self.path)
                status, body = (server.readyz, b"ok") if self.path == "/readyz" else (200, server.name.encode())
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def finish_request(self, request, client_address):
        request.settimeout(5)
        try:
            request = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # not TLS (or gone): nothing is served
        super().finish_request(request, client_address)

    @property
    def port(self) -> int:
        return self.server_address[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _on_loopback(cfg: str, frontend_port: int, backend_ports: list[int], stats: Path) -> str:
    """The rendered configuration with its addresses moved to 127.0.0.1, the syslog target dropped
    (there is no /dev/log here), a stats socket added, and the check interval shortened. What is
    checked and how (check, check-ssl, httpchk, expect) is left exactly as rendered."""
    ports = iter(backend_ports)
    out = []
    for line in cfg.splitlines():
        words = line.split()
        if words[:1] == ["bind"]:
            line = f"  bind 127.0.0.1:{frontend_port}"
        elif words[:1] == ["server"]:
            words[2] = f"127.0.0.1:{next(ports)}"
            line = "  " + " ".join(words)
        elif words[:1] == ["log"] and words[1].startswith("/"):
            continue
        line = re.sub(r"(?<=\binter )\S+", "200ms", line)
        out.append(line)
        if line == "global":
            out.append(f"  stats socket {stats} mode 600 level admin")
    assert next(ports, None) is None, "the config has fewer servers than stand-ins"
    return "\n".join(out) + "\n"


def _server_states(stats: Path) -> dict[str, tuple[str, str]]:
    """server name -> (status, check_status) from HAProxy's `show stat` on its stats socket; {} while
    the socket is not there or not listening yet."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return {}
    lines = data.decode().splitlines()
    if not lines:
        return {}
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
    # a leading "* " on check_status means "a check is running now"; the status shown is the last one's
    return {r["svname"]: (r["status"], r["check_status"].removeprefix("* ")) for r in rows
            if r["svname"] not in ("FRONTEND", "BACKEND")}


def _through(port: int) -> str:
    """One request through the load balancer (TLS passes through to a stand-in): who answered."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/who")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_haproxy_sends_traffic_only_to_a_ready_api_server(tmp_path):
    """The real HAProxy with the rendered config on loopback, in front of one TLS stand-in for
    kube-apiserver per controller: the first one's /readyz answers 200, the others' 500. The health
    check must speak TLS, ask /readyz and take the 500 servers out; every request then reaches the
    ready one."""
    haproxy = need("haproxy", "apt-get install haproxy")
    c = cluster("ha")
    [lb] = c.loadbalancers
    rendered = text(node_plan(c, materials("ha"), lb.name), "/etc/haproxy/haproxy.cfg")
    tls = _self_signed(tmp_path)
    apis: list[_StandInApi] = []
    proc = None
    try:
        # the first controller is ready, the others are not
        for i, ctrl in enumerate(c.controllers):
            apis.append(_StandInApi(ctrl.name, 200 if i == 0 else 500, tls))
        ready, unready = apis[0], apis[1:]
        port, stats = _free_port(), tmp_path / "stats.sock"
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(_on_loopback(rendered, port, [a.port for a in apis], stats))
        log = tmp_path / "haproxy.log"
        # -n: the global maxconn needs more open files than this machine allows (the lab does the same)
        with open(log, "wb") as out:
            proc = subprocess.Popen([haproxy, "-db", "-n", "1000", "-f", str(cfg)], stdout=out,
                                    stderr=subprocess.STDOUT)
        states: dict[str, tuple[str, str]] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"haproxy exited: {log.read_text()}"
            states = _server_states(stats)
            if (states.get(ready.name, ("",))[0] == "UP" and states[ready.name][1] == "L7OK"
                    and all(states.get(a.name, ("",))[0] == "DOWN" for a in unready)):
                break
            time.sleep(0.2)
        assert states.get(ready.name) == ("UP", "L7OK"), f"the ready server is not passing its check: {states}"
        for a in unready:
            # L7STS: the check got an HTTP answer with a status other than the expected 200
            assert states.get(a.name) == ("DOWN", "L7STS"), f"{a.name} answered 500 yet is not taken out: {states}"
        # the checks reached the servers over TLS (the stand-ins speak nothing else) and asked /readyz
        for a in apis:
            assert "/readyz" in a.requests, f"{a.name} never saw a TLS health check: {a.requests}"
        answered = [_through(port) for _ in range(2 * len(apis))]
        assert answered == [ready.name] * len(answered)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for a in apis:
            a.stop()


NODE_TOOL, NODE_TABLE = "/usr/local/sbin/hardway-nodes.sh", "/etc/kubernetes/cluster-nodes.tsv"


@pytest.mark.parametrize("example,node", [("kthw", "node-0"), ("kthw", "server"), ("ha", "controller-1"), ("six", "c2")])
def test_pod_routes_unit_runs_the_node_tool_over_the_shared_table(example, node):
    """pod-routes.service does not grow with the cluster: one command over the node table, which is
    the same file (rendered once) in every bundle; it is started before the kubelet."""
    c = cluster(example)
    plans = {n.name: node_plan(c, materials(example), n.name) for n in c.nodes}
    plan = plans[node]
    unit = text(plan, "/etc/systemd/system/pod-routes.service")
    starts = [line.split("=", 1)[1].split() for line in unit.splitlines() if line.startswith("ExecStart=")]
    stops = [line.split("=", 1)[1].lstrip("-").split() for line in unit.splitlines() if line.startswith("ExecStop=")]
    assert starts == [[NODE_TOOL, "routes", "add", node]] and stops == [[NODE_TOOL, "routes", "del", node]]
    assert plan.units[0] == "pod-routes.service" and "Before=kubelet.service" in unit
    assert len({p.file(NODE_TABLE).data for p in plans.values()}) == 1  # one table for the whole cluster
    assert len({p.file(NODE_TOOL).data for p in plans.values()}) == 1
    assert plan.file(NODE_TOOL).mode == 0o755


def _node_tool_in_a_namespace(tmp_path: Path, c, plan: NodePlan, commands: str) -> str:
    """Run `commands` in a fresh network namespace holding a dummy link on every node's network, with
    the plan's hardway-nodes.sh and table as $TOOL and $TABLE; its stdout."""
    from helpers import need_namespaces
    need_namespaces()
    (tmp_path / "tool.sh").write_bytes(plan.file(NODE_TOOL).data)
    (tmp_path / "table").write_bytes(plan.file(NODE_TABLE).data)
    links = []
    for n in c.nodes:  # an address on each node's network, so every worker address is a reachable gateway
        net = ipaddress.ip_network(f"{n.address}/{8 if n.address.version == 4 else 64}", strict=False)
        here = f"{net[-2]}/{net.prefixlen}"
        if here not in links:
            links.append(here)
    setup = "ip link add d0 type veth peer name d1; ip link set d1 up; ip link set d0 up; " + "; ".join(
        f"ip addr add {a} dev d0 nodad" if ":" in a else f"ip addr add {a} dev d0" for a in links)
    script = f"set -e; {setup}; TOOL='sh {tmp_path}/tool.sh'; TABLE={tmp_path}/table; {commands}"
    r = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _routes(listing: str) -> set[tuple[str, str]]:
    """(destination, gateway) of the `via` routes in `ip route show` output."""
    out = set()
    for line in listing.splitlines():
        words = line.split()
        if "via" in words:
            out.add((words[0], words[words.index("via") + 1]))
    return out


@pytest.mark.parametrize("example,node", [("kthw", "node-0"), ("kthw", "server"), ("ha", "controller-1"), ("six", "c2")])
def test_node_tool_adds_and_deletes_the_routes_of_the_plan_in_a_network_namespace(tmp_path, example, node):
    """The real `ip`, in a network namespace: `routes add NODE` adds exactly the plan's routes (the ones
    the lab adds and the workstation's routes.sh adds), twice is the same as once, `del` removes them."""
    plan = node_plan(cluster(example), materials(example), node)
    out = _node_tool_in_a_namespace(tmp_path, cluster(example), plan, f"""
        $TOOL routes add {node} $TABLE; $TOOL routes add {node} $TABLE
        ip route show; ip -6 route show; echo ---
        $TOOL routes del {node} $TABLE; ip route show; ip -6 route show""")
    added, after = out.split("---")
    expected = {(r["cidr"], r["via"]) for r in plan.notes.routes}
    assert expected and _routes(added) == expected
    assert _routes(after) == set()


def test_node_tool_refuses_a_node_not_in_the_table_and_adds_nothing(tmp_path):
    plan = node_plan(cluster("ha"), materials("ha"), "node-0")
    out = _node_tool_in_a_namespace(tmp_path, cluster("ha"), plan, """
        if $TOOL routes add nobody $TABLE 2>"$TABLE.err"; then echo accepted; fi; cat "$TABLE.err"; ip route show""")
    assert "accepted" not in out and "nobody is not a node" in out
    assert _routes(out) == set()


@pytest.mark.parametrize("example", ["kthw", "ha", "six"])
def test_node_tool_prints_the_hosts_lines_of_the_plan(tmp_path, example):
    """`hosts` prints the plan's hosts notes (what the lab's /etc/hosts holds) between the markers."""
    c = cluster(example)
    plan = node_plan(c, materials(example), c.nodes[0].name)
    (tmp_path / "tool.sh").write_bytes(plan.file(NODE_TOOL).data)
    (tmp_path / "table").write_bytes(plan.file(NODE_TABLE).data)
    r = subprocess.run(["sh", str(tmp_path / "tool.sh"), "hosts", str(tmp_path / "table")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"# BEGIN hardway {c.name}" and lines[-1] == f"# END hardway {c.name}"
    assert lines[1:-1] == list(plan.notes.hosts) and len(lines) - 2 >= len(c.nodes)


def test_node_tool_is_posix_and_shellcheck_clean(tmp_path, prerequisite):
    if not shutil.which("shellcheck"):
        prerequisite("shellcheck", "apt-get install -y shellcheck")
    plan = node_plan(cluster("ha"), materials("ha"), "node-0")
    r = subprocess.run(["shellcheck", "-s", "sh", "-"], input=plan.file(NODE_TOOL).data, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode()
    (tmp_path / "tool.sh").write_bytes(plan.file(NODE_TOOL).data)
    for args in ([], ["routes"], ["routes", "add"], ["routes", "move", "node-0"], ["hosts", "a", "b"], ["what"]):
        r = subprocess.run(["sh", str(tmp_path / "tool.sh"), *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "usage:" in r.stderr, args
    r = subprocess.run(["sh", str(tmp_path / "tool.sh"), "hosts", str(tmp_path / "missing")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "cannot read" in r.stderr


def test_no_pod_routes_unit_where_there_is_no_route():
    from hardway import spec
    from hardway.pki import generate_materials
    single = spec.loads("name: one\npki: {keyAlgorithm: ECDSA-P256}\n"
                        "nodes:\n  - {name: a, address: 10.0.0.1, roles: [controller, worker]}\n")
    plan = node_plan(single, generate_materials(single), "a")
    assert not plan.notes.routes
    assert "pod-routes.service" not in plan.units
    assert "/etc/systemd/system/pod-routes.service" not in {f.path for f in plan.files}
