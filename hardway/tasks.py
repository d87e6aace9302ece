"""The task surface: `inv <task>` in a checkout, `hardway <task>` anywhere.

Each task parses its flags, loads the spec, calls one function of the package and prints. The task
class (hardway.tasklib) turns a HardwayError into a message and an exit code; shared defaults come
from the collection's configuration. Nothing else belongs here.
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Exit

from . import resources
from .errors import HardwayError
from .lab.tasks import collection as lab_collection
from .tasklib import DEFAULT_SPEC, DEFAULTS, OUT_HELP, SPEC_HELP, load, out_dir, task

# Start-up: every module that does the work (the spec, the PKI, rendering, rich's console) is imported
# inside the task that needs it, so `hardway --help`, `--version` and `--list` start fast.


def _example_names() -> list[str]:
    try:
        return resources.example_names()
    except HardwayError:
        return []


@task(help={"example": "which example to start from: " + ", ".join(_example_names()),
            "spec": "where to write it (default: ./cluster.yaml)",
            "force": "overwrite an existing file"})
def init(c, example="kthw", spec=None, force=False):
    """Write a starter cluster.yaml from one of the built-in examples."""
    names = resources.example_names()
    if example not in names:
        raise Exit(f"error: no example {example!r}; choose one of {', '.join(names)}", code=2)
    target = Path(spec or c.config.get("spec") or DEFAULT_SPEC)
    if target.is_dir():
        raise Exit(f"error: {target} is a directory; give --spec a file name", code=1)
    if target.exists() and not force:
        raise Exit(f"error: {target} exists; pass --force to overwrite it", code=1)
    try:
        target.write_bytes(resources.example_path(example).read_bytes())
    except OSError as e:
        raise Exit(f"error: cannot write {target}: {e.strerror or e}", code=1) from None
    from .output import console
    validate_hint = "hardway validate" + ("" if target == Path(DEFAULT_SPEC) else f" --spec {target}")
    console.print(f"wrote {target} from the {example} example; edit it, then `{validate_hint}`", markup=False)


@task(help={"spec": SPEC_HELP})
def validate(c, spec=None):
    """Check the cluster spec and print what it describes. Writes nothing."""
    from .summary import print_summary
    print_summary(load(c, spec))


@task
def schema(c):
    """Print the JSON Schema of cluster.yaml (the shape of the spec) for editors; `validate` checks the values too."""
    from .schema import schema_text
    print(schema_text(), end="")


@task(help={"spec": SPEC_HELP, "out": OUT_HELP, "json": "print the plan as JSON (also on an error)",
            "detailed-exitcode": "exit 0 when nothing would change, 1 on an error, 2 when changes are pending"})
def plan(c, spec=None, out=None, json=False, detailed_exitcode=False):
    """Show what `pki` and `bundle` would create, keep, change or remove, and why. Writes nothing."""
    from .commands import FAILED, reported, run_plan
    root = out_dir(c, out)
    return reported(lambda: run_plan(load(c, spec, root), root, as_json=json, detailed=detailed_exitcode),
                    as_json=json, error_code=FAILED if detailed_exitcode else None)


@task(help={"spec": SPEC_HELP, "out": OUT_HELP,
            "import-ca": "adopt an existing CA: NAME=CERT,KEY with NAME one of ca, etcd-ca, front-proxy-ca (repeatable)",
            "new-secret": "make a new service-account pair or encryption key on purpose, even in a store in use: "
                          "service-account or encryption (repeatable; see docs/pki.md for what it breaks)",
            "retire-old-encryption": "drop the encryption keys kept only to read Secrets written before a provider "
                                     "change or key rotation (once every Secret is re-encrypted)",
            "rename-cluster": "let a store recorded under another cluster name take the spec's name (the same "
                              "cluster renamed; a separate cluster needs its own --out)"},
      iterable=["import_ca", "new_secret"])
def pki(c, spec=None, out=None, import_ca=None, new_secret=None, retire_old_encryption=False, rename_cluster=False):
    """Create or reconcile the PKI store (<out>/pki): CAs, every certificate and key, the secrets."""
    from .commands import run_pki
    root = out_dir(c, out)
    return run_pki(load(c, spec, root), root, import_ca=list(import_ca or []), new_secret=list(new_secret or []),
                   retire_old_encryption=retire_old_encryption, rename_cluster=rename_cluster)


@task(help={"spec": SPEC_HELP, "out": OUT_HELP})
def kubeconfigs(c, spec=None, out=None):
    """Write one kubeconfig per identity to <out>/kubeconfigs (runs `pki` first)."""
    from .commands import run_kubeconfigs
    root = out_dir(c, out)
    return run_kubeconfigs(load(c, spec, root), root)


@task(help={"spec": SPEC_HELP, "out": OUT_HELP})
def units(c, spec=None, out=None):
    """Render every node's units and configs into <out>/nodes/<node>/ for review (runs `pki` first)."""
    from .commands import run_units
    root = out_dir(c, out)
    return run_units(load(c, spec, root), root)


