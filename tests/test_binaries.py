"""Tests of hardway.binaries: locating and building the real Kubernetes, etcd and worker binaries.

The tests marked ``slow`` run the real binaries from the build cache. When they are missing
they are skipped with the command that builds them, except under CI=true, where they are
built (about 18 minutes cold on 2 cores for Kubernetes and etcd, and more for the worker's,
see docs/binaries.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from hardway import binaries
from hardway.binaries import (ALL_BINARIES, BINARIES, CNI_PLUGINS, WORKER_BINARIES, BuildError, build, cache_dir,
                              cni_dir, find_binaries, find_cni_plugins, find_worker_binaries, module_dir_hash,
                              pinned_version, worker_pins)
from hardway.fsutil import is_temp_name
from helpers import IN_CI, REPO, missing

VERSION = pinned_version()
BUILD_COMMAND = "python -m hardway.binaries"
WORKER_BUILD_COMMAND = "python -m hardway.binaries --only worker"
WORKER_NAMES = [n for n in ALL_BINARIES if n not in BINARIES]  # WORKER_BINARIES and cni/<plugin>
KUBE_DAEMONS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")


def _pinned(module: str) -> str:
    """The version of ``module`` in tools/k8s/go.mod, without the leading v."""
    text = (REPO / "tools" / "k8s" / "go.mod").read_text()
    match = re.search(rf"^\s*{re.escape(module)} v(\S+)", text, re.M)
    assert match, f"{module} not in tools/k8s/go.mod"
    return match.group(1)


def _make_exe(path: Path, body: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)
    return path


# --- the real binaries --------------------------------------------------------------------


def _built(names, command: str) -> dict[str, Path]:
    """`names` of the pinned version from the build cache: skipped when absent, built under CI=true."""
    bin_dir = cache_dir(VERSION)
    absent = [n for n in names if not os.access(bin_dir / n, os.X_OK)]
    if absent and not IN_CI:
        missing(f"{', '.join(absent)} not built in {bin_dir}", command)

    def progress(name: str, index: int, total: int) -> None:
        print(f"[{index}/{total}] building {name} {VERSION}", file=sys.stderr, flush=True)

    return build(VERSION, only=list(names), progress=progress)


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    """The Kubernetes and etcd binaries; built under CI=true."""
    return _built(BINARIES, f"{BUILD_COMMAND}  (about 18 minutes cold, see docs/binaries.md)")


def _run(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(path), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow
def test_every_binary_exists_after_build(built: dict[str, Path]) -> None:
    assert set(built) == set(BINARIES)
    for name, path in built.items():
        assert path == cache_dir(VERSION) / name
        assert path.is_file() and os.access(path, os.X_OK), path
        assert not path.resolve().is_relative_to(REPO.resolve()), "binaries must not land in the repository"


@pytest.mark.slow
def test_build_is_a_no_op_when_everything_is_cached(built, monkeypatch) -> None:
    def no_go(*args, **kwargs):
        raise AssertionError(f"go was run although every binary is cached: {args}")

    monkeypatch.setattr(binaries.subprocess, "run", no_go)
    mtimes = {n: p.stat().st_mtime_ns for n, p in built.items()}
    assert build(VERSION) == built
    assert {n: p.stat().st_mtime_ns for n, p in built.items()} == mtimes


@pytest.mark.slow
@pytest.mark.parametrize("name", KUBE_DAEMONS)
def test_kubernetes_binary_reports_pinned_version(built, name: str) -> None:
    proc = _run(built[name], "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"Kubernetes {VERSION}"


@pytest.mark.slow
def test_kubectl_reports_pinned_version(built) -> None:
    proc = _run(built["kubectl"], "version", "--client", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    client = json.loads(proc.stdout)["clientVersion"]
    major, minor = VERSION[1:].split(".")[:2]
    assert client["gitVersion"] == VERSION
    assert (client["major"], client["minor"]) == (major, minor)
    assert client["gitTreeState"] == "clean"
    plain = _run(built["kubectl"], "version", "--client")
    assert plain.returncode == 0, plain.stderr
    assert f"Client Version: {VERSION}" in plain.stdout


@pytest.mark.slow
def test_etcd_and_etcdctl_run(built) -> None:
    etcd = _run(built["etcd"], "--version")
    assert etcd.returncode == 0, etcd.stderr
    assert f"etcd Version: {_pinned('go.etcd.io/etcd/server/v3')}" in etcd.stdout
    etcdctl = _run(built["etcdctl"], "version")
    assert etcdctl.returncode == 0, etcdctl.stderr
    assert f"etcdctl version: {_pinned('go.etcd.io/etcd/etcdctl/v3')}" in etcdctl.stdout


# --- the real worker binaries ----------------------------------------------------------------

PINS = worker_pins()
CNI_NAMES = [f"cni/{p}" for p in CNI_PLUGINS]


def _module(path: str):
    [module] = [m for m in PINS.modules if m.path == path]
    return module


@pytest.fixture(scope="module")
def worker_built() -> dict[str, Path]:
    """The worker's binaries; built under CI=true."""
    return _built(WORKER_NAMES, f"{WORKER_BUILD_COMMAND}  (needs libseccomp-dev, pkg-config, gcc and busybox-static; "
                                "see docs/binaries.md)")


