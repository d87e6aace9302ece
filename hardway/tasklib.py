"""What every task shares (hardway/tasks.py, hardway/lab/tasks.py): the task class, the
configuration, and loading the spec.

- `task` is Invoke's `@task` with `klass=HardwayTask`: a HardwayError, an unforeseen OSError or a
  Ctrl-C becomes a message and an exit code, never a traceback; a body that returns a non-zero
  int exits with it.
- Shared defaults live in the collection's configuration (`DEFAULTS`, set with
  `Collection.configure`). The `hardway` command reads it through `HardwayConfig` (prefix
  `hardway`), so Invoke supplies, in its documented order: these defaults, `/etc/hardway.yaml`,
  `~/.hardway.yaml`, `HARDWAY_SPEC` / `HARDWAY_OUT`, `hardway -f FILE`, then the task's flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import invoke
from invoke import Config, Exit, Task

from . import resources
from .errors import HardwayError

if TYPE_CHECKING:
    from .spec import Cluster

# Start-up: the spec (pydantic, PyYAML) and the console (rich) are imported where a task uses them,
# so `hardway --help` and `--version` do not pay for them.

SPEC_HELP = "cluster spec to read (default: ./cluster.yaml, else the built-in kthw example)"
OUT_HELP = "output directory (default: ./out); the PKI store is <out>/pki"
DEFAULT_SPEC = "cluster.yaml"
DEFAULT_OUT = "out"
DEFAULTS = {"spec": None, "out": DEFAULT_OUT}  # None: ./cluster.yaml if there is one, else the kthw example


class HardwayConfig(Config):
    """Invoke's configuration under the name `hardway`: HARDWAY_* variables, hardway.yaml files."""

    prefix = "hardway"


def _fail(e: HardwayError) -> Exit:
    return Exit(f"error: {e}" if "\n" not in str(e) else f"error:\n{e}", code=e.exit_code)


def run(fn, *args, **kwargs):
    """Call a task body; a HardwayError becomes a message and a non-zero exit, never a traceback. So
    does, as a last resort, a filesystem error no stage foresaw (a full disk, a read-only mount, EACCES)."""
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


class HardwayTask(Task):
    """A task whose body's expected failures end in a clean message and exit code (see `run`)."""

    def __call__(self, *args, **kwargs):
        return run(super().__call__, *args, **kwargs)


def task(*args, **kwargs):
    """`@task(help=...)` as Invoke's, with the HardwayTask class."""
    return invoke.task(*args, klass=HardwayTask, **kwargs)


def out_dir(c, out: str | None) -> Path:
    """--out, else the configured default."""
    return Path(out or c.config.get("out") or DEFAULT_OUT)


def spec_path(c, spec_arg: str | None, out: Path | None = None) -> Path:
    """--spec, else the configured spec, else ./cluster.yaml, else the built-in kthw example (said on stderr).
    The example is never used over an existing output directory `out`: its store and bundles belong to
    the user's cluster, and the example would re-issue their certificates and replace their bundles."""
    spec_arg = spec_arg or c.config.get("spec")
    if spec_arg:
        return Path(spec_arg)
    if Path(DEFAULT_SPEC).exists():
        return Path(DEFAULT_SPEC)
    if out is not None and (out.exists() or out.is_symlink()):
        raise HardwayError(_no_spec_over(out))
    builtin = resources.example_path("kthw")
    from rich.markup import escape

    from .output import err_console
    err_console.print(f"[yellow]warning:[/] no ./{DEFAULT_SPEC} here: using the built-in example kthw "
                      f"({escape(str(builtin))}); `hardway init` writes it here to edit")
    return builtin


def _no_spec_over(out: Path) -> str:
    """The refusal to use the built-in example over an existing output directory: what to do instead."""
    here = sorted(p.name for p in Path(".").glob("*.y*ml") if p.is_file())[:3]
    named = f" (here: {', '.join(here)})" if here else ""
    return (f"no ./{DEFAULT_SPEC} here, and {out} already holds generated output: the built-in example is not used "
            f"over it (it would re-issue its certificates and replace its bundles). Name the spec of that cluster "
            f"with --spec FILE{named}, e.g. `hardway bundle --spec cluster.yml`; or write the example here with "
            f"`hardway init`; or give the example its own output with --out other")


def load(c, spec_arg: str | None, out: Path | None = None) -> Cluster:
    """The spec, loaded and validated; its warnings on stderr. `out`: the output directory the task
    writes or reads (see spec_path)."""
    from rich.markup import escape

    from . import spec
    from .output import err_console
    cluster = spec.load(spec_path(c, spec_arg, out))
    for w in cluster.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}")
    return cluster
