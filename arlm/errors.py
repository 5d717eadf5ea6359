"""The two kinds of failure a user can meet; the CLI turns each into one line and an exit code.

The rule: what is wrong with the data a user points to (a path that does not exist, a file that
is unreadable, binary, empty or not UTF-8, a folder that is no dataset or no checkpoint, a
damaged one, a tokenizer that does not match) is an ArlmError, exit 1; what is wrong with the
command line itself (a value out of range, contradictory flags, a missing required flag, an
--out that is in the way) is a UsageError, exit 2."""


class ArlmError(Exception):
    """Bad data, or a failure at run time (a failed write): exit code 1."""

    exit_code = 1


class UsageError(ArlmError):
    """The command line asks for something impossible or contradictory: exit code 2."""

    exit_code = 2