def _has_interpreter(path: Path) -> bool:
    """Whether the ELF executable asks for a dynamic loader (a PT_INTERP program header)."""
    with path.open("rb") as f:
        head = f.read(65536)
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    assert head[4] == 2 and head[5] == 1, f"{path} is not a 64-bit little-endian ELF file"
    (phoff,) = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    types = [struct.unpack_from("<I", head, phoff + i * phentsize)[0] for i in range(phnum)]
    assert types, f"{path} has no program headers"
    return 3 in types  # PT_INTERP


@pytest.mark.slow
def test_every_worker_binary_exists_after_build(worker_built, monkeypatch) -> None:
    monkeypatch.delenv("HARDWAY_BIN_DIR", raising=False)
    assert set(worker_built) == set(WORKER_NAMES)
    for name, path in worker_built.items():
        assert path == cache_dir(VERSION) / name
        assert path.is_file() and os.access(path, os.X_OK), path
        assert not path.resolve().is_relative_to(REPO.resolve()), "binaries must not land in the repository"
    assert find_worker_binaries(VERSION) == {n: cache_dir(VERSION) / n for n in WORKER_BINARIES}
    assert find_cni_plugins(VERSION) == {p: cni_dir(VERSION) / p for p in CNI_PLUGINS}
    assert sorted(p.name for p in cni_dir(VERSION).iterdir()) == sorted(CNI_PLUGINS)


@pytest.mark.slow
def test_worker_build_is_a_no_op_when_everything_is_cached(worker_built, monkeypatch) -> None:
    def no_run(*args, **kwargs):
        raise AssertionError(f"a build step ran although every binary is cached: {args}")

    monkeypatch.setattr(binaries.subprocess, "run", no_run)
    mtimes = {n: p.stat().st_mtime_ns for n, p in worker_built.items()}
    assert build(VERSION, only=WORKER_NAMES) == worker_built
    assert {n: p.stat().st_mtime_ns for n, p in worker_built.items()} == mtimes


@pytest.mark.slow
def test_containerd_binaries_report_pinned_version(worker_built) -> None:
    m = _module("github.com/containerd/containerd/v2")
    containerd = _run(worker_built["containerd"], "--version")
    assert containerd.returncode == 0, containerd.stderr
    assert containerd.stdout.strip() == f"containerd {m.path} {m.version} {m.sum}"
    ctr = _run(worker_built["ctr"], "--version")
    assert ctr.returncode == 0, ctr.stderr
    assert ctr.stdout.strip() == f"ctr {m.path} {m.version}"
    shim = _run(worker_built["containerd-shim-runc-v2"], "-v")
    assert shim.returncode == 0, shim.stderr
    assert re.search(rf"^\s*Version:\s+{re.escape(m.version)}$", shim.stdout, re.M), shim.stdout
    assert re.search(rf"^\s*Revision:\s+{re.escape(m.sum)}$", shim.stdout, re.M), shim.stdout


