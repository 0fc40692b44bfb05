"""The one error type of the local commands: a message the user can act on, on one line."""

from __future__ import annotations


class LocalError(Exception):
    """A failure `kubeserve serve` or `kubeserve package` reports as one line, exit status 1.

    Raised for anything the user can fix (a missing file, a bad flag, a model that does not
    match its export); programming errors still raise their own exceptions with a traceback.
    """

    def __str__(self) -> str:
        # Keep the promise of one line even when the cause is a multi-line library message.
        text = super().__str__().strip()
        return text.splitlines()[0] if text else self.__class__.__name__


def first_line(exc: BaseException) -> str:
    """A library exception as one readable line (its type when it has no message)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
