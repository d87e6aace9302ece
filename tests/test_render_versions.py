"""The per-version table (units/versions.yaml): complete, reaching the output, and true to the binaries.

Every flag a unit passes is looked up in `<binary> --help` of the pinned release (built by
`python -m hardway.binaries`); the other minors' flags were checked against their sources
(docs/rendering.md). The pinned kube-proxy, kube-scheduler and kubelet load the rendered configs.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from hardway import binaries
from hardway.render import node_plan, version_row
from hardway.render.data import RenderDataError, check_version_table, parse_layout, version_table
from hardway.versions import SUPPORTED_MINORS, parse_version
from helpers import REPO, missing as skip_or_fail
from render_helpers import (VERSIONS, at_version, cluster, exec_start, exec_starts, flags, materials, text,
                                 yaml_docs, yaml_file)

CONFIG_KINDS = {  # file -> (versions.yaml api key, kind)
    "/etc/kubernetes/kubelet-config.yaml": ("kubelet", "KubeletConfiguration"),
    "/etc/kubernetes/kube-proxy-config.yaml": ("kube_proxy", "KubeProxyConfiguration"),
    "/etc/kubernetes/kube-scheduler.yaml": ("kube_scheduler", "KubeSchedulerConfiguration"),
    "/etc/kubernetes/encryption-config.yaml": ("encryption", "EncryptionConfiguration"),
    "/etc/kubernetes/audit-policy.yaml": ("audit", "Policy"),
}


def test_every_supported_minor_has_a_row():
    table = version_table()
    assert set(table) == set(SUPPORTED_MINORS)
    for minor, row in table.items():
        assert re.fullmatch(rf"k8s\.io/kubernetes v{re.escape(minor)}\.\d+", row["source"]), row["source"]
        for key in ("etcd", "coredns", "pause", "containerd", "runc", "cni_plugins", "crictl"):
            assert re.fullmatch(r"\d+\.\d+\.\d+", str(row[key])), (minor, key, row[key])


def test_the_newest_row_uses_the_etcd_the_project_builds():
    gomod = (REPO / "tools/k8s/go.mod").read_text()
    etcd = re.search(r"go\.etcd\.io/etcd/server/v3 v(\S+)", gomod).group(1)
    kubernetes = re.search(r"k8s\.io/kubernetes v(\S+)", gomod).group(1)
    assert version_row(parse_version(kubernetes))["etcd"] == etcd


@pytest.mark.parametrize("minor", VERSIONS)
def test_each_row_reaches_the_rendered_files(minor):
    c = at_version(cluster("kthw"), minor)
    m = materials("kthw")
    row = version_table()[minor]
    server, worker = node_plan(c, m, "server"), node_plan(c, m, "node-0")
    ws = node_plan(c, m, "workstation")
    [deploy] = [d for d in yaml_docs(ws, "/manifests/10-coredns.yaml") if d["kind"] == "Deployment"]
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == f"registry.k8s.io/coredns/coredns:v{row['coredns']}"
    containerd = tomllib.loads(text(worker, "/etc/containerd/config.toml"))
    assert containerd["version"] == row["containerd_config"]["version"] == 3
    plugins = containerd["plugins"]
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == f"registry.k8s.io/pause:{row['pause']}"
    assert plugins["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    cni = plugins["io.containerd.cri.v1.runtime"]["cni"]
    assert cni["bin_dirs"] == ["/opt/cni/bin"] and cni["conf_dir"] == "/etc/cni/net.d"
    assert yaml_file(worker, "/etc/kubernetes/kube-proxy-config.yaml")["mode"] == row["kube_proxy"]["mode"]
    for p in (server, worker):
        for path, (api, kind) in CONFIG_KINDS.items():
            if path in p.paths:
                doc = yaml_file(p, path)
                assert (doc["apiVersion"], doc["kind"]) == (row["api"][api], kind)
    got = {b["name"]: b for b in server.notes.binaries + worker.notes.binaries}
    kube = str(c.version)
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"):
        assert got[name]["version"] == kube and kube in got[name]["url_hint"]
        assert got[name]["path"] == f"/usr/local/bin/{name}"
    for name, key in (("etcd", "etcd"), ("etcdctl", "etcd"), ("containerd", "containerd"), ("runc", "runc"),
                      ("cni-plugins", "cni_plugins"), ("crictl", "crictl")):
        assert got[name]["version"] == f"v{row[key]}" and row[key] in got[name]["url_hint"], name
    assert set(worker.notes.packages) >= {"socat", "conntrack", "ipset", "kmod", *row["kube_proxy"]["packages"]}
    assert exec_start(text(worker, "/etc/systemd/system/containerd.service"))[0] == got["containerd"]["path"]


def test_a_broken_table_or_plan_is_a_clear_error():
    table = {k: dict(v) for k, v in version_table().items()}
    del table["1.36"]
    with pytest.raises(RenderDataError, match=r"versions.yaml: .*no row for supported minor\(s\) 1.36"):
        check_version_table(table, "versions.yaml")
    table = {k: dict(v) for k, v in version_table().items()}
    del table["1.37"]["coredns"]
    with pytest.raises(RenderDataError, match=r'"1.37": missing coredns'):
        check_version_table(table, "versions.yaml")
    plan = yaml.safe_load((REPO / "units/plan.yaml").read_text())
    plan["roles"]["worker"]["files"][0]["mode"] = 644
    with pytest.raises(RenderDataError, match=r'roles.worker.files\[0\].mode: must be a string, got 644; e.g. mode: "0644"'):
        parse_layout(plan, "plan.yaml")
    plan["roles"]["worker"]["files"][0]["mode"] = "06x4"
    with pytest.raises(RenderDataError, match=r"roles.worker.files\[0\]: mode must be an octal string"):
        parse_layout(plan, "plan.yaml")
    plan = yaml.safe_load((REPO / "units/plan.yaml").read_text())
    plan["roles"]["controller"]["binaries"].append("kube-dns")
    with pytest.raises(RenderDataError, match="unknown.*kube-dns"):
        parse_layout(plan, "plan.yaml")



def _plan_problems(tmp_path, old: str, new: str):
    """The messages for a copy of units/plan.yaml with `old` (its first occurrence) made `new`."""
    from hardway.yamlshape import Scan, parse_yaml
    text = (REPO / "units/plan.yaml").read_text()
    assert old in text, old
    edited = text.replace(old, new, 1)
    copy_ = tmp_path / "plan.yaml"
    copy_.write_text(edited)
    tree, raw = parse_yaml(edited)
    with pytest.raises(RenderDataError) as e:
        parse_layout(raw, str(copy_), Scan(tree))
    return str(e.value).splitlines(), copy_, text[:text.index(old)].count("\n") + 1


def test_a_typo_in_plan_yaml_gets_the_line_the_path_and_a_guess(tmp_path):
    problems, copy_, line = _plan_problems(tmp_path, "    per_node: true", "    per_nod: true")
    assert problems == [f"{copy_}: line {line}: kubeconfigs.kubelet.per_nod: unknown key 'per_nod'; "
                        "did you mean 'per_node'? allowed here: entry, user, server, per_node"]
    problems, copy_, line = _plan_problems(tmp_path, "    units: [pod-routes.service, etcd.service", "    unit: [pod-routes.service, etcd.service")
    assert problems == [f"{copy_}: line {line}: roles.controller.unit: unknown key 'unit'; "
                        "did you mean 'units'? allowed here: directories, files, units, binaries, packages"]


def test_a_wrong_value_in_plan_yaml_gets_the_allowed_values(tmp_path):
    problems, copy_, line = _plan_problems(tmp_path, "    server: api_url", "    server: apiurl")
    assert problems == [f"{copy_}: line {line}: kubeconfigs.admin.server: unknown value 'apiurl'; "
                        "allowed: api_url, local_api_url"]
    problems, copy_, line = _plan_problems(tmp_path, "    per_node: true", "    per_node: yes please")
    assert problems == [f"{copy_}: line {line}: kubeconfigs.kubelet.per_node: must be true or false, got 'yes please'"]


# ---------------------------------------------------------------- the real binaries -------------

DAEMONS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")


@pytest.fixture(scope="module")
def built() -> dict:
    version = binaries.pinned_version()
    found = binaries.find_binaries(version)
    missing = [d for d in DAEMONS if d not in found]
    if missing:
        skip_or_fail(f"{', '.join(missing)} {version} not built in {binaries.cache_dir(version)}",
                     "python -m hardway.binaries")
    return found


def _help(path) -> str:
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
    return result.stdout + result.stderr


def test_every_rendered_flag_is_known_to_the_pinned_binaries(built):
    pinned = binaries.pinned_version()
    spec_text = (REPO / "examples/kthw.yaml").read_text()
    assert f"kubernetesVersion: {pinned}" in spec_text, "kthw is not at the pinned version"
    # one node that is both controller and worker carries every daemon
    from hardway import spec
    c = spec.loads(spec_text.replace("roles: [controller]", "roles: [controller, worker]\n    podCIDR: 10.200.9.0/24")
                   .replace("keyAlgorithm: RSA-2048", "keyAlgorithm: ECDSA-P256"))
    from hardway.pki import generate_materials
    plan = node_plan(c, generate_materials(c), "server")
    helps = {}
    checked = 0
    for f in plan.files:
        if not f.path.startswith("/etc/systemd/system/"):
            continue
        args = exec_starts(f.data.decode())[0]  # the daemons have one; pod-routes (not one) has several
        name = args[0].rsplit("/", 1)[1]
        if name not in DAEMONS:
            continue
        helps.setdefault(name, _help(built[name]))
        for flag in flags(args):
            assert re.search(rf"(?<![\w-])--{re.escape(flag)}(?![\w-])", helps[name]), f"{name} {pinned} has no --{flag}"
            checked += 1
    assert set(helps) == set(DAEMONS) and checked > 60


@pytest.mark.parametrize("binary,path,kubeconfig,bad", [
    ("kube-proxy", "/etc/kubernetes/kube-proxy-config.yaml", "/etc/kubernetes/kube-proxy.kubeconfig",
     ("mode: iptables", "mode: fastest")),
    ("kube-scheduler", "/etc/kubernetes/kube-scheduler.yaml", "/etc/kubernetes/kube-scheduler.kubeconfig",
     ("leaderElect: true", "leaderElect: sometimes")),
])
def test_the_pinned_binaries_load_and_validate_the_rendered_configs(built, tmp_path, binary, path, kubeconfig, bad):
    """--write-config-to makes the component load, default and validate its config, then exit."""
    c = at_version(cluster("ha"), next(m for m, v in VERSIONS.items() if v == binaries.pinned_version()))
    m = materials("ha")
    plan = node_plan(c, m, "node-0" if binary == "kube-proxy" else "controller-0")
    (tmp_path / "kubeconfig").write_bytes(plan.file(kubeconfig).data)
    config = text(plan, path).replace(kubeconfig, str(tmp_path / "kubeconfig"))

    def load(body: str) -> subprocess.CompletedProcess:
        (tmp_path / "config.yaml").write_text(body)
        return subprocess.run([str(built[binary]), f"--config={tmp_path / 'config.yaml'}",
                               f"--write-config-to={tmp_path / 'effective.yaml'}"],
                              capture_output=True, text=True, timeout=120)

    result = load(config)
    assert result.returncode == 0, result.stderr[-2000:]
    effective = yaml.safe_load((tmp_path / "effective.yaml").read_text())
    assert effective["kind"] == yaml.safe_load(config)["kind"]
    broken = config.replace(*bad)
    assert broken != config
    assert load(broken).returncode != 0


def _go_seconds(value):
    """A Go duration string ("15m", "15m0s", "1h2m3.5s") in seconds; anything else unchanged."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", value) if isinstance(value, str) and value else None
    if not m or not any(m.groups()):
        return value
    h, mi, s = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def _leaves(doc, prefix=""):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix, doc


