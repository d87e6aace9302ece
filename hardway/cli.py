"""The `hardway` console command: the same tasks as `inv` in a checkout, installed with the wheel.

Invoke's Program, trimmed to what means something here: its core flags for running shell commands
(--dry, --echo, --pty, --warn-only, --hide, --prompt-for-sudo-password, ...) are not offered,
since no task runs one (a dry run is `hardway plan`). A command line it cannot read gets a message
that says what to type instead: a near task name, a task flag given before the task, a flag
without its value.
"""

import difflib
import os
import sys

from invoke import Exit, Program
from invoke.exceptions import ParseError

from . import __version__
from .tasklib import HardwayConfig
from .tasks import ns

# The core flags that do something for these tasks; Invoke's others drive its shell runner.
CORE_FLAGS = ("complete", "config", "help", "list", "list-depth", "list-format", "print-completion-script", "version")
# What a user reaching for one of Invoke's dropped flags wants here.
INSTEAD = {"--dry": "a dry run is `hardway plan`", "-R": "a dry run is `hardway plan`"}


class HardwayProgram(Program):
    """Invoke's Program with only the core flags in CORE_FLAGS and messages for what it cannot parse."""

    def core_args(self):
        return [a for a in super().core_args() if a.name in CORE_FLAGS]

    def parse_core(self, argv) -> None:
        # Program.parse_core without --write-pyc and --debug (not offered); the rest as Invoke does it.
        self.normalize_argv(argv)
        self.parse_core_args()
        sys.dont_write_bytecode = True
        if self.args.version.value:
            self.print_version()
            raise Exit
        if self.args["print-completion-script"].value:
            from invoke.completion.complete import print_completion_script
            print_completion_script(shell=self.args["print-completion-script"].value, names=self.binary_names)
            raise Exit

    def update_config(self, merge: bool = True) -> None:
        # Only the runtime configuration file (-f); the run.* overrides of the dropped flags do not exist.
        runtime_path = self.args.config.value or os.environ.get("INVOKE_RUNTIME_CONFIG")
        self.config.set_runtime_path(runtime_path)
        self.config.load_runtime(merge=False)
        if merge:
            self.config.merge()

    def parse_tasks(self) -> None:
        # The parser's own contexts: building them again would consume the tasks' help texts.
        try:
            super().parse_tasks()
        except ParseError as e:
            contexts = _contexts(self.parser)
            _check_values(self.core.unparsed, {c.name: c for c in contexts}, self.collection)
            raise ParseError(_explain(e, self.core.unparsed, contexts, self.collection)) from None
        contexts = _contexts(self.parser)
        _check_values(self.core.unparsed, {c.name: c for c in contexts}, self.collection)


def _contexts(parser) -> list:
    return list({id(c): c for c in parser.contexts.values()}.values())


def _task_names(collection) -> list[str]:
    return sorted(collection.task_names)


def _context(token: str, by_name: dict, collection):
    """The parser context of task name `token` (or an alias), None when it is not a task."""
    for name, aliases in collection.task_names.items():
        if token == name or token in aliases:
            return by_name.get(name)
    return None


def _check_values(argv: list[str], by_name: dict, collection) -> None:
    """A task flag that takes a value and was given none (`pki --import-ca` at the end, or before another
    flag) is an error: Invoke would take it as given and empty, and the task would do something else."""
    context = None
    for i, token in enumerate(argv):
        found = _context(token, by_name, collection)
        if found is not None and not (context is not None and i and _takes_value(context, argv[i - 1])):
            context = found
            continue
        if context is None or not token.startswith("-") or "=" in token:
            continue
        if _takes_value(context, token):
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following is None or following.startswith("-"):
                arg = context.flags[token]
                raise ParseError(f"error: {token} needs a value ({context.name} --help: {arg.help or arg.name})")


def _takes_value(context, flag: str) -> bool:
    arg = context.flags.get(flag)
    return bool(arg is not None and arg.takes_value and not arg.optional)


def _explain(e: ParseError, argv: list[str], contexts, collection) -> str:
    """Invoke's "No idea what 'X' is!" in words a user can act on."""
    message = str(e)
    prefix, _, rest = message.partition("No idea what '")
    if not rest:
        return f"error: {message}"
    token = rest.rsplit("' is!", 1)[0]
    if token in INSTEAD:
        return f"error: no flag {token} here: {INSTEAD[token]}"
    if token.startswith("-"):
        flag = token.split("=", 1)[0]
        owners = [c.name for c in contexts if flag in c.flags]
        first_task = next((t for t in argv if _context(t, {c.name: c for c in contexts}, collection)), None)
        if owners and (first_task is None or argv.index(token) < argv.index(first_task)):
            example = first_task or owners[0]
            return (f"error: {flag} is a flag of the task, not of hardway: put it after the task name, "
                    f"e.g. `hardway {example} {' '.join(t for t in argv if t != first_task)}`")
        near = difflib.get_close_matches(flag, sorted({f for c in contexts for f in c.flags}), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return f"error: unknown flag {flag!r}{hint} (`hardway TASK --help` lists a task's flags)"
    near = difflib.get_close_matches(token, _task_names(collection), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"error: no task {token!r}{hint} (`hardway --list` lists them)"


program = HardwayProgram(namespace=ns, version=__version__, name="hardway", binary="hardway",
                         config_class=HardwayConfig)


def main() -> None:
    try:
        program.run()
        sys.stdout.flush()
    except BrokenPipeError:
        # `hardway --list | head`: the reader left; say nothing more, as other Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
