"""A request body sent in chunks (no Content-Length) is read whole before the app sees it, up to a limit.

Werkzeug stops reading such a body at the app's size limit without a word (it raises only on a read past the
limit, which its JSON and form readers never make), so an oversized chunked body reached the views cut off: the
API answered "malformed_json" and a form was processed truncated. Read here, the body gets its Content-Length, and
werkzeug's own check answers 413 through the app's error pages, per route as for any other body. Browsers send
forms with a Content-Length; integrations (an HIS) may send chunked JSON.
"""

from __future__ import annotations

import io


class WholeChunkedBodies:
    """WSGI middleware: a chunked body becomes a sized one; one over ``largest`` bytes arrives as too large."""

    def __init__(self, wsgi_app, largest: int):
        self.wsgi_app = wsgi_app
        self.largest = largest

    def __call__(self, environ, start_response):
        # Chunked means no usable Content-Length (HTTP lets Transfer-Encoding override one; werkzeug ignores it too).
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = environ["wsgi.input"].read(self.largest + 1)
            # Over the largest any route takes: the length says so and no byte of it is kept; werkzeug refuses it.
            environ["wsgi.input"] = io.BytesIO(body if len(body) <= self.largest else b"")
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]
            environ.pop("wsgi.input_terminated", None)
        return self.wsgi_app(environ, start_response)
