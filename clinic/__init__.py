"""Clinic referral portal: the application factory."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from clinic import i18n
from clinic.config import database_engine_options, load_config
from clinic.extensions import csrf, db, login_manager, migrate

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(
        __name__,
        instance_relative_config=True,
        instance_path=str(PROJECT_ROOT / "instance"),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    from clinic.web.sessions import CookieSessionInterface
    from clinic.web.templating import TemplateEnvironment

    app.jinja_environment = TemplateEnvironment  # before anything creates app.jinja_env
    app.session_interface = CookieSessionInterface()
    app.config.update(load_config(Path(app.instance_path)))
    if test_config:
        app.config.update(test_config)
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", database_engine_options(app.config))

    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"), render_as_batch=True, compare_type=True)
    csrf.init_app(app)
    # Templates get current_user as a global proxy (clinic/web/templating.py), read only where a template
    # uses it: Flask-Login's context processor would load the user for every page, a patient's too.
    login_manager.init_app(app, add_context_processor=False)
    i18n.init_app(app)

    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            from clinic.services.transaction import configure_sqlite

            configure_sqlite(db.engine, app.config["SQLITE_BUSY_TIMEOUT_MS"])
        elif db.engine.dialect.name == "postgresql":
            from clinic.services.transaction import configure_postgresql

            configure_postgresql(db.engine)

    from clinic import cli, models  # noqa: F401  (models register their tables)
    from clinic.web import register_web
    from clinic.services import invite_opens
    from clinic.web.helpers import BoundedIntConverter

    app.url_map.converters["int"] = BoundedIntConverter  # before any route is added
    register_web(app)
    cli.register(app)
    invite_opens.init_app(app)
    if not app.testing:
        _warn_about_printing(app)
        for problem in folder_problems(app.config):
            app.logger.warning(problem)
        _warn_about_two_step_key(app)
    return app


# The folders the app writes while it runs, by the setting that names them.
WRITTEN_FOLDERS = ("UPLOAD_FOLDER", "IMPORT_FOLDER", "BATCH_FOLDER")


def folder_problems(config) -> list[str]:
    """The folders this process could not write, said at start-up rather than at the first upload.

    Their usual cause is an install step or an admin command run as another user (root) than the service's.
    """
    problems = []
    for setting in WRITTEN_FOLDERS:
        folder = Path(config[setting])
        nearest = next(path for path in (folder, *folder.parents) if path.exists())
        if not (nearest.is_dir() and os.access(nearest, os.W_OK | os.X_OK)):
            problems.append(f"{setting} ({folder}) cannot be written by this user (uid {os.getuid()}): "
                            f"uploads and batches stored there will fail until its owner is set right")
    return problems


def _warn_about_two_step_key(app: Flask) -> None:
    """Said at start-up: accounts whose two-step secret this server's key cannot open (a changed SECRET_KEY).

    Such a change turns those accounts' authenticator codes off silently (only recovery codes still work), so the
    person who changed the key should hear it in the log at once, not from the staff the next morning. A database
    not migrated yet (first start) or not reachable is left for the app's own checks to report.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from clinic.services.two_step import accounts_with_unreadable_secrets

    with app.app_context():
        try:
            unreadable = [staff.email for staff in accounts_with_unreadable_secrets()]
        except SQLAlchemyError:
            return
        finally:
            db.session.remove()
            db.engine.dispose()  # no connection of the master is handed down to gunicorn's forked workers
    if unreadable:
        app.logger.warning(
            "two-step login: this server's key (TWO_STEP_KEY, else SECRET_KEY) cannot open the authenticator secret "
            "of %d account(s): %s. Their app codes are refused and only recovery codes work until the old key is "
            "put back or a manager resets their two-step login.", len(unreadable), ", ".join(unreadable))


def _warn_about_printing(app: Flask) -> None:
    from clinic.services.printing import printing_problems

    for problem in printing_problems():
        app.logger.warning(problem)
