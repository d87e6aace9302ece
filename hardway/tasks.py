"""The task surface: `inv <task>` in a checkout, `hardway <task>` anywhere.

Each task parses its flags, loads the spec, calls one function of the package and turns a
HardwayError into a message and an exit code. Nothing else belongs here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from invoke import Collection, Exit, task
from rich.markup import escape

from . import resources, spec
from .errors import HardwayError
from .output import console, err_console

SPEC_HELP = "cluster spec to read (default: ./cluster.yaml, else the built-in kthw example)"
OUT_HELP = "output directory (default: ./out); the PKI store is <out>/pki"
DEFAULT_SPEC = "cluster.yaml"
DEFAULT_OUT = "out"
# What the stages write under <out>; `clean` removes these and nothing else, so a mistaken
# `--out .` cannot take the user's own files with it. The PKI store is removed only on request.
GENERATED = ("bundles", "kubeconfigs", "nodes")
PKI_STORE = "pki"


def _example_names() -> list[str]:
    try:
        return resources.example_names()
    except HardwayError:
        return []


def _spec_path(spec_arg: str | None) -> Path:
    if spec_arg:
        return Path(spec_arg)
    if Path(DEFAULT_SPEC).exists():
        return Path(DEFAULT_SPEC)
    builtin = resources.example_path("kthw")
    err_console.print(f"[dim]no ./{DEFAULT_SPEC} here: using the built-in example kthw ({escape(str(builtin))})[/]")
    return builtin


def _load(spec_arg: str | None) -> spec.Cluster:
    cluster = spec.load(_spec_path(spec_arg))
    for w in cluster.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}")
    return cluster


def _fail(e: HardwayError) -> Exit:
    return Exit(f"error: {e}" if "\n" not in str(e) else f"error:\n{e}", code=e.exit_code)


def _run(fn, *args, **kwargs) -> None:
    """Call a stage; a HardwayError becomes a message and a non-zero exit, never a traceback. So does,
    as a last resort, a filesystem error no stage foresaw (a full disk, a read-only mount, EACCES)."""
    try:
        code = fn(*args, **kwargs)
    except HardwayError as e:
        raise _fail(e) from None
    except BrokenPipeError:
        raise  # the reader of our output left: the console command handles it quietly
    except OSError as e:
        where = e.filename2 or e.filename  # a rename names its target second
        raise _fail(HardwayError(f"cannot write {where}: {e.strerror or e}" if where else
                                 f"cannot write the output: {e.strerror or e}")) from None
    except KeyboardInterrupt:
        raise Exit("interrupted", code=130) from None
    if code:
        raise Exit(code=code)


@task(help={"example": "which example to start from: " + ", ".join(_example_names()),
            "spec": "where to write it (default: ./cluster.yaml)",
            "force": "overwrite an existing file"})
def init(c, example="kthw", spec=None, force=False):
    """Write a starter cluster.yaml from one of the built-in examples."""
    def run():
        names = resources.example_names()
        if example not in names:
            raise Exit(f"error: no example {example!r}; choose one of {', '.join(names)}", code=2)
        target = Path(spec or DEFAULT_SPEC)
        if target.is_dir():
            raise Exit(f"error: {target} is a directory; give --spec a file name", code=1)
        if target.exists() and not force:
            raise Exit(f"error: {target} exists; pass --force to overwrite it", code=1)
        try:
            target.write_bytes(resources.example_path(example).read_bytes())
        except OSError as e:
            raise Exit(f"error: cannot write {target}: {e.strerror or e}", code=1) from None
        validate_hint = "hardway validate" + ("" if target == Path(DEFAULT_SPEC) else f" --spec {target}")
        console.print(f"wrote {target} from the {example} example; edit it, then `{validate_hint}`", markup=False)
    _run(run)


@task(help={"spec": SPEC_HELP})
def validate(c, spec=None):
    """Check the cluster spec and print what it describes. Writes nothing."""
    def run():
        from .summary import print_summary
        print_summary(_load(spec))
    _run(run)


@task(help={"spec": SPEC_HELP, "out": OUT_HELP})
def plan(c, spec=None, out=DEFAULT_OUT):
    """Show what `pki` and `bundle` would create, keep, change or remove, and why. Writes nothing."""
    from .commands import run_plan
    _run(lambda: run_plan(_load(spec), Path(out)))


@task(help={"spec": SPEC_HELP, "out": OUT_HELP,
            "import-ca": "adopt an existing CA: NAME=CERT,KEY with NAME one of ca, etcd-ca, front-proxy-ca (repeatable)",
            "new-secret": "make a new service-account pair or encryption key on purpose, even in a store in use: "
                          "service-account or encryption (repeatable; see docs/pki.md for what it breaks)",
            "retire-old-encryption": "drop the encryption keys kept only to read Secrets written before a provider "
                                     "change or key rotation (once every Secret is re-encrypted)"},
      iterable=["import_ca", "new_secret"])
def pki(c, spec=None, out=DEFAULT_OUT, import_ca=None, new_secret=None, retire_old_encryption=False):
    """Create or reconcile the PKI store (<out>/pki): CAs, every certificate and key, the secrets."""
    from .commands import run_pki
    _run(lambda: run_pki(_load(spec), Path(out), import_ca=list(import_ca or []), new_secret=list(new_secret or []),
                         retire_old_encryption=retire_old_encryption))


@task(help={"spec": SPEC_HELP, "out": OUT_HELP})
def kubeconfigs(c, spec=None, out=DEFAULT_OUT):
    """Write one kubeconfig per identity to <out>/kubeconfigs (runs `pki` first)."""
    from .commands import run_kubeconfigs
    _run(lambda: run_kubeconfigs(_load(spec), Path(out)))


@task(help={"spec": SPEC_HELP, "out": OUT_HELP})
def units(c, spec=None, out=DEFAULT_OUT):
    """Render every node's units and configs into <out>/nodes/<node>/ for review (runs `pki` first)."""
    from .commands import run_units
    _run(lambda: run_units(_load(spec), Path(out)))


