"""Staff log in (password, then a code when two-step login is on) and out; every attempt is audited."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, flash, make_response, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required, login_user, logout_user
from urllib.parse import urlsplit

from clinic.extensions import login_manager
from clinic.services import staff as staff_service
from clinic.services import two_step
from clinic.services.clinic_settings import current_clinic
from clinic.services.errors import Refused
from clinic.services.qr import qr_svg
from clinic.web.errors import render_error
from clinic.web.forms import LoginForm, TwoStepCodeForm, TwoStepOffForm
from clinic.web.helpers import current_actor

bp = Blueprint("auth", __name__)

# The session key of a login whose password was right and whose code is still to come: the staff id, until
# when (seconds since the epoch) and where to go afterwards. Nobody is logged in until the code is.
PENDING_LOGIN = "two_step_pending"
PENDING_LOGIN_SECONDS = 5 * 60


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
        staff = staff_service.check_credentials(form.email.data, form.password.data, current_actor())
        if staff is not None:
            next_url = _safe_next(request.args.get("next"))
            session.clear()
            if staff.two_step_on:
                session[PENDING_LOGIN] = {"staff": staff.id, "until": int(time.time()) + PENDING_LOGIN_SECONDS,
                                          "next": next_url}
                return redirect(url_for("auth.login_code"), 303)
            return _logged_in(staff_service.open_session(staff.id, current_actor(), request.user_agent.string),
                              next_url)
        form.password.errors.append(_("Wrong email or password."))
    status = 422 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form), status


def _logged_in(staff, next_url: str):
    session.clear()
    login_user(staff)
    return redirect(next_url, 303)  # 303: the browser GETs the next page


def pending_login() -> dict | None:
    """The login waiting for its code in this browser, if it has not timed out (a timed-out one is forgotten)."""
    pending = session.get(PENDING_LOGIN)
    if isinstance(pending, dict) and isinstance(pending.get("staff"), int) and pending.get("until", 0) > time.time():
        return pending
    session.pop(PENDING_LOGIN, None)
    return None


def _log_in_again(message: str):
    session.pop(PENDING_LOGIN, None)
    flash(message, "error")
    return redirect(url_for("auth.login"), 303)


@bp.route("/login/code", methods=["GET", "POST"])
def login_code():
    """The second step: the 6-digit code of the authenticator app, or a recovery code."""
    if current_user.is_authenticated:
        return redirect(url_for("desk.index"))
    pending = pending_login()
    if pending is None:
        return _log_in_again(_("That log in timed out: type your email and password again."))
    form = TwoStepCodeForm()
    if form.validate_on_submit():
        try:
            staff = two_step.finish_login(pending["staff"], form.code.data, current_actor(), request.user_agent.string)
        except Refused as refusal:
            if refusal.field is None:  # the account was disabled or reset meanwhile: start from the password
                return _log_in_again(refusal.message)
            form.code.errors.append(refusal.message)
        else:
            return _logged_in(staff, pending.get("next") or url_for("desk.index"))
    status = 422 if request.method == "POST" else 200
    return render_template("auth/code.html", form=form), status


@bp.get("/account/security")
@login_required
def security():
    """This staff member's two-step login: turn it on (scan, confirm with a code) or off."""
    return _security_page()


def _security_page(confirm_form=None, off_form=None, renew_form=None, refusal: Refused | None = None,
                   status: int = 200):
    state = two_step.state(current_user.id)
    qr = secret = None
    if state.pending_secret:
        secret = state.pending_secret
        uri = two_step.provisioning_uri(current_user.email, secret, current_clinic().name)
        qr = qr_svg(uri, title=_("QR code for your authenticator app"))
    response = make_response(render_template(
        "auth/security.html", state=state, qr=qr, secret=secret, refusal=refusal,
        required=current_user.is_manager and current_clinic().managers_need_two_step,
        confirm_form=confirm_form or TwoStepCodeForm(), off_form=off_form or TwoStepOffForm(),
        renew_form=renew_form or TwoStepOffForm(prefix="renew")), status)
    response.headers["Cache-Control"] = "no-store"  # the secret is on the page
    return response


def _form_refused(confirm_form=None, off_form=None, renew_form=None):
    """A form with errors, shown again; unless the page no longer draws it (set up or turned off in another tab):
    then say so, rather than errors nobody sees."""
    state = two_step.state(current_user.id)
    if confirm_form is not None and state.on:
        return _security_page(refusal=two_step.already_on(), status=409)
    if confirm_form is not None and not state.pending_secret:
        return _security_page(refusal=two_step.not_started(), status=409)
    if (off_form is not None or renew_form is not None) and not state.on:
        return _security_page(refusal=two_step.already_off(), status=409)
    return _security_page(confirm_form=confirm_form, off_form=off_form, renew_form=renew_form, status=422)


def _recovery_codes_page(codes: list[str], renewed: bool = False):
    """The recovery codes, shown on this answer only (never stored, never in a page that can be reloaded)."""
    response = make_response(render_template("auth/recovery_codes.html", codes=codes, renewed=renewed))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/account/security/start")
@login_required
def two_step_start():
    try:
        two_step.start_enrolment(current_user.id, current_actor())
    except Refused as refusal:
        return _security_page(refusal=refusal, status=refusal.status)
    return redirect(url_for("auth.security"), 303)


@bp.post("/account/security/confirm")
@login_required
def two_step_confirm():
    """A code from the new app turns two-step login on; the recovery codes are shown on this answer, once."""
    form = TwoStepCodeForm()
    if not form.validate_on_submit():
        return _form_refused(confirm_form=form)
    try:
        codes = two_step.confirm_enrolment(current_user.id, form.code.data, current_actor(),
                                           session_token=current_user.session_token)
    except Refused as refusal:
        if refusal.field is None:
            return _security_page(refusal=refusal, status=refusal.status)
        form.code.errors.append(refusal.message)
        return _security_page(confirm_form=form, status=refusal.status)
    return _recovery_codes_page(codes)


def _with_password_and_code(action, form_name: str):
    """Parse the password-and-code form ``form_name`` (off, renew) and run ``action(password, code)``; its
    result, or the security page again with the form's errors. The renew form's fields are prefixed: both forms
    are on one page, and their fields' ids must differ."""
    form = TwoStepOffForm(prefix="" if form_name == "off" else form_name)
    if not form.validate_on_submit():
        return None, _form_refused(**{f"{form_name}_form": form})
    try:
        return action(form.password.data, form.code.data), None
    except Refused as refusal:
        if refusal.field is None:
            return None, _security_page(refusal=refusal, status=refusal.status)
        getattr(form, refusal.field).errors.append(refusal.message)
        return None, _security_page(**{f"{form_name}_form": form}, status=refusal.status)


@bp.post("/account/security/off")
@login_required
def two_step_off():
    _done, refused = _with_password_and_code(
        lambda password, code: two_step.turn_off(current_user.id, password, code, current_actor()), "off")
    if refused is not None:
        return refused
    flash(_("Two-step login is off: your password alone logs you in."))
    return redirect(url_for("auth.security"), 303)


@bp.post("/account/security/recovery-codes")
@login_required
def recovery_codes():
    """New recovery codes (with the password and a code): the earlier ones stop working; these are shown once."""
    codes, refused = _with_password_and_code(
        lambda password, code: two_step.renew_recovery_codes(current_user.id, password, code, current_actor()),
        "renew")
    return refused if refused is not None else _recovery_codes_page(codes, renewed=True)


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