@task(default=True, help={"spec": SPEC_HELP, "out": OUT_HELP})
def bundle(c, spec=None, out=None):
    """Everything: reconcile the PKI, render, and write one bundle per node to <out>/bundles/."""
    from .commands import run_bundle
    root = out_dir(c, out)
    return run_bundle(load(c, spec, root), root)


@task(help={"spec": SPEC_HELP, "out": OUT_HELP,
            "dir": "where to write the inventory and playbook (default: <out>/ansible)"})
def ansible(c, spec=None, out=None, dir=None):
    """Write an Ansible inventory and playbook that deploy the bundles like `deploy` (runs `bundle` first; docs/ansible.md)."""
    from .deploy.ansible import run_ansible
    root = out_dir(c, out)
    return run_ansible(load(c, spec, root), root, dir)


@task(help={"spec": SPEC_HELP, "out": OUT_HELP, "json": "print the result as JSON"})
def check(c, spec=None, out=None, json=False):
    """Verify the PKI store and the bundles: chains, keys, subjects, expiry, checksums, least privilege."""
    from .commands import reported, run_check
    root = out_dir(c, out)
    return reported(lambda: run_check(load(c, spec, root), root, as_json=json), as_json=json)


@task(help={"spec": SPEC_HELP, "out": OUT_HELP,
            "kubeconfig": "the kubeconfig to merge into (default: the first file of $KUBECONFIG, else ~/.kube/config; "
                          "created 0600 when missing)",
            "set-current": "also make the cluster's context the current one"})
def credentials(c, spec=None, out=None, kubeconfig=None, set_current=False):
    """Merge the cluster's admin credentials into your kubeconfig, as a context named after the cluster (run `pki` first).

    Other clusters, users and contexts stay as they are; a re-run (after `renew`) updates the entries in place."""
    from .commands import run_credentials
    root = out_dir(c, out)
    return run_credentials(load(c, spec, root), root, kubeconfig, set_current)


@task(help={"spec": SPEC_HELP, "out": OUT_HELP,
            "entry": "renew only this catalog entry (e.g. kube-apiserver)",
            "node": "renew only this node's certificates",
            "rotate-keys": "issue new keys too (default: keep each key)"})
def renew(c, spec=None, out=None, entry=None, node=None, rotate_keys=False):
    """Re-issue leaf certificates with the same identity. CAs are reported, never renewed."""
    from .commands import run_renew
    root = out_dir(c, out)
    return run_renew(load(c, spec, root), root, entry=entry, node=node, rotate_keys=rotate_keys)


@task(help={"spec": SPEC_HELP, "out": OUT_HELP,
            "only": "deploy only this node (repeatable)",
            "role": "deploy only the nodes of this role: loadbalancer, controller or worker",
            "start": "run install.sh --start (the default); --no-start installs only, and skips the wait for /readyz "
                     "and the manifests",
            "dry-run": "connect and say per node what would happen; change nothing",
            "parallel": "how many workers at once (default 10); load balancers and controllers all go at once",
            "accept-new": "accept (and add to known_hosts) a node's host key never seen before: weaker than pinning "
                          "it in the spec or checking it into known_hosts; a changed key is always refused",
            "known-hosts": "the known_hosts file for nodes without pinned keys (default ~/.ssh/known_hosts)",
            "remote-root": "install under this directory on each node instead of / ({node}: the node's name), for "
                           "staging and the lab; implies --no-start",
            "manifests": "wait for /readyz and apply the workstation manifests even with --no-start (the API was "
                         "started some other way)",
            "timeout": "seconds to wait for the API's /readyz (default 300)",
            "kubectl": "the kubectl that applies the manifests (default: kubectl on PATH)"},
      iterable=["only"])
def deploy(c, spec=None, out=None, only=None, role=None, start=True, dry_run=False, parallel=10, accept_new=False,
           known_hosts=None, remote_root=None, manifests=False, timeout=300, kubectl="kubectl"):
    """Put each node's bundle on it over SSH and run its install.sh, in bring-up order (docs/deploy.md)."""
    from .commands import run_deploy
    root = out_dir(c, out)
    return run_deploy(load(c, spec, root), root, only=list(only or []), role=role, start=start, dry_run=dry_run,
                      parallel=int(parallel), accept_new=accept_new, known_hosts=known_hosts, remote_root=remote_root,
                      manifests=manifests, timeout=float(timeout), kubectl=kubectl)


@task(help={"out": OUT_HELP, "pki": "also delete the PKI store (CA keys, service-account and encryption keys)",
            "yes": "confirm --pki without asking"})
def clean(c, out=None, pki=False, yes=False):
    """Remove generated output (<out>/bundles, kubeconfigs, nodes, ansible). The PKI store is kept unless --pki --yes: it holds the cluster's CAs."""
    from .commands import run_clean
    run_clean(out_dir(c, out), pki=pki, yes=yes)


ns = Collection(init, validate, schema, plan, pki, kubeconfigs, units, bundle, check, credentials, renew, clean, deploy)
ns.add_task(ansible)  # docs/ansible.md
ns.add_collection(lab_collection, name="lab")  # the lab.* tasks: docs/lab.md
ns.configure(DEFAULTS)
