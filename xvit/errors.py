"""Errors a user can meet and fix (bad file, bad config key, bad label, missing dataset root).

Raise ``UserError`` with a message that names the offending path or value and what to do; the
command line prints it as one line and exits with status 2, without a traceback.
"""

EXIT_STOPPED = 75  # sysexits.h EX_TEMPFAIL ("try again later"): xvit train stopped on notice after a snapshot


class UserError(Exception):
    """An error the user can fix: printed as one line, exit status 2, no traceback."""


class Stopped(Exception):
    """A training run stopped on notice (a stop signal) after writing a snapshot of its step; the
    command line prints the message (rank 0's; empty on the other ranks) and exits with ``EXIT_STOPPED``."""


class PeerFailure(UserError):
    """A DDP rank died or hung: the process group is broken, so the process should exit at once
    (``xvit train`` does, with status 2, after printing the one-line message)."""
