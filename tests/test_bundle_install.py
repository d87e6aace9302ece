"""The bundles' real install.sh, run by dash into a staging root (`--root`), for every node of the
kthw and ha examples: what lands, with which modes, under any umask; what it refuses (a flipped
byte, a missing or extra file, an edited SHA256SUMS) while installing nothing; --dry-run; a second
run that changes nothing. Expectations come from the node plans, not from install.sh."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from hardway import spec
from hardway.bundle import write_bundles
from hardway.bundle.archive import MTIME
from hardway.pki import reconcile
from hardway.plan import WORKSTATION
from hardway.render import iter_node_plans

from helpers import REPO  # noqa: E402
EXAMPLES = ("kthw", "ha")
NODES = [(ex, n.name) for ex in EXAMPLES for n in spec.load(REPO / "examples" / f"{ex}.yaml").nodes]


@dataclass
class Built:
    cluster: spec.Cluster
    out: Path
    plans: dict  # node -> NodePlan


_BUILT: dict[str, Built] = {}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """built(example) -> the example's PKI store and bundles, made once per module."""
    def get(example: str) -> Built:
        if example not in _BUILT:
            cluster = spec.load(REPO / "examples" / f"{example}.yaml")
            out = tmp_path_factory.mktemp(f"out-{example}")
            materials = reconcile(cluster, out / "pki").materials
            write_bundles(cluster, materials, out)
            _BUILT[example] = Built(cluster, out, {p.node: p for p in iter_node_plans(cluster, materials)})
        return _BUILT[example]
    yield get
    _BUILT.clear()


@pytest.fixture(scope="module")
def dash(prerequisite) -> str:
    path = shutil.which("dash")
    if not path:
        prerequisite("dash (a strict POSIX sh)", "apt-get install -y dash")
    for tool in ("sha256sum", "cmp", "find", "stat"):
        if not shutil.which(tool):
            prerequisite(tool, "apt-get install -y coreutils findutils diffutils")
    return path


def unpack(b: Built, node: str, into: Path) -> Path:
    """Unpack a bundle with the real tar, as an operator would; returns the bundle folder."""
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xzf", str(b.out / "bundles" / f"{node}.tar.gz"), "-C", str(into)], check=True)
    return into / node


def install(dash: str, folder: Path, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess:
    return subprocess.run([dash, str(folder / "install.sh"), *args], capture_output=True, text=True,
                          preexec_fn=lambda: os.umask(umask), timeout=120)


def tree(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """path on the node -> (mode, mtime_ns, content) of everything under a staging root."""
    found = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = "/" + str(p.relative_to(root))
        found[rel] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, p.read_bytes() if p.is_file() else None)
    return found


def ancestors(path: str) -> set[str]:
    parts = path.strip("/").split("/")
    return {"/" + "/".join(parts[:i]) for i in range(1, len(parts))}


# ---------------------------------------------------------------- installing --------------------

@pytest.mark.parametrize("umask", [0o077, 0o000], ids=["umask077", "umask000"])
@pytest.mark.parametrize("example,node", NODES)
def test_install_lands_every_planned_file_with_its_mode(built, dash, tmp_path, example, node, umask):
    b = built(example)
    plan = b.plans[node]
    folder = unpack(b, node, tmp_path / "bundle")
    root = tmp_path / "root"
    r = install(dash, folder, "--root", str(root), umask=umask)
    assert r.returncode == 0, r.stderr
    got = tree(root)
    for f in plan.files:
        assert f.path in got, f"{f.path} not installed"
        mode, _, data = got[f.path]
        assert data == f.data, f"{f.path}: content differs from the plan"
        assert mode == f.mode, f"{f.path}: mode {mode:04o}, planned {f.mode:04o}"
    for d in plan.directories:
        assert d.path in got and got[d.path][2] is None, f"directory {d.path} not created"
        assert got[d.path][0] == d.mode, f"{d.path}: mode {got[d.path][0]:04o}, planned {d.mode:04o}"
    # Nothing outside the plan: every path is a planned file or directory, or a parent of one.
    allowed = {f.path for f in plan.files} | {d.path for d in plan.directories}
    allowed |= {a for p in set(allowed) for a in ancestors(p)}
    assert set(got) <= allowed, f"not in the plan: {sorted(set(got) - allowed)}"
    assert not list(folder.rglob("*.hardway-new")) and not list(root.rglob("*.hardway-new"))


def test_workstation_bundle_is_used_in_place(built, tmp_path):
    """No install.sh: the files sit at the top of workstation/, verified by the real sha256sum."""
    b = built("ha")
    plan = b.plans[WORKSTATION]
    folder = unpack(b, WORKSTATION, tmp_path)
    assert not (folder / "install.sh").exists()
    r = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(r.stdout.splitlines()) == len(plan.files)
    for f in plan.files:
        p = folder / f.path.lstrip("/")
        assert p.read_bytes() == f.data
        assert stat.S_IMODE(p.stat().st_mode) == f.mode
    readme = (folder / "README.md").read_text()
    for node in b.cluster.nodes:  # the bring-up order names every node
        assert node.name in readme


def test_archive_members_are_owned_by_root_with_fixed_times(built):
    b = built("kthw")
    with tarfile.open(b.out / "bundles" / "server.tar.gz") as tar:
        members = tar.getmembers()
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "root" and m.gname == "root" for m in members)
    assert {m.mtime for m in members} == {MTIME}
    # the bundle's own members sorted (parents first), then the two files that list the shared files'
    # digests, then the shared files (the node table, compressed once per run: archive.Assembler)
    names = [m.name for m in members]
    shared = sorted(f"server/rootfs{f.path}" for f in b.plans["server"].files if f.shared)
    assert shared and names[-len(shared):] == shared
    assert names[-len(shared) - 2:-len(shared)] == ["server/SHA256SUMS", "server/install.sh"]
    own = names[:-len(shared) - 2]
    assert own == sorted(own, key=lambda n: n.split("/"))
    # the folder is the first member and the only directory entry (0700: it holds keys); tar makes
    # the directories below it for their files (the unpack and install tests run the real tar)
    assert [(m.name, m.mode) for m in members if m.isdir()] == [("server", 0o700)] and names[0] == "server"
    modes = {m.name: m.mode for m in members}
    for f in b.plans["server"].files:
        assert modes[f"server/rootfs{f.path}"] == f.mode


