"""`hardway ansible`: an Ansible inventory and playbook that do what `hardway deploy` does, for fleets
already managed by Ansible (docs/ansible.md). hardway never imports Ansible; it writes files for it.

- `inventory` (pure): one host per node, named after the node, grouped by role (loadbalancer,
  controller, worker) under a parent group `hardway` that holds the cluster's values; each host's
  connection from the same resolver as deploy (targets.py), mapped to Ansible's `ansible_*`
  variables, and the sha256 of the archive hardway wrote for it.
- `known_hosts` (pure): the host keys pinned in the spec, in OpenSSH's format; a node with pinned
  keys is checked against those only, any other node against the user's known_hosts, and always
  strictly (StrictHostKeyChecking=yes; Ansible's host_key_checking=False cannot loosen it).
- The playbook and its node steps are static files (units/ansible/): every per-cluster value is in
  the inventory.
- `write` (the edge): the bundles first (the same stage as `hardway bundle`), deploy's checks of
  them (`hardway check`), then the files above, written atomically with a record beside the
  directory, like every output directory.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from ..bundle.archive import SUFFIX
from ..spec import Cluster
from .plan import manifests_digest
from .targets import Target, targets

DEFAULT_DIR = "ansible"  # under <out>; `hardway clean` removes it (commands.GENERATED)
INVENTORY, PLAYBOOK, NODE_TASKS, KNOWN_HOSTS = "inventory.yml", "playbook.yml", "hardway-node.yml", "known_hosts"
FILES = (INVENTORY, PLAYBOOK, NODE_TASKS, KNOWN_HOSTS)
GROUPS = ("loadbalancer", "controller", "worker")  # Ansible groups: the spec's roles
PARENT = "hardway"  # the group holding every node and the cluster's values
MANIFESTS = "manifests/"  # in the workstation bundle: applied with super-admin once /readyz answers
# Templated by Ansible: wherever the files are. Quoted for ssh, which splits UserKnownHostsFile at spaces and
# expands % tokens in it.
_KNOWN_HOSTS_REF = '"{{ inventory_dir | replace(\'%\', \'%%\') }}/' + KNOWN_HOSTS + '"'


class Unsafe(str):
    """A spec value Ansible must take as text, never as a template (YAML tag `!unsafe`): a spec value
    holding `{{ lookup('pipe', ...) }}` would otherwise run a command on this machine. Only values
    with a `{` get the tag, so the usual inventory stays plain."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Unsafe, lambda d, v: d.represent_scalar("!unsafe", str(v), style="'" if "{" in v else None))


def text(value: str) -> str:
    """A value from the spec, as the inventory holds it."""
    return Unsafe(value) if "{" in value else value


def ssh_args(t: Target) -> str:
    """ansible_ssh_common_args: strict host keys, pinned ones only when the spec pins some, the jump."""
    args = ["-o", "StrictHostKeyChecking=yes"]
    if t.host_keys:
        args += ["-o", f"UserKnownHostsFile={_KNOWN_HOSTS_REF}", "-o", "GlobalKnownHostsFile=/dev/null"]
    if t.jump:
        args += ["-o", f"ProxyJump={t.jump}"]
    return " ".join(shlex.quote(a) for a in args)


def host_vars(t: Target, digest: str) -> dict:
    out: dict = {"ansible_host": text(t.host), "ansible_port": t.port, "ansible_user": text(t.user)}
    if t.identity:
        out["ansible_ssh_private_key_file"] = text(t.identity)
    out["ansible_ssh_common_args"] = ssh_args(t)
    out["ansible_host_key_checking"] = True
    if t.user != "root":
        out["ansible_become"] = True  # install.sh installs into / as root: sudo, as deploy's `sudo -n`
    out["hardway_bundle_sha256"] = digest
    return out