@pytest.mark.slow
def test_runc_reports_pinned_version_and_seccomp(worker_built) -> None:
    m = _module("github.com/opencontainers/runc")
    proc = _run(worker_built["runc"], "--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"runc version {m.version.removeprefix('v')}"
    assert f"commit: {m.sum}" in lines
    # Only a runc built with the seccomp tag (and linked against libseccomp) prints this line.
    assert any(re.fullmatch(r"libseccomp: \d+\.\d+\.\d+", line) for line in lines), proc.stdout


@pytest.mark.slow
def test_crictl_and_coredns_report_pinned_versions(worker_built) -> None:
    crictl = _run(worker_built["crictl"], "--version")
    assert crictl.returncode == 0, crictl.stderr
    assert crictl.stdout.strip() == f"crictl version {_module('sigs.k8s.io/cri-tools').version}"
    m = _module("github.com/coredns/coredns")
    coredns = _run(worker_built["coredns"], "-version")
    assert coredns.returncode == 0, coredns.stderr
    first, second = coredns.stdout.strip().splitlines()
    assert first == f"CoreDNS-{m.version.removeprefix('v')}"
    assert second.startswith("linux/") and second.endswith(f", {m.sum}"), second


@pytest.mark.slow
@pytest.mark.parametrize("plugin", CNI_PLUGINS)
def test_cni_plugin_reports_pinned_version(worker_built, plugin: str) -> None:
    version = _module("github.com/containernetworking/plugins").version
    path = worker_built[f"cni/{plugin}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    # Without CNI_COMMAND a plugin prints its "about" line (with the stamped version) to stderr.
    about = subprocess.run([str(path)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert about.returncode == 0, about.stderr
    assert about.stderr.splitlines()[0] == f"CNI {plugin} plugin {version}"
    # CNI_COMMAND=VERSION answers the protocol's VERSION call.
    call = subprocess.run([str(path)], env={**env, "CNI_COMMAND": "VERSION"}, input='{"cniVersion": "1.0.0"}',
                          capture_output=True, text=True, timeout=60, check=False)
    assert call.returncode == 0, call.stderr
    assert "1.0.0" in json.loads(call.stdout)["supportedVersions"]


@pytest.mark.slow
def test_pause_is_static_and_reports_its_version(worker_built) -> None:
    pause = worker_built["pause"]
    assert not _has_interpreter(pause), "pause must be a static executable"
    proc = _run(pause, "-v")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"pause.c v{PINS.pause.version}-hardway"


@pytest.mark.slow
def test_go_worker_binaries_are_static_except_runc(worker_built) -> None:
    for name in WORKER_NAMES:
        if name in ("runc", "pause", "busybox"):
            continue
        assert not _has_interpreter(worker_built[name]), f"{name} is dynamically linked"
    # runc uses cgo with Debian's libseccomp, like upstream's `make runc` (not `make static`).
    assert _has_interpreter(worker_built["runc"])


@pytest.mark.slow
def test_busybox_is_static_with_the_applets_test_images_use(worker_built, tmp_path) -> None:
    busybox = worker_built["busybox"]
    assert not _has_interpreter(busybox), "busybox must be static to run in an image without libc"
    listed = _run(busybox, "--list")
    assert listed.returncode == 0, listed.stderr
    assert set(PINS.busybox.applets) <= set(listed.stdout.split())
    assert set(PINS.busybox.applets) >= {"sh", "wget", "nslookup", "httpd"}
    sh = _run(busybox, "sh", "-c", "echo $((6 * 7))")
    assert (sh.returncode, sh.stdout) == (0, "42\n"), sh.stderr
    # Invoked under an applet's name, as the lab's image will (symlinks).
    link = tmp_path / "sh"
    link.symlink_to(busybox)
    assert _run(link, "-c", "echo ok").stdout == "ok\n"


# --- locating binaries (no build needed) ------------------------------------------------


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HARDWAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HARDWAY_BIN_DIR", raising=False)
    return tmp_path / "cache"


def test_cache_dir_honours_hardway_cache(empty_cache) -> None:
    assert cache_dir("v1.37.2") == empty_cache / "v1.37.2" / "bin"


def test_cache_dir_default(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("HARDWAY_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir("v1.36.3") == tmp_path / ".cache" / "hardway" / "v1.36.3" / "bin"


def test_find_binaries_missing_are_absent(empty_cache) -> None:
    assert find_binaries(VERSION) == {}


def test_find_binaries_uses_cache(empty_cache) -> None:
    exe = _make_exe(cache_dir(VERSION) / "kubectl")
    assert find_binaries(VERSION) == {"kubectl": exe}
    assert find_binaries("v1.36.3") == {}


def test_find_binaries_honours_bin_dir(empty_cache, tmp_path) -> None:
    official = tmp_path / "official"
    paths = {n: _make_exe(official / n) for n in ("kube-apiserver", "kubelet")}
    cached_etcd = _make_exe(cache_dir(VERSION) / "etcd")
    _make_exe(cache_dir(VERSION) / "kubelet")
    found = find_binaries(VERSION, bin_dir=official)
    # bin_dir wins over the cache; what it lacks still comes from the cache.
    assert found == {**paths, "etcd": cached_etcd}


def test_find_binaries_honours_env_bin_dir(empty_cache, tmp_path, monkeypatch) -> None:
    env_dir = tmp_path / "env"
    arg_dir = tmp_path / "arg"
    env_kubectl = _make_exe(env_dir / "kubectl")
    env_etcdctl = _make_exe(env_dir / "etcdctl")
    arg_kubectl = _make_exe(arg_dir / "kubectl")
    monkeypatch.setenv("HARDWAY_BIN_DIR", str(env_dir))
    assert find_binaries(VERSION) == {"kubectl": env_kubectl, "etcdctl": env_etcdctl}
    # An explicit bin_dir comes before HARDWAY_BIN_DIR.
    assert find_binaries(VERSION, bin_dir=arg_dir) == {"kubectl": arg_kubectl, "etcdctl": env_etcdctl}


def test_find_binaries_ignores_non_executables(empty_cache, tmp_path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "kubectl").write_text("not executable")
    (d / "etcd").mkdir()
    assert find_binaries(VERSION, bin_dir=d) == {}


# --- building, without the real Go build ------------------------------------------------


def test_unsupported_version_raises_helpful_build_error(empty_cache, monkeypatch) -> None:
    def no_go(*args, **kwargs):
        raise AssertionError("go must not run for an unsupported version")

    monkeypatch.setattr(binaries.subprocess, "run", no_go)
    with pytest.raises(BuildError) as info:
        build("v1.36.3")
    message = str(info.value)
    assert "v1.36.3" in message
    assert f"pins k8s.io/kubernetes {VERSION}" in message
    assert "tools/k8s/go.mod" in message
    assert "HARDWAY_BIN_DIR" in message and "--bin-dir" in message
    assert not cache_dir("v1.36.3").exists()


def test_unknown_binary_raises(empty_cache) -> None:
    with pytest.raises(BuildError, match="unknown binaries"):
        build(VERSION, only=["kube-dns"])


def test_cli_rejects_unsupported_version(empty_cache) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hardway.binaries", "--version", "v1.35.4"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 1
    assert "HARDWAY_BIN_DIR" in proc.stderr and VERSION in proc.stderr


FAKE_GO = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    log = os.environ["FAKE_GO_LOG"]
    with open(log, "a") as f:
        f.write(json.dumps({{"args": sys.argv[1:], "cwd": os.getcwd(),
                            "CGO_ENABLED": os.environ.get("CGO_ENABLED"),
                            "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN"),
                            "GOFLAGS": os.environ.get("GOFLAGS")}}) + "\\n")
    if sys.argv[1] == "list":
        print(json.dumps({{"Path": "k8s.io/kubernetes", "Time": "2026-10-27T12:01:04Z"}}))
        sys.exit(0)
    if sys.argv[1:3] == ["mod", "download"]:
        modules = json.loads(os.environ.get("FAKE_GO_MODULES", "{{}}"))
        wanted = sys.argv[-1]
        path, _, version = wanted.partition("@")
        if wanted not in modules:
            print(json.dumps({{"Path": path, "Version": version, "Error": "fake go: unknown module"}}))
            sys.exit(1)
        print(json.dumps({{"Path": path, "Version": version, **modules[wanted]}}))
        sys.exit(0)
    pkg = sys.argv[-1]
    if os.environ.get("FAKE_GO_FAIL") and pkg.endswith(os.environ["FAKE_GO_FAIL"]):
        for i in range(100):
            print(f"compile noise line {{i}}")
        print("link: out of cheese")
        sys.exit(2)
    out = sys.argv[sys.argv.index("-o") + 1]
    with open(out, "w") as f:
        f.write("#!/bin/sh\\necho fake " + pkg + "\\n")
    """
)


@pytest.fixture
def fake_go(tmp_path, monkeypatch, empty_cache) -> Path:
    """A stand-in `go` first on PATH that records its calls in a log."""
    gobin = tmp_path / "gobin"
    _make_exe(gobin / "go", FAKE_GO.format(python=sys.executable))
    log = tmp_path / "go.log"
    monkeypatch.setenv("PATH", f"{gobin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GO_LOG", str(log))
    monkeypatch.delenv("GOTOOLCHAIN", raising=False)
    monkeypatch.setenv("GOFLAGS", "-mod=vendor")
    return log


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_build_only_missing_with_progress_and_flags(fake_go) -> None:
    already = _make_exe(cache_dir(VERSION) / "kubectl")
    seen: list[tuple[str, int, int]] = []
    result = build(VERSION, only=["kubectl", "etcd", "kube-apiserver"],
                   progress=lambda *a: seen.append(a))
    assert seen == [("etcd", 1, 2), ("kube-apiserver", 2, 2)]
    assert result == {n: cache_dir(VERSION) / n for n in ("kubectl", "etcd", "kube-apiserver")}
    assert result["kubectl"] == already
    for path in result.values():
        assert path.stat().st_mode & stat.S_IXUSR
    assert sorted(p.name for p in cache_dir(VERSION).iterdir()) == ["etcd", "kube-apiserver", "kubectl"]

    builds = [c for c in _calls(fake_go) if c["args"][0] == "build"]
    assert [c["args"][-1] for c in builds] == ["go.etcd.io/etcd/server/v3", "k8s.io/kubernetes/cmd/kube-apiserver"]
    for call in builds:
        args = call["args"]
        assert Path(call["cwd"]) == REPO / "tools" / "k8s"
        assert call["CGO_ENABLED"] == "0"
        assert call["GOTOOLCHAIN"] == "local"
        assert call["GOFLAGS"] == ""
        assert "-trimpath" in args and "-mod=readonly" in args
        ldflags = args[args.index("-ldflags") + 1]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            assert f"-X {pkg}.gitVersion={VERSION}" in ldflags
            assert f"-X {pkg}.gitMajor=1" in ldflags
            assert f"-X {pkg}.gitMinor={VERSION.split('.')[1]}" in ldflags
            assert f"-X {pkg}.gitTreeState=clean" in ldflags
            assert f"-X {pkg}.buildDate=2026-10-27T12:01:04Z" in ldflags
        # Built under a temporary name, then renamed into place.
        out = Path(args[args.index("-o") + 1])
        assert out.parent == cache_dir(VERSION) and out.name.startswith(".")

    # Everything present now: a second build runs no go at all.
    before = len(_calls(fake_go))
    build(VERSION, only=["kubectl", "etcd", "kube-apiserver"], progress=lambda *a: seen.append(a))
    assert len(_calls(fake_go)) == before and len(seen) == 2


def test_build_honours_gotoolchain(fake_go, monkeypatch) -> None:
    monkeypatch.setenv("GOTOOLCHAIN", "go1.27.3")
    build(VERSION, only=["etcdctl"])
    assert {c["GOTOOLCHAIN"] for c in _calls(fake_go)} == {"go1.27.3"}


def test_build_failure_raises_with_last_output_lines(fake_go, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_GO_FAIL", "cmd/kubelet")
    with pytest.raises(BuildError) as info:
        build(VERSION, only=["kubectl", "kubelet", "kube-proxy"])
    message = str(info.value)
    assert "link: out of cheese" in message
    assert "compile noise line 99" in message
    assert "compile noise line 0\n" not in message  # only the tail
    # kubectl was finished and kept; nothing partial of kubelet is left; kube-proxy was not tried.
    assert sorted(p.name for p in cache_dir(VERSION).iterdir()) == ["kubectl"]


# --- the worker's pins (tools/worker-modules.toml) -----------------------------------------


def test_worker_pins_match_the_versions_table() -> None:
    """The lab runs what the bundles' INSTALL.md names: a bump of one without the other fails."""
    table = yaml.safe_load((REPO / "units" / "versions.yaml").read_text())
    minor = ".".join(VERSION.removeprefix("v").split(".")[:2])
    assert PINS.kubernetes_minor == minor
    row = table[minor]
    assert row["source"] == f"k8s.io/kubernetes {VERSION}"
    pinned = {m.versions_key: m.version.removeprefix("v") for m in PINS.modules}
    assert pinned == {k: str(row[k]) for k in ("containerd", "runc", "cni_plugins", "crictl", "coredns")}
    assert PINS.pause.version == str(row["pause"])


def test_pause_is_pinned_to_the_tools_module_kubernetes() -> None:
    assert (PINS.pause.module, PINS.pause.module_version) == ("k8s.io/kubernetes", VERSION)
    gosum = (REPO / "tools" / "k8s" / "go.sum").read_text()
    assert f"k8s.io/kubernetes {VERSION} {PINS.pause.sum}\n" in gosum


def test_worker_pins_describe_every_worker_binary() -> None:
    named = [b.name for m in PINS.modules for b in m.binaries] + ["pause", "busybox"]
    assert sorted(named) == sorted(WORKER_NAMES)
    assert set(WORKER_NAMES) == set(WORKER_BINARIES) | set(CNI_NAMES)
    for m in PINS.modules:
        assert re.fullmatch(r"h1:[A-Za-z0-9+/]{43}=", m.sum), m
        assert re.fullmatch(r"v\d+\.\d+\.\d+", m.version), m
        if m.cgo:
            assert m.needs, f"{m.path} uses cgo: say which Debian packages it needs"


def _pins_copy(tmp_path: Path, monkeypatch, replace: dict[str, str]) -> Path:
    """A copy of tools/worker-modules.toml with text replaced, used by build() instead of the real one."""
    text = binaries.worker_pins_file().read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    fake = tmp_path / "worker-modules.toml"
    fake.write_text(text)
    monkeypatch.setattr(binaries, "worker_pins_file", lambda: fake)
    return fake


def test_wrong_pinned_sum_is_refused_by_the_real_go(empty_cache, tmp_path, monkeypatch, prerequisite) -> None:
    """No network: GOPROXY=off, the module comes from the module cache."""
    m = _module("sigs.k8s.io/cri-tools")
    go = shutil.which("go") or "/usr/local/go/bin/go"
    monkeypatch.setenv("GOPROXY", "off")
    probe = subprocess.run([go, "mod", "download", "-json", f"{m.path}@{m.version}"], cwd=tmp_path,
                           env={**os.environ, "GOFLAGS": "-mod=mod", "GOWORK": "off"},
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        prerequisite(f"{m.path}@{m.version} in the Go module cache", f"go mod download {m.path}@{m.version}")
    wrong = "h1:" + "A" * 43 + "="
    fake = _pins_copy(tmp_path, monkeypatch, {m.sum: wrong})
    with pytest.raises(BuildError) as info:
        build(VERSION, only=["crictl"])
    message = str(info.value)
    assert f"{m.path}@{m.version}" in message and "refusing to build" in message
    assert f"hash is {m.sum}" in message and f"pins {wrong}" in message and str(fake) in message
    assert not (cache_dir(VERSION) / "crictl").exists()
    assert [p.name for p in cache_dir(VERSION).iterdir()] == []  # no temporary file left either


@pytest.fixture
def fake_modules(fake_go, tmp_path, monkeypatch) -> dict:
    """Every worker module served by the fake go from one small directory, pinned at its real hash."""
    moddir = tmp_path / "module"
    (moddir / "cmd").mkdir(parents=True)
    (moddir / "go.mod").write_text("module example.invalid/fake\n")
    (moddir / "cmd" / "main.go").write_text("package main\nfunc main() {}\n")
    served, replace = {}, {}
    for m in PINS.modules:
        h1 = module_dir_hash(moddir, f"{m.path}@{m.version}")
        served[f"{m.path}@{m.version}"] = {"Dir": str(moddir), "Sum": h1}
        replace[f'sum = "{m.sum}"'] = f'sum = "{h1}"'
    _pins_copy(tmp_path, monkeypatch, replace)
    monkeypatch.setenv("FAKE_GO_MODULES", json.dumps(served))
    return {"dir": moddir, "served": served}


def test_worker_build_runs_go_inside_the_module_with_its_flags(fake_go, fake_modules) -> None:
    seen: list[tuple[str, int, int]] = []
    result = build(VERSION, only=["crictl", "cni/bridge", "containerd-shim-runc-v2", "cni/portmap"],
                   progress=lambda *a: seen.append(a))
    assert [s[0] for s in seen] == ["crictl", "cni/bridge", "containerd-shim-runc-v2", "cni/portmap"]
    assert result["cni/bridge"] == cni_dir(VERSION) / "bridge"
    assert sorted(p.name for p in cni_dir(VERSION).iterdir()) == ["bridge", "portmap"]
    assert sorted(p.name for p in cache_dir(VERSION).iterdir()) == ["cni", "containerd-shim-runc-v2", "crictl"]

    calls = _calls(fake_go)
    downloads = [c for c in calls if c["args"][:2] == ["mod", "download"]]
    # One download per module, outside any module (not in the repository), with -mod=mod.
    assert [c["args"][-1] for c in downloads] == [
        "sigs.k8s.io/cri-tools@" + _module("sigs.k8s.io/cri-tools").version,
        "github.com/containernetworking/plugins@" + _module("github.com/containernetworking/plugins").version,
        "github.com/containerd/containerd/v2@" + _module("github.com/containerd/containerd/v2").version,
    ]
    for call in downloads:
        assert call["GOFLAGS"] == "-mod=mod"
        assert not Path(call["cwd"]).resolve().is_relative_to(REPO)
    builds = {c["args"][-1]: c for c in calls if c["args"][0] == "build"}
    assert set(builds) == {"./cmd/crictl", "./plugins/main/bridge", "./cmd/containerd-shim-runc-v2",
                           "./plugins/meta/portmap"}
    for pkg, call in builds.items():
        args = call["args"]
        assert Path(call["cwd"]) == fake_modules["dir"]  # inside the module: its own go.mod and go.sum
        assert call["CGO_ENABLED"] == "0" and call["GOFLAGS"] == "" and call["GOTOOLCHAIN"] == "local"
        assert {"-mod=readonly", "-trimpath", "-buildvcs=false"} <= set(args)
        out = Path(args[args.index("-o") + 1])
        assert is_temp_name(out.name)
    crictl = builds["./cmd/crictl"]["args"]
    m = _module("sigs.k8s.io/cri-tools")
    assert f"-X sigs.k8s.io/cri-tools/pkg/version.Version={m.version}" in crictl[crictl.index("-ldflags") + 1]
    bridge = builds["./plugins/main/bridge"]["args"]
    assert Path(bridge[bridge.index("-o") + 1]).parent == cni_dir(VERSION)
    plugins = _module("github.com/containernetworking/plugins")
    assert (f"-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion={plugins.version}"
            in bridge[bridge.index("-ldflags") + 1])
    shim = builds["./cmd/containerd-shim-runc-v2"]["args"]
    tags = shim[shim.index("-tags") + 1].split(",")
    assert {"urfave_cli_no_docs", "no_btrfs", "no_grpc"} <= set(tags)
    ldflags = shim[shim.index("-ldflags") + 1]
    sum_ = fake_modules["served"][f"github.com/containerd/containerd/v2@{_module('github.com/containerd/containerd/v2').version}"]["Sum"]
    assert "-X github.com/containerd/containerd/v2/version.Version=v2.1.4" in ldflags
    assert f"-X github.com/containerd/containerd/v2/version.Revision={sum_}" in ldflags


def test_worker_build_refuses_a_sum_go_did_not_report(fake_go, fake_modules, monkeypatch) -> None:
    m = _module("sigs.k8s.io/cri-tools")
    key = f"{m.path}@{m.version}"
    served = dict(fake_modules["served"])
    pinned = served[key]["Sum"]
    served[key] = {**served[key], "Sum": "h1:" + "B" * 43 + "="}
    monkeypatch.setenv("FAKE_GO_MODULES", json.dumps(served))
    with pytest.raises(BuildError, match=rf"hash is h1:B+=, but .* pins {re.escape(pinned)}; refusing to build"):
        build(VERSION, only=["crictl"])
    assert not [c for c in _calls(fake_go) if c["args"][0] == "build"]
    assert not (cache_dir(VERSION) / "crictl").exists()


def test_worker_build_refuses_a_modified_module_directory(fake_go, fake_modules) -> None:
    (fake_modules["dir"] / "cmd" / "main.go").write_text("package main\nfunc main() { println(1) }\n")
    with pytest.raises(BuildError, match=r"module cache was modified; refusing to build"):
        build(VERSION, only=["cni/loopback"])
    assert not [c for c in _calls(fake_go) if c["args"][0] == "build"]
    assert not cni_dir(VERSION).exists() or not any(cni_dir(VERSION).iterdir())


def test_worker_build_failure_names_the_binary_and_keeps_the_tail(fake_go, fake_modules, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_GO_FAIL", "cmd/ctr")
    with pytest.raises(BuildError) as info:
        build(VERSION, only=["ctr"])
    message = str(info.value)
    assert message.startswith("building ctr from github.com/containerd/containerd/v2@")
    assert "link: out of cheese" in message and "compile noise line 0\n" not in message
    assert not (cache_dir(VERSION) / "ctr").exists()
    assert [p.name for p in cache_dir(VERSION).iterdir()] == []


def test_missing_busybox_names_the_debian_package(empty_cache, tmp_path, monkeypatch) -> None:
    _pins_copy(tmp_path, monkeypatch, {'path = "/bin/busybox"': f'path = "{tmp_path}/no/busybox"'})
    with pytest.raises(BuildError, match=r"busybox-static.*missing: apt-get install -y busybox-static"):
        build(VERSION, only=["busybox"])


def test_find_worker_binaries_and_cni_plugins(empty_cache, tmp_path, monkeypatch) -> None:
    assert find_worker_binaries(VERSION) == {} and find_cni_plugins(VERSION) == {}
    cached = {n: _make_exe(cache_dir(VERSION) / n) for n in ("containerd", "runc", "pause")}
    cached_cni = {p: _make_exe(cni_dir(VERSION) / p) for p in ("bridge", "loopback")}
    official = tmp_path / "official"
    own_runc = _make_exe(official / "runc")
    own_bridge = _make_exe(official / "cni" / "bridge")
    _make_exe(official / "bridge")  # a plugin must be in <dir>/cni/, not <dir>/
    assert find_worker_binaries(VERSION) == cached
    assert find_cni_plugins(VERSION) == cached_cni
    assert find_worker_binaries(VERSION, bin_dir=official) == {**cached, "runc": own_runc}
    monkeypatch.setenv("HARDWAY_BIN_DIR", str(official))
    assert find_cni_plugins(VERSION) == {**cached_cni, "bridge": own_bridge}
    # The worker's binaries never show up among the Kubernetes ones (the lab treats those as kube-*).
    assert find_binaries(VERSION) == {}


def test_cli_builds_nothing_when_the_worker_binaries_are_cached(empty_cache) -> None:
    for name in WORKER_NAMES:
        _make_exe(cache_dir(VERSION) / name)
    proc = subprocess.run(
        [sys.executable, "-m", "hardway.binaries", "--only", "worker"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PATH": "/nonexistent"},  # no go, gcc or busybox: nothing may run
    )
    assert proc.returncode == 0, proc.stderr
    for name in WORKER_NAMES:
        assert f"{name}: already built ({cache_dir(VERSION) / name})" in proc.stdout
    assert f"{len(WORKER_NAMES)} binaries in {cache_dir(VERSION)}" in proc.stdout


def test_cli_rejects_unknown_names(empty_cache) -> None:
    proc = subprocess.run([sys.executable, "-m", "hardway.binaries", "--only", "cni/flannel"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr


def test_stale_temporaries_of_killed_builds_are_removed(fake_go) -> None:
    cache_dir(VERSION).mkdir(parents=True)
    dead = cache_dir(VERSION) / ".hardway-kubectl.999999999-0a1b2c3d.tmp"  # above any pid_max: no such process
    alive = cache_dir(VERSION) / f".hardway-kubectl.{os.getppid()}-0a1b2c3d.tmp"  # a live build's: left alone
    other = cache_dir(VERSION) / ".hardway-etcd.999999999-0a1b2c3d.tmp"  # not the binary being built now
    legacy = cache_dir(VERSION) / ".kubectl.tmp-999999999"  # the name before fsutil's
    for leftover in (dead, alive, other, legacy):
        leftover.write_text("partial")
    build(VERSION, only=["kubectl"])
    assert not dead.exists() and not legacy.exists() and alive.exists() and other.exists()
    assert (cache_dir(VERSION) / "kubectl").is_file()
