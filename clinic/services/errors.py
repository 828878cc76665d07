"""The one error type services raise for a refusal a person can act on."""

from __future__ import annotations

from contextlib import contextmanager

from flask import current_app
from flask_babel import gettext as _


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


@contextmanager
def stored_by_the_server(folder, *, field: str | None = None):
    """Around keeping an upload in a folder: an OSError there is the server's fault, not the file's.

    A folder the app's user may not write (an admin command run as root made it), a full disk: logged with its
    reason for whoever runs the server, and told to the person uploading as such (503), not as a bad file.
    """
    try:
        yield
    except OSError:
        current_app.logger.exception("An upload could not be stored in %s", folder)
        raise Refused("not_stored", _("The file could not be stored on the server. Ask whoever runs it to look at "
                                      "its log."), field=field, status=503) from None
