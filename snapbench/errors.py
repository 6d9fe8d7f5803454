"""The one error type a user sees: the CLI prints its message as one line and exits 2."""


class SnapbenchError(Exception):
    """Bad input or an unavailable capability, explained in one line with how to fix it."""
