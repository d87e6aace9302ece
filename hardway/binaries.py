"""Locate or build the real Kubernetes and etcd binaries.

The binaries are compiled from Go modules pinned in ``tools/k8s/go.mod`` (see
docs/binaries.md). They are built into a cache outside the repository,
``$HARDWAY_CACHE/<version>/bin`` (default ``~/.cache/hardway/<version>/bin``),
one binary at a time and only when missing. A user who already has the
official release binaries can point ``HARDWAY_BIN_DIR`` (or ``--bin-dir``) at
them instead.

Run ``python -m hardway.binaries`` to build everything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "BINARIES",
    "BuildError",
    "build",
    "cache_dir",
    "find_binaries",
    "pinned_version",
    "tools_dir",
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


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binaries(version: str, bin_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Resolve each binary, looking in order at ``bin_dir``, ``$HARDWAY_BIN_DIR``
    and the build cache for ``version``; the first executable found wins, so a
    directory holding only the official Kubernetes binaries can be completed by
    etcd from the cache. Missing binaries are absent from the result."""
    dirs: list[Path] = []
    if bin_dir:
        dirs.append(Path(bin_dir).expanduser())
    env_dir = os.environ.get(_ENV_BIN_DIR)
    if env_dir:
        dirs.append(Path(env_dir).expanduser())
    dirs.append(cache_dir(version))
    found: dict[str, Path] = {}
    for name in BINARIES:
        for d in dirs:
            candidate = d / name
            if _executable(candidate):
                found[name] = candidate.absolute()
                break
    return found


def _go_command() -> str:
    go = shutil.which("go")
    if go:
        return go
    fallback = Path("/usr/local/go/bin/go")
    if _executable(fallback):
        return str(fallback)
    raise BuildError("the Go toolchain ('go') is not on PATH; install Go >= 1.26 (see docs/binaries.md)")


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    # The tools module states its minimum Go; never download a toolchain
    # unless the caller asked for one (GOTOOLCHAIN=go1.27.3 for example).
    env.setdefault("GOTOOLCHAIN", "local")
    env["GOWORK"] = "off"
    env["GOFLAGS"] = ""  # ignore the caller's -mod=vendor and the like
    return env


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run_go(args: list[str], env: dict[str, str]) -> str:
    try:
        proc = subprocess.run(
            args,
            cwd=tools_dir(),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise BuildError(f"cannot run {args[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise BuildError(
            f"`{' '.join(args[1:3])} ...` failed (exit {proc.returncode}) in {tools_dir()}:\n{_tail(proc.stdout)}"
        )
    return proc.stdout


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


def build(
    version: str,
    *,
    only: Iterable[str] | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Path]:
    """Build the binaries missing from ``cache_dir(version)`` and return the
    path of every requested one (all of ``BINARIES`` unless ``only`` is given).

    Each binary is built by its own ``go build`` into a temporary name in the
    cache directory and renamed into place, so a cached binary is always
    complete. ``progress(name, index, total)`` is called before each build
    (index counts from 1 over the binaries actually built). Raises
    ``BuildError`` on any failure."""
    names = list(BINARIES) if only is None else list(dict.fromkeys(only))
    unknown = [n for n in names if n not in PACKAGES]
    if unknown:
        raise BuildError(f"unknown binaries {unknown}; known: {', '.join(BINARIES)}")
    _check_version(version)

    out_dir = cache_dir(version)
    result = {n: out_dir / n for n in names if _executable(out_dir / n)}
    missing = [n for n in names if n not in result]
    if not missing:
        return {n: result[n] for n in names}

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create cache directory {out_dir}: {exc}") from exc
    go = _go_command()
    env = _go_env()
    ldflags = _ldflags(version, _build_date(go, env))
    for index, name in enumerate(missing, start=1):
        if progress is not None:
            progress(name, index, len(missing))
        target = out_dir / name
        tmp = out_dir / f".{name}.tmp-{os.getpid()}"
        try:
            _run_go(
                [go, "build", "-mod=readonly", "-trimpath", "-buildvcs=false",
                 "-ldflags", ldflags, "-o", str(tmp), PACKAGES[name]],
                env,
            )
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        result[name] = target
    return {n: result[n] for n in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hardway.binaries",
        description="Build the Kubernetes and etcd binaries pinned in tools/k8s/go.mod into the cache.",
    )
    parser.add_argument("--version", default=None, help="Kubernetes version (default: the pinned one)")
    parser.add_argument("--only", action="append", choices=BINARIES, metavar="NAME",
                        help="build only this binary (repeatable)")
    args = parser.parse_args(argv)
    try:
        version = args.version or pinned_version()
        names = args.only or list(BINARIES)
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
            print(f"[{index}/{total}] building {name} {version} ...", flush=True)

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
