"""Invoke tasks for a checkout: `inv --list`. The tasks live in hardway/tasks.py, which the
installed `hardway` command shares, so both spell the same flags and give the same help."""

from hardway.tasks import ns  # noqa: F401  (invoke picks up `ns`)
