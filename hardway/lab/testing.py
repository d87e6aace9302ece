"""Moved to tests/helpers.py (pytest-only helpers do not ship in the package). This shim stays only
until the lab and end-to-end tests import `helpers` themselves; it works only under pytest, which
puts tests/ on sys.path."""

from helpers import (BUILD_COMMAND, IN_CI, missing, need_binaries, need_haproxy,  # noqa: F401
                     need_namespaces)
