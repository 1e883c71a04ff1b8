"""The one exception type users see: a mistake they can act on."""

from __future__ import annotations


class UserError(Exception):
    """An error the user can act on: printed as one line, exit code 2, no traceback."""


def first_line(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut to `limit` characters: for one-line errors that quote another."""
    return (str(err).strip().splitlines() or [""])[0][:limit]
