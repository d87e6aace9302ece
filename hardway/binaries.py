"""Locate or build the real Kubernetes, etcd and worker binaries.

The Kubernetes and etcd binaries are compiled from Go modules pinned in
``tools/k8s/go.mod``; what a worker runs (containerd, runc, the CNI plugins,
crictl, CoreDNS, pause, busybox) is pinned in ``tools/worker-modules.toml``
(see docs/binaries.md). Everything is built into a cache outside the
repository, ``$HARDWAY_CACHE/<version>/bin`` (default
``~/.cache/hardway/<version>/bin``; the CNI plugins in its ``cni/``
subdirectory), one binary at a time and only when missing. A user who already
has the official release binaries can point ``HARDWAY_BIN_DIR`` (or
``--bin-dir``) at them instead.

Run ``python -m hardway.binaries`` to build everything.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .fsutil import dead_temp_files, process_gone, temp_path

__all__ = [
    "ALL_BINARIES",
    "BINARIES",
    "BuildError",
    "CNI_PLUGINS",
    "WORKER_BINARIES",
    "build",
    "cache_dir",
    "cni_dir",
    "component_version",
    "find_binaries",
    "find_cni_plugins",
    "find_worker_binaries",
    "module_dir_hash",
    "pinned_version",
    "tools_dir",
    "worker_pins",
    "worker_pins_file",
]

BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
    "etcd",
    "etcdctl",
)

# What a worker runs besides kubelet and kube-proxy, pinned in tools/worker-modules.toml. Kept out
# of BINARIES: callers of find_binaries() treat every name there as a Kubernetes-style program.
WORKER_BINARIES = (
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "runc",
    "crictl",
    "coredns",
    "pause",
    "busybox",
)

# The CNI plugins, built into cache_dir(version) / "cni" under their own names (the directory is
# usable as containerd's CNI bin_dirs as it is). In build()'s names they are "cni/<plugin>".
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
_CNI_SUBDIR = "cni"

# Every name build() knows, in build order.
ALL_BINARIES = BINARIES + WORKER_BINARIES + tuple(f"{_CNI_SUBDIR}/{p}" for p in CNI_PLUGINS)

# Groups the command line accepts for --only.
_GROUPS = {
    "kubernetes": BINARIES,
    "worker": WORKER_BINARIES + tuple(f"{_CNI_SUBDIR}/{p}" for p in CNI_PLUGINS),
    "cni": tuple(f"{_CNI_SUBDIR}/{p}" for p in CNI_PLUGINS),
}

# Binary name -> Go main package (all resolved in tools/k8s/go.mod).
PACKAGES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "etcd": "go.etcd.io/etcd/server/v3",
    "etcdctl": "go.etcd.io/etcd/etcdctl/v3",
}

# Packages whose version variables are stamped at link time, exactly as
# Kubernetes' own hack/lib/version.sh does.
_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")

_MODULE = "k8s.io/kubernetes"
_ENV_CACHE = "HARDWAY_CACHE"
_ENV_BIN_DIR = "HARDWAY_BIN_DIR"
_TAIL_LINES = 40

ProgressFn = Callable[[str, int, int], None]


class BuildError(RuntimeError):
    """Building (or choosing a version to build) failed."""


def tools_dir() -> Path:
    """The Go module that pins what is built (``tools/k8s`` in the repository)."""
    return Path(__file__).resolve().parent.parent / "tools" / "k8s"


def pinned_version() -> str:
    """The k8s.io/kubernetes version required by ``tools/k8s/go.mod``."""
    gomod = tools_dir() / "go.mod"
    try:
        text = gomod.read_text(encoding="utf-8")
    except OSError as exc:
        raise BuildError(
            f"cannot read {gomod} ({exc.strerror}): building needs a checkout of the hardway "
            "repository; otherwise point HARDWAY_BIN_DIR (or --bin-dir) at official release binaries"
        ) from exc
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\S+)", text, re.M)
    if not match:
        raise BuildError(f"{gomod} does not require {_MODULE}")
    return match.group(1)


def cache_dir(version: str) -> Path:
    """``$HARDWAY_CACHE/<version>/bin``, by default ``~/.cache/hardway/<version>/bin``."""
    root = os.environ.get(_ENV_CACHE)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "hardway"
    return base / version / "bin"


def cni_dir(version: str) -> Path:
    """Where the CNI plugins are built: ``cache_dir(version) / "cni"`` (a ready CNI bin dir)."""
    return cache_dir(version) / _CNI_SUBDIR


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _search_dirs(version: str, bin_dir: str | os.PathLike[str] | None) -> list[Path]:
    dirs: list[Path] = []
    if bin_dir:
        dirs.append(Path(bin_dir).expanduser())
    env_dir = os.environ.get(_ENV_BIN_DIR)
    if env_dir:
        dirs.append(Path(env_dir).expanduser())
    dirs.append(cache_dir(version))
    return dirs


def _find(names: Iterable[str], dirs: list[Path], subdir: str = "") -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name in names:
        for d in dirs:
            candidate = (d / subdir / name) if subdir else d / name
            if _executable(candidate):
                found[name] = candidate.absolute()
                break
    return found


def find_binaries(version: str, bin_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Resolve each binary, looking in order at ``bin_dir``, ``$HARDWAY_BIN_DIR``
    and the build cache for ``version``; the first executable found wins, so a
    directory holding only the official Kubernetes binaries can be completed by
    etcd from the cache. Missing binaries are absent from the result.

    Only the Kubernetes and etcd binaries (``BINARIES``); the worker's are
    ``find_worker_binaries`` and ``find_cni_plugins``."""
    return _find(BINARIES, _search_dirs(version, bin_dir))


