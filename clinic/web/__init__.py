"""Thin views, one blueprint per area."""

from __future__ import annotations

from flask import Flask


def register_web(app: Flask) -> None:
    from clinic.web import admin, auth, cards, desk, errors, patients, public, templating

    templating.init_app(app)
    errors.init_app(app)
    auth.init_app(app)
    for blueprint in (auth.bp, desk.bp, patients.bp, cards.bp, admin.bp, public.bp):
        app.register_blueprint(blueprint)