# ---------------------------------------------------------------- refusing ----------------------

TAMPER = [
    ("ha", "controller-0", "rootfs/etc/kubernetes/pki/kube-apiserver.key"),
    ("ha", "controller-0", "rootfs/etc/kubernetes/encryption-config.yaml"),
    ("ha", "controller-0", "rootfs/etc/systemd/system/etcd.service"),
    ("ha", "lb", "rootfs/etc/haproxy/haproxy.cfg"),
    ("kthw", "node-0", "rootfs/etc/kubernetes/kubelet.kubeconfig"),
    ("kthw", "node-0", "rootfs/etc/kubernetes/pki/ca.crt"),
    ("kthw", "server", "SHA256SUMS"),
]


def assert_refused(r: subprocess.CompletedProcess, root: Path) -> None:
    assert r.returncode != 0, r.stdout
    assert "nothing installed" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not root.exists() or not any(root.iterdir()), f"files were installed: {list(root.rglob('*'))[:5]}"


@pytest.mark.parametrize("example,node,member", TAMPER, ids=[f"{e}-{n}-{Path(m).name}" for e, n, m in TAMPER])
def test_a_flipped_byte_refuses_and_installs_nothing(built, dash, tmp_path, example, node, member):
    folder = unpack(built(example), node, tmp_path / "bundle")
    target = folder / member
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    root = tmp_path / "root"
    assert_refused(install(dash, folder, "--root", str(root)), root)


def test_a_missing_file_refuses(built, dash, tmp_path):
    folder = unpack(built("ha"), "node-1", tmp_path / "bundle")
    (folder / "rootfs/etc/kubernetes/kube-proxy.kubeconfig").unlink()
    root = tmp_path / "root"
    r = install(dash, folder, "--root", str(root))
    assert_refused(r, root)
    assert "missing from the bundle: rootfs/etc/kubernetes/kube-proxy.kubeconfig" in r.stderr


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_an_extra_file_refuses(built, dash, tmp_path, kind):
    folder = unpack(built("ha"), "node-1", tmp_path / "bundle")
    extra = folder / "rootfs/etc/kubernetes/pki/ca.key"
    if kind == "file":
        extra.write_text("not planned for a worker\n")
    else:
        extra.symlink_to("/etc/passwd")
    root = tmp_path / "root"
    r = install(dash, folder, "--root", str(root))
    assert_refused(r, root)
    assert "rootfs/etc/kubernetes/pki/ca.key" in r.stderr


