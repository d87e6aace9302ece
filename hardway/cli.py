"""The `hardway` console command: the same tasks as `inv` in a checkout, installed with the wheel."""

import os
import sys

from invoke import Program

from . import __version__
from .tasklib import HardwayConfig
from .tasks import ns

program = Program(namespace=ns, version=__version__, name="hardway", binary="hardway", config_class=HardwayConfig)


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
