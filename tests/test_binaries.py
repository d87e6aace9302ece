"""Tests of hardway.binaries: locating and building the real Kubernetes and etcd binaries.

The tests marked ``slow`` run the real binaries from the build cache. When they are missing
they are skipped with the command that builds them, except under CI=true, where they are
built (about 18 minutes cold on 2 cores, see docs/binaries.md).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hardway import binaries
from hardway.binaries import BINARIES, BuildError, build, cache_dir, find_binaries, pinned_version

REPO = Path(__file__).resolve().parent.parent
VERSION = pinned_version()
BUILD_COMMAND = "python -m hardway.binaries"
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


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    """The binaries of the pinned version in the build cache; built under CI=true."""
    bin_dir = cache_dir(VERSION)
    missing = [n for n in BINARIES if not os.access(bin_dir / n, os.X_OK)]
    if missing and os.environ.get("CI") != "true":
        pytest.skip(
            f"{', '.join(missing)} not built in {bin_dir}; build them with `{BUILD_COMMAND}` "
            "(about 18 minutes cold, see docs/binaries.md)"
        )

    def progress(name: str, index: int, total: int) -> None:
        print(f"[{index}/{total}] building {name} {VERSION}", file=sys.stderr, flush=True)

    return build(VERSION, progress=progress)


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
        assert not str(path.resolve()).startswith(str(REPO)), "binaries must not land in the repository"


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
