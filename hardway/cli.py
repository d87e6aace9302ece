"""The `hardway` console command: the same tasks as `inv` in a checkout, installed with the wheel."""

from invoke import Program

from . import __version__
from .tasks import ns

program = Program(namespace=ns, version=__version__, name="hardway", binary="hardway")


def main() -> None:
    program.run()