def test_an_edited_file_with_its_checksum_updated_still_refuses(built, dash, tmp_path):
    """SHA256SUMS must be the one install.sh was generated with: editing both is caught too."""
    folder = unpack(built("ha"), "node-0", tmp_path / "bundle")
    conf = folder / "rootfs/etc/kubernetes/kubelet-config.yaml"
    conf.write_text(conf.read_text() + "# edited\n")
    r = subprocess.run(["sha256sum", "rootfs/etc/kubernetes/kubelet-config.yaml"], cwd=folder, capture_output=True,
                       text=True, check=True)
    sums = folder / "SHA256SUMS"
    lines = [r.stdout.strip() if line.endswith("kubelet-config.yaml") else line for line in sums.read_text().splitlines()]
    sums.write_text("\n".join(lines) + "\n")
    root = tmp_path / "root"
    r = install(dash, folder, "--root", str(root))
    assert_refused(r, root)
    assert "SHA256SUMS differs" in r.stderr


# ---------------------------------------------------------------- dry run, idempotency -----------

def test_dry_run_changes_nothing(built, dash, tmp_path):
    b = built("ha")
    folder = unpack(b, "controller-1", tmp_path / "bundle")
    root = tmp_path / "root"
    r = install(dash, folder, "--dry-run", "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert not root.exists()
    plan = b.plans["controller-1"]
    for f in plan.files:
        assert f"would install {f.path} (mode {f.mode:o})" in r.stdout
    # On an installed root with one file changed, it names that file only and changes nothing.
    assert install(dash, folder, "--root", str(root)).returncode == 0
    unit = root / "etc/systemd/system/etcd.service"
    unit.write_text("edited\n")
    before = tree(root)
    r = install(dash, folder, "--dry-run", "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if line.startswith("would")] == \
        ["would install /etc/systemd/system/etcd.service (mode 644)"]
    assert tree(root) == before


def test_a_second_install_changes_nothing(built, dash, tmp_path):
    folder = unpack(built("kthw"), "server", tmp_path / "bundle")
    root = tmp_path / "root"
    assert install(dash, folder, "--root", str(root)).returncode == 0
    before = tree(root)
    r = install(dash, folder, "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert "0 change(s)" in r.stdout
    assert tree(root) == before  # same modes, same mtimes, same bytes


def test_reinstall_repairs_only_what_drifted(built, dash, tmp_path):
    folder = unpack(built("kthw"), "server", tmp_path / "bundle")
    root = tmp_path / "root"
    assert install(dash, folder, "--root", str(root)).returncode == 0
    key = root / "etc/kubernetes/pki/ca.key"
    key.chmod(0o644)
    config = root / "etc/kubernetes/kube-scheduler.yaml"
    config.write_text("drifted\n")
    (root / "var/lib/etcd").chmod(0o755)
    before = tree(root)
    r = install(dash, folder, "--root", str(root))
    assert r.returncode == 0, r.stderr
    after = tree(root)
    assert after["/etc/kubernetes/pki/ca.key"][0] == 0o600
    assert after["/var/lib/etcd"][0] == 0o700
    assert after["/etc/kubernetes/kube-scheduler.yaml"][2] == (folder / "rootfs/etc/kubernetes/kube-scheduler.yaml").read_bytes()
    untouched = [p for p in before if p not in ("/etc/kubernetes/pki/ca.key", "/etc/kubernetes/kube-scheduler.yaml",
                                                 "/var/lib/etcd") and before[p][2] is not None]
    assert untouched and all(after[p][1] == before[p][1] for p in untouched)
    assert "3 change(s)" in r.stdout


# ---------------------------------------------------------------- options -----------------------

def test_help_and_bad_options(built, dash, tmp_path):
    folder = unpack(built("ha"), "lb", tmp_path / "bundle")
    r = install(dash, folder, "--help")
    assert r.returncode == 0 and "--root DIR" in r.stdout and "--dry-run" in r.stdout and "--start" in r.stdout
    r = install(dash, folder, "--frobnicate")
    assert r.returncode == 2 and "unknown argument --frobnicate" in r.stderr
    r = install(dash, folder, "--root")
    assert r.returncode != 0 and "--root needs a directory" in r.stderr


def test_start_refuses_with_root(built, dash, tmp_path):
    folder = unpack(built("ha"), "lb", tmp_path / "bundle")
    r = install(dash, folder, "--start", "--root", str(tmp_path / "root"))
    assert r.returncode != 0 and "cannot be combined with --root" in r.stderr
    assert not (tmp_path / "root").exists()


def test_start_refuses_without_systemd(built, dash, tmp_path, prerequisite):
    # In a private mount namespace with a tmpfs over /run: no /run/systemd/system, even on a host
    # that runs systemd (and the host's /etc etc. are out of reach should it not refuse).
    folder = unpack(built("ha"), "lb", tmp_path / "bundle")
    r, calls = in_namespace(f"{dash} {folder}/install.sh --start; echo rc=$?; ls -A /etc | wc -l", tmp_path,
                            prerequisite, systemd=False)
    assert "rc=1" in r.stdout and r.stdout.strip().endswith("0"), r.stdout + r.stderr  # /etc stayed empty
    assert "install.sh: preflight systemd: systemd is not the running init" in r.stderr, r.stderr
    assert "install without --start" in r.stderr
    assert [c for c in calls if not c.startswith("is-active")] == []  # only queries (the preflight's ports)
    # with the preflight skipped, the guard of --start itself still refuses
    (tmp_path / "again").mkdir()
    r, calls = in_namespace(f"{dash} {folder}/install.sh --start --skip-preflight all; echo rc=$?; ls -A /etc | wc -l",
                            tmp_path / "again", prerequisite, systemd=False)
    assert "rc=1" in r.stdout and r.stdout.strip().endswith("0"), r.stdout + r.stderr
    assert "needs systemd" in r.stderr


def test_install_sh_is_posix_sh(built, prerequisite):
    b = built("ha")
    scripts = []
    for node in ("lb", "controller-0", "node-0"):
        with tarfile.open(b.out / "bundles" / f"{node}.tar.gz") as tar:
            scripts.append(tar.extractfile(f"{node}/install.sh").read())
    for shell in ("dash", "sh"):
        for script in scripts:
            r = subprocess.run([shell, "-n"], input=script, capture_output=True)
            assert r.returncode == 0, r.stderr
    if not shutil.which("shellcheck"):
        prerequisite("shellcheck", "apt-get install -y shellcheck")
    for script in scripts:
        r = subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, capture_output=True)
        assert r.returncode == 0, r.stdout.decode()


# ---------------------------------------------------------------- --start -----------------------

# tmpfs over each: the host is never touched. /usr/sbin last (`mount` is in /usr/bin, but still).
ISOLATED = ("/run", "/etc", "/opt", "/var/lib", "/usr/local/bin", "/usr/local/sbin", "/usr/sbin")


def in_namespace(script: str, tmp_path: Path, prerequisite, systemd: bool = True) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `script` (sh) in a private mount namespace with tmpfs over ISOLATED, systemd faked: a
    /run/systemd/system directory (unless not `systemd`) and a `systemctl` on PATH that records
    its arguments."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        prerequisite("root and unshare (a private mount namespace for --start)", "sudo (util-linux provides unshare)")
    fake = tmp_path / "fakebin"
    fake.mkdir()
    log = tmp_path / "systemctl.log"
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$1" != is-active ] || echo active\n')
    (fake / "systemctl").chmod(0o755)
    mounts = " && ".join(f"mount -t tmpfs tmpfs {d}" for d in ISOLATED)
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f"{mounts} && {'mkdir -p /run/systemd/system' if systemd else ':'} && PATH={fake}:$PATH && {script}"],
                       capture_output=True, text=True, timeout=120)
    return r, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("example,node", [("ha", "lb"), ("ha", "controller-0"), ("kthw", "node-0")])
