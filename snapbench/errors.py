"""The one error type a user sees: the CLI prints its message as one line and exits 2."""


class SnapbenchError(Exception):
    """Bad input or an unavailable capability, explained in one line with how to fix it."""


def first_line(e: BaseException, *, default: str = "") -> str:
    """The first line of an exception's message (library errors can run to pages), or `default`."""
    text = str(e).strip()
    return text.splitlines()[0] if text else default
