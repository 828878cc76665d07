"""The one error type services raise for a refusal a person can act on."""

from __future__ import annotations


class Refused(Exception):
    """An action the rules refuse: ``reason`` is a stable code, ``message`` is for people.

    ``status`` is the HTTP status a view should answer with; ``field`` names the form
    field the message belongs to, when there is one.
    """

    status = 422

    def __init__(self, reason: str, message: str, *, field: str | None = None, status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field
        if status is not None:
            self.status = status