def test_start_enables_and_starts_units_in_plan_order(built, dash, tmp_path, prerequisite, example, node):
    b = built(example)
    plan = b.plans[node]
    folder = unpack(b, node, tmp_path / "bundle")
    # Fake binaries at the manifest's paths (a path ending in / is a directory of plugins).
    binaries = [x["path"] if not x["path"].endswith("/") else x["path"] + "plugin"
                for x in plan.notes.binaries]
    fake_binaries = " && ".join([f"mkdir -p {os.path.dirname(p)} && printf '#!/bin/sh\\n' > {p} && chmod 755 {p}"
                                 for p in binaries] or [":"])
    listing = " ".join(f.path for f in plan.files)
    # The preflight (this host is not the node) has its own tests: here, what --start does.
    start = f"{dash} {folder}/install.sh --start --skip-preflight all"
    r, calls = in_namespace(f"{fake_binaries} && {start} && echo --- >> {tmp_path}/systemctl.log"
                            f" && {start} && stat -c '%a %n' {listing}", tmp_path, prerequisite)
    assert r.returncode == 0, r.stdout + r.stderr
    first, second = calls[:calls.index("---")], calls[calls.index("---") + 1:]
    # Every job is queued without waiting (--no-block: an etcd member waiting for its peers must not
    # hold up the script), then each unit's state is reported.
    expect = lambda verb: (["daemon-reload"]  # noqa: E731
                           + [c for u in plan.units for c in (f"enable --quiet {u}", f"--no-block {verb} {u}")]
                           + [f"is-active {u}" for u in plan.units])
    assert first == expect("restart")  # files were installed: (re)start them
    assert second == expect("start")  # nothing changed: start is a no-op on running units
    quorum = "run install.sh --start on the other controllers now" in r.stdout
    assert quorum == (node == "controller-0"), r.stdout  # ha: 3 etcd members
    modes = dict(line.split(" ", 1)[::-1] for line in r.stdout.splitlines() if line.startswith(("6", "7")))
    assert modes == {f.path: f"{f.mode:o}" for f in plan.files}


