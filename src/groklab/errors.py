"""The one exception type users see: a mistake they can act on."""

from __future__ import annotations


class UserError(Exception):
    """An error the user can act on: printed as one line, exit code 2, no traceback."""
