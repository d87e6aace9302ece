"""The errors a user can cause. Each carries a message meant for the user, never a traceback."""


class HardwayError(Exception):
    """Base of every expected failure: the task prints the message and exits non-zero."""

    exit_code = 1


class SpecError(HardwayError):
    """The cluster spec is wrong. Holds one line per problem, each naming the field path."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class NotBuiltYet(HardwayError):
    """A stage that a later piece of work will provide."""

    exit_code = 3