def test_start_refuses_before_installing_when_binaries_are_missing(built, dash, tmp_path, prerequisite):
    b = built("kthw")
    folder = unpack(b, "server", tmp_path / "bundle")
    r, calls = in_namespace(f"{dash} {folder}/install.sh --start; echo rc=$?; ls -A /etc | wc -l", tmp_path, prerequisite)
    assert "rc=1" in r.stdout and r.stdout.strip().endswith("0"), r.stdout + r.stderr  # /etc stayed empty
    assert "preflight binaries: /usr/local/bin/kube-apiserver is missing" in r.stderr, r.stderr
    assert [c for c in calls if not c.startswith("is-active")] == []  # only queries (the preflight's ports)
    (tmp_path / "again").mkdir()
    r, calls = in_namespace(f"{dash} {folder}/install.sh --start --skip-preflight all; echo rc=$?; ls -A /etc | wc -l",
                            tmp_path / "again", prerequisite)
    assert "rc=1" in r.stdout and r.stdout.strip().endswith("0"), r.stdout + r.stderr
    assert "binaries missing" in r.stderr and "/usr/local/bin/kube-apiserver" in r.stderr
    assert [c for c in calls if not c.startswith("is-active")] == []  # only queries (the preflight's ports)


def test_start_on_the_load_balancer_refuses_without_haproxy(built, dash, tmp_path, prerequisite):
    # /usr/sbin is an empty tmpfs in the namespace: no haproxy, whatever the host has.
    folder = unpack(built("ha"), "lb", tmp_path / "bundle")
    r, calls = in_namespace(f"{dash} {folder}/install.sh --start; echo rc=$?; ls -A /etc | wc -l", tmp_path, prerequisite)
    assert "rc=1" in r.stdout and r.stdout.strip().endswith("0"), r.stdout + r.stderr  # /etc stayed empty
    assert "preflight binaries: /usr/sbin/haproxy is missing" in r.stderr, r.stderr
    assert [c for c in calls if not c.startswith("is-active")] == []  # only queries (the preflight's ports)


# ---------------------------------------------------------------- links and concurrent runs -----

def _worker_bundle(built, tmp_path: Path) -> tuple[Path, object]:
    b = built("kthw")
    node = b.cluster.workers[0].name
    return unpack(b, node, tmp_path / "bundle"), b.plans[node]


def test_a_file_link_out_of_the_root_is_refused(built, dash, tmp_path):
    """R/etc/crictl.yaml a link to a directory outside R: nothing lands there (it used to be moved in)."""
    folder, _ = _worker_bundle(built, tmp_path)
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    assert install(dash, folder, "--root", str(root)).returncode == 0
    (root / "etc/crictl.yaml").unlink()
    (root / "etc/crictl.yaml").symlink_to(outside)
    r = install(dash, folder, "--root", str(root))
    assert r.returncode == 1 and "leads out of" in r.stderr and "nothing installed" in r.stderr.lower(), r.stderr
    assert not list(outside.iterdir())


def test_a_linked_directory_out_of_the_root_is_refused(built, dash, tmp_path):
    folder, _ = _worker_bundle(built, tmp_path)
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / "etc").symlink_to(outside)
    r = install(dash, folder, "--root", str(root))
    assert r.returncode == 1 and "leads out of" in r.stderr, r.stderr
    assert not list(outside.iterdir()), "installed through a link out of the root"


