"""Thin views, one blueprint per area."""

from __future__ import annotations

from flask import Flask


def register_web(app: Flask) -> None:
    from clinic import api
    from clinic.web import (
        access,
        accounts,
        admin,
        api_tokens,
        auth,
        cards,
        chunked,
        desk,
        errors,
        honours,
        imports,
        leads,
        limits,
        patients,
        public,
        referrals,
        reports,
        reviews,
        templating,
        webhooks,
    )

    templating.init_app(app)
    access.init_app(app)
    errors.init_app(app)
    auth.init_app(app)
    for module in (auth, desk, leads, patients, referrals, cards, admin, reviews, honours, reports, imports, public,
                   api_tokens, webhooks, accounts):
        app.register_blueprint(module.bp)
    api.register(app)
    limits.init_app(app)  # after the blueprints: it wraps their views
    # The largest body any route takes: the routes that take a file raise the limit for themselves (imports.py for
    # its preview form, admin.py for the settings form and its logo).
    app.wsgi_app = chunked.WholeChunkedBodies(app.wsgi_app, max(app.config["MAX_CONTENT_LENGTH"] or 0,
                                                                imports.largest_body(), admin.largest_body()))