def inventory(cluster: Cluster, digests: dict[str, str], bundles_dir: str, manifests: list[tuple[str, bytes]]) -> dict:
    """The inventory as data. `digests`: node (and "workstation") -> sha256 of its archive;
    `bundles_dir`: the bundles directory relative to the inventory's; `manifests`: the workstation
    bundle's manifests (path, bytes), in the order its README applies them."""
    ts = targets(cluster)
    groups = {g: {"hosts": {t.node: None for t in ts if g in t.roles}} for g in GROUPS}
    return {"all": {
        "hosts": {t.node: host_vars(t, digests[t.node]) for t in ts},
        "children": {PARENT: {
            "vars": {
                "hardway_cluster": text(cluster.name),
                "hardway_api_url": text(cluster.api_url),
                "hardway_bundles_dir": "{{ inventory_dir }}/" + bundles_dir,
                "hardway_workstation_sha256": digests["workstation"],
                "hardway_manifests": [path for path, _ in manifests],
                "hardway_manifests_sha256": manifests_digest(manifests),  # deploy's record of them
            },
            "children": groups,  # every role, even an empty one: the playbook names each
        }},
    }}


def known_hosts(cluster: Cluster) -> str:
    lines = ["# host keys pinned in the spec (nodes[].ssh.hostKeys), written by `hardway ansible`; the inventory",
             "# points the nodes that have some here (UserKnownHostsFile), the others use your known_hosts"]
    for t in targets(cluster):
        lines += [f"{t.known_hosts_name} {k}" for k in t.host_keys]
    return "\n".join(lines) + "\n"


def _yaml(data: dict, title: str) -> bytes:
    return (f"# {title}\n" + yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                                       width=120)).encode()


def files(cluster: Cluster, digests: dict[str, str], bundles_dir: str, manifests: list[tuple[str, bytes]],
          units: Path) -> list[tuple[str, bytes]]:
    """Every file `hardway ansible` writes, name and bytes, in a fixed order (pure but for reading
    the two static files of units/ansible/)."""
    inv = _yaml(inventory(cluster, digests, bundles_dir, manifests),
                f"cluster {cluster.name}: written by `hardway ansible` from the spec and the bundles; "
                "run `ansible-playbook -i inventory.yml playbook.yml` (docs/ansible.md)")
    return [(INVENTORY, inv), (PLAYBOOK, (units / PLAYBOOK).read_bytes()),
            (NODE_TASKS, (units / NODE_TASKS).read_bytes()), (KNOWN_HOSTS, known_hosts(cluster).encode())]


# ---------------------------------------------------------------- the edge -----------------------

def archive_digest(path: Path) -> str:
    """sha256 of an archive hardway wrote (never read through a link)."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def workstation_manifests(archive: Path) -> list[tuple[str, bytes]]:
    """The manifests of the workstation bundle: (path relative to its folder, bytes), in path order,
    the order its README (and `kubectl apply -f manifests/`) applies them."""
    found = []
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            parts = PurePosixPath(m.name).parts
            if m.isfile() and len(parts) > 2 and parts[1] == MANIFESTS.rstrip("/"):
                found.append((str(PurePosixPath(*parts[1:])), tar.extractfile(m).read()))
    return sorted(found)


def relative_dir(target: Path, start: Path) -> str:
    """`target` as seen from `start`, both made absolute (the inventory refers to the bundles this way,
    so moving the whole output directory keeps it right, and any --out writes the same bytes)."""
    return Path(os.path.relpath(target.absolute(), start.absolute())).as_posix()


def _not_hardways_own(directory: Path, out: Path) -> None:
    """--dir may not be the output directory itself, nor one of the other stages' directories (or
    inside one): their records and clean-ups would mix with this one's."""
    from .. import pipeline
    from ..errors import HardwayError
    where = directory.resolve()
    if where == out.resolve():
        raise HardwayError(f"--dir {directory} is the output directory itself; give the Ansible files a directory "
                           f"of their own (the default is {out / DEFAULT_DIR})")
    for stage in (pipeline.PKI, pipeline.BUNDLES, pipeline.KUBECONFIGS, pipeline.NODES):
        own = (out / stage).resolve()
        if where == own or where.is_relative_to(own):
            raise HardwayError(f"--dir {directory} is inside {out / stage}, which hardway"
                               f" writes; give the Ansible files a directory of their own (the default is {out / DEFAULT_DIR})")