def test_a_link_inside_the_root_is_replaced_not_written_through(built, dash, tmp_path):
    folder, plan = _worker_bundle(built, tmp_path)
    root = tmp_path / "root"
    assert install(dash, folder, "--root", str(root)).returncode == 0
    keep = root / "keep"
    keep.mkdir()
    (root / "etc/crictl.yaml").unlink()
    (root / "etc/crictl.yaml").symlink_to(keep)
    r = install(dash, folder, "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert not (root / "etc/crictl.yaml").is_symlink() and not list(keep.iterdir())


def _run_pairs(dash: str, folder: Path, plan, tmp_path: Path, pairs: int, env=None) -> None:
    wanted = {f.path: f for f in plan.files}
    for i in range(pairs):
        root = tmp_path / f"root{i}"
        procs = [subprocess.Popen([dash, str(folder / "install.sh"), "--root", str(root)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env, preexec_fn=lambda: os.umask(0))
                 for _ in range(2)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close(), p.stderr.close()
        assert all(code == 0 for code, _ in results), results
        for path, f in wanted.items():
            st = (root / path.lstrip("/")).lstat()
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == f.mode, f"pair {i}: {path} {st.st_mode:o}"
        assert not [p for p in root.rglob("*") if ".hardway-new" in p.name]


def test_two_runs_at_once_never_leave_a_wrong_mode(built, dash, tmp_path):
    folder, plan = _worker_bundle(built, tmp_path)
    _run_pairs(dash, folder, plan, tmp_path, 30)


def test_two_runs_at_once_without_flock_use_a_lock_directory(built, dash, tmp_path):
    folder, plan = _worker_bundle(built, tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sha256sum", "cmp", "find", "sort", "stat", "id", "grep", "cp", "chmod", "mv", "rm", "mkdir",
                 "rmdir", "dirname", "readlink", "cat", "sleep", "pwd"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    _run_pairs(dash, folder, plan, tmp_path, 5, env={"PATH": str(bin_dir)})
    assert not (folder / ".install.lock").exists()


# ---------------------------------------------------------------- preflight ---------------------
# Under --root the checks are skipped (the staging root is not the node); HARDWAY_PREFLIGHT_MACHINE
# points them at a directory standing in for the node's machine, and PATH at stand-ins for `ip`,
# `ss`, `date` and `systemctl`: so each check's verdict and message are exercised here, under dash.

def fake_machine(tmp_path: Path, b: Built, node: str, *, broken: frozenset[str] = frozenset(),
                 version: str | None = None) -> dict[str, str]:
    """A stand-in machine for `node` that passes every check but those in `broken`; the environment
    that points install.sh at it."""
    plan, n = b.plans[node], b.cluster.node(node)
    machine, bin_dir = tmp_path / "machine", tmp_path / "bin"
    bin_dir.mkdir(parents=True)

    def put(path: str, text: str, mode: int = 0o644) -> None:
        p = machine / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    for binary in plan.notes.binaries:
        if "binaries" in broken and binary["name"] in ("kubelet", "etcd"):
            continue  # missing
        if binary["path"].endswith("/"):
            put(binary["path"] + "bridge", "#!/bin/sh\n", 0o755)
            continue
        shown = version if version and binary["name"] in ("kubelet", "kube-apiserver") else binary["version"]
        put(binary["path"], f"#!/bin/sh\necho '{binary['name']} version {shown}'\n", 0o755)
    put("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n"
        + ("/swapfile file 1024 0 -2\n" if "swap" in broken else ""))
    put("/proc/modules", "" if "modules" in broken else "overlay 1 0 - Live 0\nbr_netfilter 1 0 - Live 0\n")
    put("/proc/sys/kernel/hostname", ("elsewhere" if "hostname" in broken else node) + "\n")
    for f in plan.files:
        if f.path.startswith("/etc/sysctl.d/"):
            for line in f.data.decode().splitlines():
                key, eq, value = line.partition("=")
                if eq and not key.startswith("#"):
                    wrong = "sysctls" in broken and key.strip() == "net.ipv4.ip_forward"
                    put("/proc/sys/" + key.strip().replace(".", "/"), ("0" if wrong else value.strip()) + "\n")
    address = "192.0.2.99" if "address" in broken else str(n.address)
    stubs = {
        "ip": f"echo '2: eth0    inet {address}/24 brd + scope global eth0'",
        "ss": "echo 'LISTEN 0 4096 0.0.0.0:10250 0.0.0.0:*'" if "ports" in broken else ":",
        "systemctl": "exit 3",  # no unit of ours is active
        "date": 'case "$*" in *+%s*) echo 1 ;; *) /bin/date "$@" ;; esac' if "clock" in broken else 'exec /bin/date "$@"',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "HARDWAY_PREFLIGHT_MACHINE": str(machine), "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def install_env(dash: str, folder: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([dash, str(folder / "install.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_preflight_is_skipped_under_root_and_says_so(built, dash, tmp_path):
    folder = unpack(built("kthw"), "node-0", tmp_path / "b")
    r = install(dash, folder, "--dry-run", "--root", str(tmp_path / "root"))
    assert r.returncode == 0, r.stderr
    assert "preflight: skipped under --root" in r.stdout


@pytest.mark.parametrize("node", ["node-0", "server"])
def test_preflight_passes_on_a_ready_machine(built, dash, tmp_path, node):
    b = built("kthw")
    folder = unpack(b, node, tmp_path / "b")
    env = fake_machine(tmp_path, b, node)
    r = install_env(dash, folder, env, "--root", str(tmp_path / "root"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "preflight: passed" in r.stdout and (tmp_path / "root" / "etc").is_dir()


PREFLIGHT_FAILURES = {  # check -> (node, what the message must say: the problem and its fix)
    "binaries": ("node-0", ["/usr/local/bin/kubelet is missing", "download it (INSTALL.md, step 2)"]),
    "swap": ("node-0", ["swap is on", "sudo swapoff -a"]),
    "modules": ("node-0", ["kernel module br_netfilter is not loaded", "sudo modprobe br_netfilter"]),
    "sysctls": ("node-0", ["net.ipv4.ip_forward is 0, the node needs 1", "sudo sysctl -w net.ipv4.ip_forward=1"]),
    "ports": ("node-0", ["port 10250 (kubelet.service) is in use", "ss -ltnp"]),
    "hostname": ("server", ["this machine is 'elsewhere', not node server", "hostnamectl set-hostname server"]),
    "address": ("server", ["no address 10.240.0.10", "correct nodes[].address"]),
    "clock": ("server", ["outside the certificates' validity", "timedatectl set-ntp true"]),
}


@pytest.mark.parametrize("check", sorted(PREFLIGHT_FAILURES))
@pytest.mark.parametrize("dry", [False, True], ids=["install", "dry-run"])
def test_each_preflight_failure_names_its_fix_and_installs_nothing(built, dash, tmp_path, check, dry):
    node, words = PREFLIGHT_FAILURES[check]
    b = built("kthw")
    folder = unpack(b, node, tmp_path / "b")
    env = fake_machine(tmp_path, b, node, broken=frozenset({check}))
    root = tmp_path / "root"
    r = install_env(dash, folder, env, *(["--dry-run"] if dry else []), "--root", str(root))
    assert r.returncode == 1, r.stdout + r.stderr
    problems = [line for line in r.stderr.splitlines() if line.startswith("install.sh: preflight ")]
    assert problems and all(line.startswith(f"install.sh: preflight {check}: ") for line in problems), r.stderr
    for w in words:
        assert w in r.stderr, r.stderr
    assert "--skip-preflight NAME" in r.stderr
    assert not root.exists(), "nothing installed"
    # the user who knows better skips it
    r = install_env(dash, folder, env, "--skip-preflight", check, "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert f"preflight: passed (skipped: {check})" in r.stdout


def test_a_binary_at_another_version_is_named(built, dash, tmp_path):
    b = built("kthw")
    folder = unpack(b, "node-0", tmp_path / "b")
    env = fake_machine(tmp_path, b, "node-0", version="v1.36.0")
    r = install_env(dash, folder, env, "--root", str(tmp_path / "root"))
    assert r.returncode == 1
    assert "/usr/local/bin/kubelet reports 'kubelet version v1.36.0', not v1.37.2" in r.stderr, r.stderr


def test_skip_preflight_refuses_an_unknown_check(built, dash, tmp_path):
    folder = unpack(built("kthw"), "node-0", tmp_path / "b")
    r = install(dash, folder, "--skip-preflight", "swapp", "--root", str(tmp_path / "root"))
    assert r.returncode == 1 and "--skip-preflight swapp: no such check" in r.stderr
    assert not (tmp_path / "root").exists()


# ---------------------------------------------------------------- fetch-binaries.sh -------------
# The bundle's fetch-binaries.sh under dash, with `curl` serving release files made here in each
# project's own checksum format (units/plan.yaml, `fetch`), `install` recording what it would put
# where, `uname -m` saying x86_64: every binary is verified before it is installed, and a file that
# does not match its published SHA-256 stops the script before anything more is installed.

def _release_files(plan, where: Path, arch: str = "amd64") -> dict[str, str]:
    """Each artifact and checksum file of the plan's binaries, by URL basename, as its project
    publishes it: a bare binary, or a tar.gz holding the members `take` names."""
    import hashlib
    import io
    where.mkdir(parents=True)
    for b in plan.notes.binaries:
        f = b.get("fetch")
        if not f:
            continue
        artifact = f["artifact"].replace("${ARCH}", arch).rsplit("/", 1)[1]
        sums = f["checksum"].replace("${ARCH}", arch).rsplit("/", 1)[1]
        take = (f.get("take") or "").replace("${ARCH}", arch)
        target = where / artifact
        if not target.exists():
            if not take:
                target.write_text(f"#!/bin/sh\necho {b['name']}\n")
            else:
                with tarfile.open(target, "w:gz") as tar:
                    names = [f"{take}containerd", f"{take}ctr"] if take.endswith("/") else \
                            ["bridge", "loopback"] if take == "." else [take]
                    # etcd's archive holds etcd and etcdctl
                    if take.endswith("/etcd") or take.endswith("/etcdctl"):
                        names = [take.rsplit("/", 1)[0] + "/etcd", take.rsplit("/", 1)[0] + "/etcdctl"]
                    for name in names:
                        data = f"#!/bin/sh\necho {name}\n".encode()
                        info = tarfile.TarInfo(name)
                        info.size, info.mode = len(data), 0o755
                        tar.addfile(info, io.BytesIO(data))
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        line = f"{digest}  {artifact}\n"
        if f.get("sums"):
            other = "0" * 64 + "  some-other-file.tar.gz\n"  # a SHA256SUMS lists other files too
            existing = (where / sums).read_text() if (where / sums).exists() else other
            if line not in existing:
                (where / sums).write_text(existing + line)
        else:
            (where / sums).write_text(digest + "\n")
    return {}


def run_fetch(dash: str, folder: Path, releases: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    stubs, log = tmp_path / "stubs", tmp_path / "install.log"
    stubs.mkdir()
    (stubs / "curl").write_text(f'#!/bin/sh\nfor a; do url=$a; done\ncp "{releases}/${{url##*/}}" .\n')
    (stubs / "install").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (stubs / "uname").write_text("#!/bin/sh\necho x86_64\n")
    # tar into a system directory (the CNI plugins) is recorded, never run here; into . it is real
    (stubs / "tar").write_text(f'#!/bin/sh\ncase " $* " in *" -C "*) echo "tar $*" >> {log} ;; '
                               f'*) exec {shutil.which("tar")} "$@" ;; esac\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}
    r = subprocess.run([dash, str(folder / "fetch-binaries.sh")], capture_output=True, text=True, env=env,
                       timeout=120)
    return r, (log.read_text().splitlines() if log.exists() else [])


@pytest.mark.parametrize("node", ["node-0", "server"])
def test_fetch_binaries_verifies_then_installs_each_binary(built, dash, tmp_path, node):
    b = built("kthw")
    plan = b.plans[node]
    folder = unpack(b, node, tmp_path / "b")
    _release_files(plan, tmp_path / "releases")
    r, installs = run_fetch(dash, folder, tmp_path / "releases", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(": OK") >= len({x["fetch"]["artifact"] for x in plan.notes.binaries if x.get("fetch")})
    targets = {line.split()[-1] for line in installs}
    for x in plan.notes.binaries:
        if not x.get("fetch"):
            continue
        path = x["path"]
        if x["fetch"].get("take") == ".":
            assert any(line.startswith("-d ") and line.endswith(path) for line in installs), installs
            assert any(line.startswith("tar -xzf ") and line.endswith(f"--no-same-owner -C {path}")
                       for line in installs), installs
        elif (x["fetch"].get("take") or "").endswith("/"):
            assert path.rsplit("/", 1)[0] + "/" in targets, installs
        else:
            assert path in targets, installs
    assert all(line.startswith(("-o root -g root -m 0755", "-d -o root -g root -m 0755", "tar "))
               for line in installs)


def test_fetch_binaries_stops_at_a_checksum_mismatch(built, dash, tmp_path):
    b = built("kthw")
    folder = unpack(b, "node-0", tmp_path / "b")
    _release_files(b.plans["node-0"], tmp_path / "releases")
    (tmp_path / "releases" / "kubelet").write_text("#!/bin/sh\necho tampered\n")
    r, installs = run_fetch(dash, folder, tmp_path / "releases", tmp_path)
    assert r.returncode != 0
    assert "kubelet: FAILED" in r.stdout + r.stderr
    assert not any(line.endswith("/usr/local/bin/kubelet") for line in installs)
    assert not any(line.endswith("/usr/local/bin/kube-proxy") for line in installs), "nothing after it"


def test_fetch_binaries_is_posix_and_shellcheck_clean(built, prerequisite):
    b = built("ha")
    for node in ("controller-0", "node-0"):
        with tarfile.open(b.out / "bundles" / f"{node}.tar.gz") as tar:
            member = tar.getmember(f"{node}/fetch-binaries.sh")
            script = tar.extractfile(member).read()
            assert member.mode == 0o755
        for shell in ("dash", "sh"):
            assert subprocess.run([shell, "-n"], input=script, capture_output=True).returncode == 0
        if not shutil.which("shellcheck"):
            prerequisite("shellcheck", "apt-get install -y shellcheck")
        r = subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, capture_output=True)
        assert r.returncode == 0, r.stdout.decode()
    with tarfile.open(b.out / "bundles" / "lb.tar.gz") as tar:  # haproxy comes from a Debian package
        assert "lb/fetch-binaries.sh" not in tar.getnames()
