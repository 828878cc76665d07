"""Staff log in and out; every attempt is audited."""

from __future__ import annotations

from flask import Blueprint, Flask, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required, login_user, logout_user
from urllib.parse import urlsplit

from clinic.extensions import login_manager
from clinic.services import staff as staff_service
from clinic.services.errors import Refused
from clinic.web.errors import render_error
from clinic.web.forms import LoginForm
from clinic.web.helpers import current_actor

bp = Blueprint("auth", __name__)


def init_app(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("Please log in to continue.")
    login_manager.localize_callback = str  # the flash is stored in the session: text, in the reader's language
    login_manager.session_protection = "basic"
    login_manager.user_loader(staff_service.load_session_user)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an absolute or scheme-relative URL from the query string."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("desk.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("desk.index"))
    form = LoginForm()
    if form.validate_on_submit():
        staff = staff_service.authenticate(form.email.data, form.password.data, current_actor(),
                                           request.user_agent.string)
        if staff is not None:
            session.clear()
            login_user(staff)
            return redirect(_safe_next(request.args.get("next")), 303)  # 303: the browser GETs the next page
        form.password.errors.append(_("Wrong email or password."))
    status = 422 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form), status


@bp.post("/account/language")
@login_required
def language():
    """The language switch in the top bar: this staff member reads the portal in the chosen language."""
    try:
        staff_service.set_language(current_user.id, request.form.get("language") or None)
    except Refused as refusal:
        return render_error(refusal.status, refusal.message)
    return redirect(_safe_next(request.form.get("next")), 303)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    staff_service.log_out(current_user, current_actor())
    logout_user()
    session.clear()
    flash(_("You are logged out."))
    return redirect(url_for("auth.login"), 303)