@task(default=True, help={"spec": SPEC_HELP, "out": OUT_HELP})
def bundle(c, spec=None, out=DEFAULT_OUT):
    """Everything: reconcile the PKI, render, and write one bundle per node to <out>/bundles/."""
    from .commands import run_bundle
    _run(lambda: run_bundle(_load(spec), Path(out)))


@task(help={"spec": SPEC_HELP, "out": OUT_HELP, "json": "print the result as JSON"})
def check(c, spec=None, out=DEFAULT_OUT, json=False):
    """Verify the PKI store and the bundles: chains, keys, subjects, expiry, checksums, least privilege."""
    from .commands import run_check
    _run(lambda: run_check(_load(spec), Path(out), as_json=json))


@task(help={"spec": SPEC_HELP, "out": OUT_HELP,
            "entry": "renew only this catalog entry (e.g. kube-apiserver)",
            "node": "renew only this node's certificates",
            "rotate-keys": "issue new keys too (default: keep each key)"})
def renew(c, spec=None, out=DEFAULT_OUT, entry=None, node=None, rotate_keys=False):
    """Re-issue leaf certificates with the same identity. CAs are reported, never renewed."""
    from .commands import run_renew
    _run(lambda: run_renew(_load(spec), Path(out), entry=entry, node=node, rotate_keys=rotate_keys))


@task(help={"out": OUT_HELP, "pki": "also delete the PKI store (CA keys, service-account and encryption keys)",
            "yes": "confirm --pki without asking"})
def clean(c, out=DEFAULT_OUT, pki=False, yes=False):
    """Remove generated output (<out>/bundles, kubeconfigs, nodes). The PKI store is kept unless --pki --yes: it holds the cluster's CAs."""
    root = Path(out)
    if pki and not yes:
        raise Exit(f"error: --pki deletes {root / PKI_STORE} (the CAs and the encryption key of any cluster built "
                   "from it); add --yes to confirm", code=1)
    if not root.is_dir():
        console.print(f"nothing to clean: {root} is not a directory" if root.exists() else f"nothing to clean: {root} does not exist",
                      markup=False)
        return
    removed = 0
    for name in GENERATED + ((PKI_STORE,) if pki else ()):
        child = root / name
        if child.is_symlink() or child.is_file():
            child.unlink()
        elif child.is_dir():
            shutil.rmtree(child)
        else:
            continue
        removed += 1
        console.print(f"removed {child}", markup=False)
    if not pki and (root / PKI_STORE).exists():
        console.print(f"kept {root / PKI_STORE} (the PKI store; `clean --pki --yes` removes it)", markup=False)
    others = sorted(p.name for p in root.iterdir() if p.name not in GENERATED + (PKI_STORE,))
    if others:
        console.print(f"[dim]left alone in {escape(str(root))}: {escape(', '.join(others))} "
                      f"(clean removes only {', '.join(GENERATED)}, and {PKI_STORE} with --pki --yes)[/]")
    if not removed:
        console.print(f"nothing to clean in {root}", markup=False)


ns = Collection(init, validate, plan, pki, kubeconfigs, units, bundle, check, renew, clean)

from .lab.tasks import collection as lab_collection  # noqa: E402  (the lab.* tasks: docs/lab.md)

ns.add_collection(lab_collection, name="lab")