def find_worker_binaries(version: str, bin_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Like ``find_binaries``, for ``WORKER_BINARIES`` (containerd, ctr,
    containerd-shim-runc-v2, runc, crictl, coredns, pause, busybox): name -> path,
    missing ones absent."""
    return _find(WORKER_BINARIES, _search_dirs(version, bin_dir))


def find_cni_plugins(version: str, bin_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """The CNI plugins (``CNI_PLUGINS``: bridge, host-local, loopback, portmap):
    plugin name -> path, looking for ``<dir>/cni/<plugin>`` in ``bin_dir``,
    ``$HARDWAY_BIN_DIR`` and the build cache, in that order; missing ones absent."""
    return _find(CNI_PLUGINS, _search_dirs(version, bin_dir), _CNI_SUBDIR)


def _go_command() -> str:
    go = shutil.which("go")
    if go:
        return go
    fallback = Path("/usr/local/go/bin/go")
    if _executable(fallback):
        return str(fallback)
    raise BuildError("the Go toolchain ('go') is not on PATH; install Go >= 1.26 (see docs/binaries.md)")


def _go_env(cgo: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "1" if cgo else "0"
    # The tools module states its minimum Go; never download a toolchain
    # unless the caller asked for one (GOTOOLCHAIN=go1.27.3 for example).
    env.setdefault("GOTOOLCHAIN", "local")
    env["GOWORK"] = "off"
    env["GOFLAGS"] = ""  # ignore the caller's -mod=vendor and the like
    return env


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise BuildError(f"cannot run {args[0]}: {exc}") from exc
    if proc.returncode != 0:
        command = " ".join([Path(args[0]).name, *args[1:3]])
        raise BuildError(f"`{command} ...` failed (exit {proc.returncode}) in {cwd}:\n{_tail(proc.stdout)}")
    return proc.stdout


def _run_go(args: list[str], env: dict[str, str]) -> str:
    return _run(args, env, tools_dir())


def _build_date(go: str, env: dict[str, str]) -> str:
    """The module proxy's timestamp of the pinned release: fixed, so builds are
    reproducible, and meaningful."""
    out = _run_go([go, "list", "-mod=readonly", "-m", "-json", _MODULE], env)
    info = json.loads(out)
    return info.get("Time") or "1970-01-01T00:00:00Z"


def _ldflags(version: str, build_date: str) -> str:
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+.*", version)
    if not match:
        raise BuildError(f"cannot parse Kubernetes version {version!r}")
    major, minor = match.group(1), match.group(2)
    flags = ["-s", "-w"]
    for pkg in _VERSION_PACKAGES:
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={build_date}",
        ]
    return " ".join(flags)


def _check_version(version: str) -> None:
    pinned = pinned_version()
    if version != pinned:
        raise BuildError(
            f"cannot build Kubernetes {version}: the tools module {tools_dir() / 'go.mod'} pins "
            f"{_MODULE} {pinned}, and only that version can be built. Use --version {pinned}, or "
            f"download the official {version} release binaries and point HARDWAY_BIN_DIR "
            f"(or --bin-dir) at the directory holding them."
        )


# --- the worker's binaries: tools/worker-modules.toml --------------------------------------


@dataclass(frozen=True)
class GoBinary:
    name: str  # below cache_dir(version): "containerd", "cni/bridge"
    package: str  # relative to the module directory: "./cmd/containerd", "."
    extra_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class GoModule:
    path: str
    version: str
    sum: str
    versions_key: str  # its key in units/versions.yaml
    cgo: bool
    tags: tuple[str, ...]
    ldflags: tuple[str, ...]
    binaries: tuple[GoBinary, ...]
    buildmode: str = ""
    pkg_config: tuple[str, ...] = ()
    needs: str = ""

    def ldflags_for(self) -> str:
        values = {"version": self.version, "release": self.version.removeprefix("v"), "sum": self.sum}
        return " ".join(flag.format(**values) for flag in self.ldflags)


@dataclass(frozen=True)
class PausePin:
    module: str
    module_version: str
    sum: str
    version: str
    source: str
    cflags: tuple[str, ...]
    needs: str


@dataclass(frozen=True)
class BusyboxPin:
    path: str
    debian_package: str
    applets: tuple[str, ...]


@dataclass(frozen=True)
class WorkerPins:
    kubernetes_minor: str
    modules: tuple[GoModule, ...]
    pause: PausePin
    busybox: BusyboxPin

    def go_binary(self, name: str) -> tuple[GoModule, GoBinary] | None:
        for module in self.modules:
            for binary in module.binaries:
                if binary.name == name:
                    return module, binary
        return None


def worker_pins_file() -> Path:
    """``tools/worker-modules.toml`` in the repository."""
    return tools_dir().parent / "worker-modules.toml"


def worker_pins() -> WorkerPins:
    """The parsed ``tools/worker-modules.toml``; ``BuildError`` when missing or malformed."""
    path = worker_pins_file()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BuildError(
            f"cannot read {path} ({exc.strerror}): building needs a checkout of the hardway "
            "repository; otherwise point HARDWAY_BIN_DIR (or --bin-dir) at official release binaries"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{path}: {exc}") from exc
    try:
        modules = tuple(
            GoModule(
                path=m["path"], version=m["version"], sum=m["sum"], versions_key=m["versions_key"],
                cgo=bool(m["cgo"]), tags=tuple(m["tags"]), ldflags=tuple(m["ldflags"]),
                binaries=tuple(GoBinary(b["name"], b["package"], tuple(b.get("extra_tags", ())))
                               for b in m["binaries"]),
                buildmode=m.get("buildmode", ""), pkg_config=tuple(m.get("pkg_config", ())),
                needs=m.get("needs", ""),
            )
            for m in data["module"]
        )
        p = data["pause"]
        pause = PausePin(module=p["module"], module_version=p["module_version"], sum=p["sum"],
                         version=p["version"], source=p["source"], cflags=tuple(p["cflags"]),
                         needs=p.get("needs", ""))
        b = data["busybox"]
        busybox = BusyboxPin(path=b["path"], debian_package=b["debian_package"], applets=tuple(b["applets"]))
        pins = WorkerPins(kubernetes_minor=data["kubernetes_minor"], modules=modules, pause=pause, busybox=busybox)
    except (KeyError, TypeError) as exc:
        raise BuildError(f"{path}: malformed, missing or wrong {exc}") from exc
    named = [b.name for m in pins.modules for b in m.binaries] + ["pause", "busybox"]
    expected = [n for n in ALL_BINARIES if n not in BINARIES]
    if sorted(named) != sorted(expected):
        raise BuildError(f"{path} describes {sorted(named)}; hardway.binaries expects {sorted(expected)}")
    return pins


def _etcd_version() -> str:
    text = (tools_dir() / "go.mod").read_text(encoding="utf-8")
    match = re.search(r"^\s*go\.etcd\.io/etcd/server/v3\s+(v\S+)", text, re.M)
    return match.group(1) if match else "?"


def component_version(name: str, version: str | None = None) -> str:
    """The version of what ``name`` is built from, for messages: the Kubernetes
    version for its binaries, etcd's, the Go module's (``v2.1.4``), pause's
    (``3.10.2``), or where busybox comes from."""
    if name in ("etcd", "etcdctl"):
        return _etcd_version()
    if name in PACKAGES:
        return version or pinned_version()
    pins = worker_pins()
    if name == "pause":
        return pins.pause.version
    if name == "busybox":
        return f"(Debian {pins.busybox.debian_package})"
    found = pins.go_binary(name)
    if found is None:
        raise BuildError(f"unknown binary {name!r}; known: {', '.join(ALL_BINARIES)}")
    return found[0].version


def module_dir_hash(directory: Path, prefix: str) -> str:
    """Go's ``dirhash.Hash1`` of a module directory (``prefix`` is ``module@version``):
    the ``h1:`` hash go.sum and ``go mod download -json`` report for the module zip."""
    files: list[tuple[str, Path]] = []
    for root, _dirs, names in os.walk(directory):
        for n in names:
            full = Path(root) / n
            files.append((f"{prefix}/{full.relative_to(directory).as_posix()}", full))
    files.sort()
    summary = hashlib.sha256()
    for name, full in files:
        summary.update(f"{hashlib.sha256(full.read_bytes()).hexdigest()}  {name}\n".encode())
    return "h1:" + base64.b64encode(summary.digest()).decode()


def _download_module(go: str, path: str, version: str, pinned_sum: str) -> Path:
    """``go mod download -json path@version`` outside any module; refuses a module
    whose hash, or whose directory's content, is not ``pinned_sum``. Returns its directory."""
    env = _go_env()
    env["GOFLAGS"] = "-mod=mod"
    with tempfile.TemporaryDirectory(prefix="hardway-mod-") as tmp:
        try:
            proc = subprocess.run([go, "mod", "download", "-json", f"{path}@{version}"], cwd=tmp, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
        except OSError as exc:
            raise BuildError(f"cannot run {go}: {exc}") from exc
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = {}
    if proc.returncode != 0 or info.get("Error") or not info.get("Dir"):
        detail = info.get("Error") or _tail(proc.stdout + proc.stderr)
        raise BuildError(f"`go mod download {path}@{version}` failed (exit {proc.returncode}):\n{detail}")
    got = info.get("Sum")
    if got != pinned_sum:
        raise BuildError(
            f"{path}@{version}: the downloaded module's hash is {got}, but {worker_pins_file()} pins "
            f"{pinned_sum}; refusing to build. If you changed the pin, take the hash from "
            f"`go mod download -json {path}@{version}` (Go checks it against sum.golang.org)."
        )
    directory = Path(info["Dir"])
    try:
        actual = module_dir_hash(directory, f"{path}@{version}")
    except OSError as exc:
        raise BuildError(f"cannot read {path}@{version} in {directory}: {exc}") from exc
    if actual != pinned_sum:
        raise BuildError(
            f"{directory}: its files hash to {actual}, not the pinned {pinned_sum} of {path}@{version}; "
            f"the module cache was modified; refusing to build (`go clean -modcache` and retry)."
        )
    return directory


def _need_tool(tool: str, why: str, how: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise BuildError(f"{why} needs `{tool}`, which is not on PATH: {how}")
    return found


def _build_go_binary(go: str, module: GoModule, binary: GoBinary, moddir: Path, out: Path) -> None:
    if module.cgo:
        _need_tool("gcc", f"{binary.name} (cgo)", module.needs or "apt-get install -y gcc libc6-dev")
    for lib in module.pkg_config:
        pkg_config = _need_tool("pkg-config", binary.name, module.needs or "apt-get install -y pkg-config")
        if subprocess.run([pkg_config, "--exists", lib], check=False).returncode != 0:
            raise BuildError(f"{binary.name} links against {lib}, which pkg-config does not find: {module.needs}")
    tags = module.tags + binary.extra_tags
    args = [go, "build", "-mod=readonly", "-trimpath", "-buildvcs=false"]
    if module.buildmode:
        args.append(f"-buildmode={module.buildmode}")
    if tags:
        args += ["-tags", ",".join(tags)]
    args += ["-ldflags", module.ldflags_for(), "-o", str(out), binary.package]
    try:
        _run(args, _go_env(cgo=module.cgo), moddir)
    except BuildError as exc:
        raise BuildError(f"building {binary.name} from {module.path}@{module.version}: {exc}") from None


def _build_pause(go: str, pin: PausePin, version: str, out: Path) -> None:
    if pin.module_version != version:
        raise BuildError(
            f"{worker_pins_file()} builds pause from {pin.module} {pin.module_version}, but "
            f"{tools_dir() / 'go.mod'} pins {version}; make them agree"
        )
    gcc = _need_tool("gcc", "pause", pin.needs)
    strip = _need_tool("strip", "pause", pin.needs)
    moddir = _download_module(go, pin.module, pin.module_version, pin.sum)
    source = moddir / pin.source
    makefile = source.parent.parent / "Makefile"
    try:
        tag = re.search(r"^TAG \?= (\S+)", makefile.read_text(encoding="utf-8"), re.M)
    except OSError as exc:
        raise BuildError(f"cannot read {makefile}: {exc}") from exc
    if not tag or tag.group(1) != pin.version:
        raise BuildError(
            f"{makefile} builds pause {tag.group(1) if tag else '(no TAG)'}, but {worker_pins_file()} "
            f"pins pause {pin.version}"
        )
    cflags = [flag.format(version=pin.version) for flag in pin.cflags]
    env = dict(os.environ, LC_ALL="C")
    try:
        _run([gcc, *cflags, "-o", str(out), source.relative_to(makefile.parent).as_posix()], env, makefile.parent)
        _run([strip, str(out)], env, makefile.parent)
    except BuildError as exc:
        raise BuildError(f"building pause from {pin.module}@{pin.module_version}: {exc}") from None


def _copy_busybox(pin: BusyboxPin, out: Path) -> None:
    source = Path(pin.path)
    how = f"apt-get install -y {pin.debian_package}"
    if not _executable(source):
        raise BuildError(f"busybox comes from Debian's {pin.debian_package}, and {source} is missing: {how}")
    listed = _run([str(source), "--list"], dict(os.environ), Path("/"))
    absent = [a for a in pin.applets if a not in listed.split()]
    if absent:
        raise BuildError(f"{source} lacks the applets {', '.join(absent)}; {how} (the static build has them)")
    shutil.copyfile(source, out)


def build(
    version: str,
    *,
    only: Iterable[str] | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Path]:
    """Build the binaries missing from ``cache_dir(version)`` and return the
    path of every requested one (all of ``BINARIES`` unless ``only`` is given;
    ``only`` may name anything in ``ALL_BINARIES``, the CNI plugins as
    ``cni/<plugin>``).

    Each binary is built by its own ``go build`` (``gcc`` for pause, a copy for
    busybox) into a temporary name next to its place in the cache and renamed
    into place, so a cached binary is always complete. ``progress(name, index,
    total)`` is called before each build (index counts from 1 over the binaries
    actually built). Raises ``BuildError`` on any failure."""
    names = list(BINARIES) if only is None else list(dict.fromkeys(only))
    unknown = [n for n in names if n not in ALL_BINARIES]
    if unknown:
        raise BuildError(f"unknown binaries {unknown}; known: {', '.join(ALL_BINARIES)}")
    _check_version(version)

    out_dir = cache_dir(version)
    result = {n: out_dir / n for n in names if _executable(out_dir / n)}
    missing = [n for n in names if n not in result]
    if not missing:
        return {n: result[n] for n in names}

    pins: WorkerPins | None = None
    if any(n not in PACKAGES for n in missing):
        pins = worker_pins()
        minor = ".".join(version.removeprefix("v").split(".")[:2])
        if pins.kubernetes_minor != minor:
            raise BuildError(
                f"{worker_pins_file()} pins the worker binaries of Kubernetes {pins.kubernetes_minor}, "
                f"but {tools_dir() / 'go.mod'} pins {version}; move both pins together"
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create cache directory {out_dir}: {exc}") from exc
    go = _go_command() if any(n != "busybox" for n in missing) else ""
    kube_ldflags = ""
    moddirs: dict[str, Path] = {}
    for index, name in enumerate(missing, start=1):
        if progress is not None:
            progress(name, index, len(missing))
        target = out_dir / name
        try:
            target.parent.mkdir(exist_ok=True)
        except OSError as exc:
            raise BuildError(f"cannot create {target.parent}: {exc}") from exc
        tmp = temp_path(target)
        try:
            _remove_stale_temporaries(target)
            if name in PACKAGES:
                if not kube_ldflags:
                    kube_ldflags = _ldflags(version, _build_date(go, _go_env()))
                _run_go(
                    [go, "build", "-mod=readonly", "-trimpath", "-buildvcs=false",
                     "-ldflags", kube_ldflags, "-o", str(tmp), PACKAGES[name]],
                    _go_env(),
                )
            elif name == "pause":
                assert pins is not None
                _build_pause(go, pins.pause, version, tmp)
            elif name == "busybox":
                assert pins is not None
                _copy_busybox(pins.busybox, tmp)
            else:
                assert pins is not None
                found = pins.go_binary(name)
                assert found is not None  # worker_pins() checked the names
                module, binary = found
                if module.path not in moddirs:
                    moddirs[module.path] = _download_module(go, module.path, module.version, module.sum)
                _build_go_binary(go, module, binary, moddirs[module.path], tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
        except OSError as exc:
            raise BuildError(f"cannot write {target}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        result[name] = target
    return {n: result[n] for n in names}


def _remove_stale_temporaries(target: Path) -> None:
    """A build killed between writing and renaming leaves a temp file beside `target`; remove those
    whose process is gone (a live one may be another build's). `.<name>.tmp-<pid>` is the name
    hardway used before fsutil's."""
    legacy = [p for p in target.parent.glob(f".{target.name}.tmp-*") if process_gone(p.name.rpartition("-")[2])]
    for leftover in dead_temp_files(target) + legacy:
        leftover.unlink(missing_ok=True)


def _expand(only: Iterable[str]) -> list[str]:
    names: list[str] = []
    for item in only:
        names += list(_GROUPS.get(item, (item,)))
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hardway.binaries",
        description="Build the Kubernetes and etcd binaries pinned in tools/k8s/go.mod and the worker's "
                    "binaries pinned in tools/worker-modules.toml into the cache.",
    )
    parser.add_argument("--version", default=None, help="Kubernetes version (default: the pinned one)")
    parser.add_argument("--only", action="append", choices=[*ALL_BINARIES, *_GROUPS], metavar="NAME",
                        help="build only this binary, or a group: kubernetes, worker, cni (repeatable); "
                             f"names: {', '.join(ALL_BINARIES)}")
    args = parser.parse_args(argv)
    try:
        version = args.version or pinned_version()
        names = _expand(args.only) if args.only else list(ALL_BINARIES)
        present = {n for n in names if _executable(cache_dir(version) / n)}
        for name in names:
            if name in present:
                print(f"{name}: already built ({cache_dir(version) / name})", flush=True)
        started: dict[str, float] = {}
        last: list[str] = []

        def report(name: str, index: int, total: int) -> None:
            now = time.monotonic()
            if last:
                print(f"  done in {now - started[last[0]]:.1f}s", flush=True)
            last[:] = [name]
            started[name] = now
            print(f"[{index}/{total}] building {name} {component_version(name, version)} ...", flush=True)

        t0 = time.monotonic()
        paths = build(version, only=names, progress=report)
        if last:
            print(f"  done in {time.monotonic() - started[last[0]]:.1f}s", flush=True)
        print(f"{len(paths)} binaries in {cache_dir(version)} ({time.monotonic() - t0:.1f}s)")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