@dataclass(frozen=True)
class AnsibleWritten:
    directory: Path
    run: object  # the bundle.BundleRun of the bundle stage before
    written: list[str]
    unchanged: list[str]  # same bytes: not rewritten, mtime kept


def write(cluster: Cluster, out: Path, directory: Path | None = None, *, progress=None, on_pki=None) -> AnsibleWritten:
    """The bundles (`hardway bundle`'s stage: a no-op when they are current), then the inventory,
    playbook and known_hosts in `directory` (default <out>/ansible); a file whose bytes are
    unchanged is not rewritten."""
    from .. import pipeline
    from ..errors import check_directory_path
    from ..fsutil import record_beside, write_batch, write_record
    from ..plan import WORKSTATION
    from ..resources import data_dir
    directory = Path(directory) if directory is not None else out / DEFAULT_DIR
    check_directory_path(directory, "the Ansible directory", "choose another --dir")
    _not_hardways_own(directory, out)
    kwargs = {k: v for k, v in (("progress", progress), ("on_pki", on_pki)) if v is not None}
    run = pipeline.bundle(cluster, out, **kwargs)
    from ..errors import HardwayError
    from .run import check_local
    try:
        check_local(cluster, out)  # what the playbook copies is what `hardway check` passes, as with deploy
    except HardwayError as e:
        raise HardwayError(str(e).replace("nothing deployed", "no inventory written")) from None
    digests = {n: archive_digest(run.bundles / f"{n}{SUFFIX}") for n in [x.name for x in cluster.nodes] + [WORKSTATION]}
    manifests = workstation_manifests(run.bundles / f"{WORKSTATION}{SUFFIX}")
    bundles_dir = relative_dir(run.bundles, directory)
    if "{" in bundles_dir:  # the inventory's path to the bundles is a template (inventory_dir): no braces in it
        raise HardwayError(f"the path from {directory} to {run.bundles} ({bundles_dir}) holds a '{{', which Ansible "
                           "would read as a template; choose --dir and --out without braces")
    wanted = files(cluster, digests, bundles_dir, manifests, data_dir("units") / "ansible")
    directory.mkdir(parents=True, exist_ok=True)
    changed, unchanged = [], []
    for name, data in wanted:
        path = directory / name
        try:
            same = not path.is_symlink() and path.read_bytes() == data
        except OSError:
            same = False
        (unchanged if same else changed).append(name)
    write_batch(directory, [(directory / name, data, 0o644) for name, data in wanted if name in changed])
    write_record(record_beside(directory), [name for name, _ in wanted])
    return AnsibleWritten(directory, run, changed, unchanged)


def run_ansible(cluster: Cluster, out: Path, directory: str | None) -> int:
    """The task's body: write, then say what was written and the command to run."""
    from ..commands import print_bundle_run, print_pki_step
    from ..output import console, progress
    done = write(cluster, out, Path(directory) if directory else None, progress=progress,
                 on_pki=lambda r: print_pki_step(r, out))
    print_bundle_run(done.run)
    console.print(f"ansible: {len(done.written)} file(s) written to {done.directory}, {len(done.unchanged)} unchanged "
                  f"({', '.join(FILES)})", markup=False)
    inv, book = shlex.quote(str(done.directory / INVENTORY)), shlex.quote(str(done.directory / PLAYBOOK))
    console.print(f"next: `ansible-playbook -i {inv} {book}` (docs/ansible.md)", markup=False)
    return 0
