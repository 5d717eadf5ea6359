"""The two kinds of failure a user can meet; the CLI turns each into one line and an exit code."""


class ArlmError(Exception):
    """Something went wrong at run time (bad file contents, a failed write): exit code 1."""

    exit_code = 1


class UsageError(ArlmError):
    """The command line asks for something impossible or contradictory: exit code 2."""

    exit_code = 2