def _effective_kubelet_config(log: str) -> dict | None:
    """The `Effective KubeletConfiguration` the kubelet logs once it has loaded and defaulted its config."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if '"Effective KubeletConfiguration"' in line:
            body = []
            for more in lines[i + 1:]:
                if not more.startswith("\t"):
                    break
                body.append(more[1:])
            return yaml.safe_load("\n".join(body))
    return None


def _run_kubelet(kubelet, tmp_path, plan, config: str) -> tuple[subprocess.CompletedProcess, str, str]:
    """Run the real kubelet with the rendered unit's flags and `config`, every planned path moved under
    a scratch root. The container runtime socket is moved there too and does not exist, so the
    kubelet stops at its first contact with the runtime: after it has loaded, defaulted and
    validated the configuration, read its kubeconfig and its client CA. Returns the result, the
    scratch root and the configuration as the kubelet read it."""
    root = tmp_path / "root"
    for d in plan.directories:
        (root / d.path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for f in plan.files:
        target = root / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.data)
    moved = sorted({f.path for f in plan.files} | {d.path for d in plan.directories} | {"/run/containerd/"},
                   key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(p) for p in moved))

    def relocate(s: str) -> str:
        return pattern.sub(lambda m: f"{root}{m.group(0)}", s)

    config_path = "/etc/kubernetes/kubelet-config.yaml"
    config = relocate(config)
    (root / config_path.lstrip("/")).write_text(config)
    args = exec_start(text(plan, "/etc/systemd/system/kubelet.service"))
    argv = [str(kubelet)] + [relocate(a) for a in args[1:]]
    assert f"--config={root}{config_path}" in argv
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        # This host has cgroup v1, which the kubelet refuses by default (failCgroupV1); nodes run v2.
        argv.append("--fail-cgroupv1=false")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return result, str(root), config


def test_the_pinned_kubelet_loads_the_rendered_config_strictly(built, tmp_path):
    """The kubelet has no --write-config-to: run it on the rendered config until it needs the
    container runtime. A field it does not know would only be logged ("Using lenient decoding as
    strict decoding failed") and then dropped; a wrong type or value stops it before the runtime."""
    c = at_version(cluster("ha"), next(m for m, v in VERSIONS.items() if v == binaries.pinned_version()))
    plan = node_plan(c, materials("ha"), "node-0")
    rendered = text(plan, "/etc/kubernetes/kubelet-config.yaml")
    result, root, loaded = _run_kubelet(built["kubelet"], tmp_path, plan, rendered)
    log = result.stdout + result.stderr
    # for messages: the log without its flag dump and its config dump
    tail = "\n".join(line for line in log.splitlines()
                     if "FLAG: --" not in line and not line.startswith(("\t", " >")))[-3000:]
    assert result.returncode != 0, tail  # it cannot reach a container runtime here
    for bad in ("strict decoding", "lenient decoding", "failed to load kubelet config", "failed to validate kubelet",
                "unknown field", "failed to construct kubelet dependencies"):
        assert bad not in log, f"kubelet: {bad!r} in:\n{tail}"
    # got past config loading and validation, its kubeconfig and client CA, to the runtime connection
    assert "validate service connection" in log and f"{root}/run/containerd/containerd.sock" in log, tail
    assert "Loaded a new CA Bundle" in log, tail
    effective = _effective_kubelet_config(log)
    assert effective is not None, tail
    for key, value in _leaves(yaml.safe_load(loaded)):
        got = effective
        for part in key.split("."):
            assert isinstance(got, dict) and part in got, f"the kubelet dropped {key}: {effective}"
            got = got[part]
        assert _go_seconds(got) == _go_seconds(value), f"{key}: rendered {value!r}, the kubelet uses {got!r}"
    # the same run with a misspelt field: proves this kubelet still reports what the check looks for
    typo = rendered.replace("\nresolvConf:", "\nresolveConf:")
    assert typo != rendered
    result, _, _ = _run_kubelet(built["kubelet"], tmp_path / "typo", plan, typo)
    assert "strict decoding error" in result.stdout + result.stderr and "resolveConf" in result.stdout + result.stderr
