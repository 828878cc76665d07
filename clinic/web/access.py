"""Who may open which page: one table for every route, enforced before any view runs.

The views keep their own ``login_required`` / ``manager_required`` decorators; this table is
the second lock and the one place to read the whole picture. A route that is not in the table
is refused to everyone (fail closed), and tests/test_access.py walks every route as an anonymous
visitor, a front-desk user and a manager, so that adding a route without deciding who may use
it fails the build.
"""

from __future__ import annotations

from enum import Enum

from flask import Flask, abort, current_app, redirect, request, url_for
from flask_login import current_user

from clinic.extensions import login_manager
from clinic.services.transaction import read_only_session
from clinic.web.helpers import is_htmx


class Access(str, Enum):
    ANYONE = "anonymous"   # patients, friends, health checks: no login
    STAFF = "front_desk"   # any logged-in staff member
    MANAGER = "manager"    # managers only (front desk gets 403)
    API_TOKEN = "api_token"  # the integration API: a bearer token, checked by clinic/api (never the session)


ACCESS: dict[str, Access] = {
    # Public: printed and shared links, the health checks, styles.
    "public.home": Access.ANYONE,
    "public.invite": Access.ANYONE,
    "public.invite_qr": Access.ANYONE,
    "public.call_me": Access.ANYONE,  # a friend's "Call me back" request, from the invite page
    "public.call_me_page": Access.ANYONE,
    "public.progress": Access.ANYONE,
    "public.progress_poster": Access.ANYONE,
    "public.choices": Access.ANYONE,
    "public.save_choices": Access.ANYONE,
    "public.feedback": Access.ANYONE,
    "public.feedback_callback": Access.ANYONE,
    "public.voucher": Access.ANYONE,
    "public.voucher_qr": Access.ANYONE,
    "public.healthz": Access.ANYONE,
    "public.livez": Access.ANYONE,
    "public.brand_css": Access.ANYONE,
    "public.upload": Access.ANYONE,
    "honours.leaderboard": Access.ANYONE,
    "static": Access.ANYONE,
    "auth.login": Access.ANYONE,
    "auth.login_code": Access.ANYONE,  # the second step: nobody is logged in until it is done
    # The front desk.
    "auth.logout": Access.STAFF,
    "auth.language": Access.STAFF,
    "auth.security": Access.STAFF,
    "accounts.change_password": Access.STAFF,
    "auth.two_step_start": Access.STAFF,
    "auth.two_step_confirm": Access.STAFF,
    "auth.two_step_off": Access.STAFF,
    "auth.recovery_codes": Access.STAFF,
    "desk.index": Access.STAFF,
    "desk.lookup": Access.STAFF,
    "desk.redeem": Access.STAFF,
    "desk.redemption": Access.STAFF,
    "desk.send_for_review": Access.STAFF,
    "desk.spend": Access.STAFF,
    "desk.mark_visit": Access.STAFF,
    "leads.index": Access.STAFF,  # call-backs: whoever answers the phone, front desk or manager
    "leads.update": Access.STAFF,
    # Patients are the whole clinic's: any staff member, of any branch, finds and opens any patient (a patient enrolled
    # at one branch is seen at another). Branches only tag what staff do, for reports (services/branches.py). What is
    # printed for a patient by id (poster, welcome slip, personal card PDF) follows the patient page: same access, no
    # narrower scoping to guess ids around. tests/test_access.py states it.
    "patients.search": Access.STAFF,
    "patients.enrol": Access.STAFF,
    "patients.show": Access.STAFF,
    "patients.welcome": Access.STAFF,
    "patients.poster": Access.STAFF,  # as patients.show (above)
    "patients.poster_consent": Access.STAFF,
    "patients.rotate_progress_link": Access.STAFF,
    "patients.notification_preferences": Access.STAFF,
    "patients.send_invitation": Access.STAFF,
    "patients.correct_details": Access.STAFF,
    "honours.leaderboard_consent": Access.STAFF,
    "referrals.visit": Access.STAFF,
    "referrals.payment": Access.STAFF,
    "cards.activate": Access.STAFF,
    "cards.print_personal": Access.STAFF,
    "cards.personal_pdf": Access.STAFF,  # as patients.show (above), whose card list links to it
    # Managers.
    "admin.settings": Access.MANAGER,
    "admin.retention": Access.MANAGER,
    "admin.campaign": Access.MANAGER,
    "admin.campaigns": Access.MANAGER,
    "admin.new_campaign": Access.MANAGER,
    "admin.edit_campaign": Access.MANAGER,
    "admin.void_voucher": Access.MANAGER,
    "patients.erase": Access.MANAGER,
    "patients.data": Access.MANAGER,
    "admin.audit": Access.MANAGER,
    "admin.posters": Access.MANAGER,
    "admin.posters_pdf": Access.MANAGER,
    "admin.staff": Access.MANAGER,
    "admin.disable_staff": Access.MANAGER,
    "admin.enable_staff": Access.MANAGER,
    "admin.end_staff_sessions": Access.MANAGER,
    "accounts.add_staff": Access.MANAGER,
    "accounts.reset_password": Access.MANAGER,
    "accounts.change_role": Access.MANAGER,
    "admin.reset_two_step": Access.MANAGER,
    "cards.index": Access.MANAGER,
    "cards.create_batch": Access.MANAGER,
    "cards.preview": Access.MANAGER,
    "cards.batch": Access.MANAGER,
    "cards.batch_pdf": Access.MANAGER,
    "cards.serials_csv": Access.MANAGER,
    "cards.retry": Access.MANAGER,
    "cards.void_batch": Access.MANAGER,
    "cards.void_card": Access.MANAGER,
    "referrals.reversal": Access.MANAGER,
    "referrals.reverse": Access.MANAGER,
    "honours.tiers": Access.MANAGER,
    "honours.edit_tier": Access.MANAGER,
    "honours.delete_tier": Access.MANAGER,
    "honours.honours": Access.MANAGER,
    "honours.certificate": Access.MANAGER,
    "imports.upload": Access.MANAGER,
    "imports.template": Access.MANAGER,
    "imports.preview": Access.MANAGER,
    "imports.confirm": Access.MANAGER,
    "imports.result": Access.MANAGER,
    "imports.posters": Access.MANAGER,
    "imports.links": Access.MANAGER,
    "reports.dashboard": Access.MANAGER,
    "reports.feedback_calls": Access.MANAGER,
    "reports.feedback_called": Access.MANAGER,
    "reports.export": Access.MANAGER,
    "reports.checks": Access.MANAGER,
    "reports.mark_checked": Access.MANAGER,
    "reports.branches": Access.MANAGER,
    "reports.create_branch": Access.MANAGER,
    "reports.edit_branch": Access.MANAGER,
    "reports.assign_staff": Access.MANAGER,
    "reviews.index": Access.MANAGER,
    "reviews.decide": Access.MANAGER,
    "webhooks.index": Access.MANAGER,
    "webhooks.show": Access.MANAGER,
    "webhooks.enable": Access.MANAGER,
    "webhooks.disable": Access.MANAGER,
    "webhooks.delete": Access.MANAGER,
    "webhooks.resend": Access.MANAGER,
    "webhooks.rotate_secret": Access.MANAGER,
    "webhooks.notifications_page": Access.MANAGER,
    "webhooks.invitations": Access.MANAGER,
    "api_tokens.index": Access.MANAGER,
    "api_tokens.create": Access.MANAGER,
    "api_tokens.revoke": Access.MANAGER,
    # The integration API: its description is open, everything else needs a token.
    "api.openapi": Access.ANYONE,
    "api.docs": Access.ANYONE,
    "api.create_patient": Access.API_TOKEN,
    "api.correct_patient": Access.API_TOKEN,
    "api.find_patients": Access.API_TOKEN,
    "api.get_patient": Access.API_TOKEN,
    "api.rotate_progress_link": Access.API_TOKEN,
    "api.record_visit": Access.API_TOKEN,
    "api.record_payment": Access.API_TOKEN,
    "api.validate_code": Access.API_TOKEN,
    "api.redeem": Access.API_TOKEN,
    "api.get_voucher": Access.API_TOKEN,
    "api.spend_voucher": Access.API_TOKEN,
    "api.void_voucher": Access.API_TOKEN,
    "api.activate_card": Access.API_TOKEN,
    "api.create_batch": Access.API_TOKEN,
    "api.get_batch": Access.API_TOKEN,
    "api.batch_pdf": Access.API_TOKEN,
}


def _check_access():
    if request.endpoint is None:
        return None  # no route matched: the 404/405 handler answers
    needed = ACCESS.get(request.endpoint)
    if needed is None:
        current_app.logger.error("Route %s is missing from the access table: refused", request.endpoint)
        abort(403)
    if needed in (Access.ANYONE, Access.API_TOKEN):
        return None  # API_TOKEN: the API's own before_request checks the bearer token
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if needed is Access.MANAGER and not current_user.is_manager:
        abort(403)
    return None


# What someone holding a temporary password (web/accounts.py) may still open: choosing their own, leaving.
WHILE_PASSWORD_IS_TEMPORARY = frozenset({"accounts.change_password", "auth.logout", "auth.language"})


def _temporary_password_changed_first():
    """A login with a temporary password (a new account, a reset) goes to "choose your password" before any other
    staff page, and before a required two-step set-up: that one follows once the password is their own.

    Public pages, the API and the static files are not asked (they need no staff login).
    """
    if (request.endpoint in WHILE_PASSWORD_IS_TEMPORARY or ACCESS.get(request.endpoint) not in (Access.STAFF,
                                                                                                  Access.MANAGER)
            or not current_user.is_authenticated or not current_user.password_change_required):
        return None
    return _send_to("accounts.change_password")


def _send_to(endpoint: str):
    """A redirect to a page that must come first: the whole page for htmx too (not swapped into a panel)."""
    if is_htmx():
        return "", 204, {"HX-Redirect": url_for(endpoint)}
    return redirect(url_for(endpoint), 303)


# What a manager who must use two-step login (Clinic.managers_need_two_step) and does not yet can still open
# (choosing their own password first, after a temporary one, too).
TWO_STEP_SET_UP = frozenset({"auth.security", "auth.two_step_start", "auth.two_step_confirm", "auth.logout",
                             "auth.language", "accounts.change_password"})


def _managers_set_up_two_step_first():
    """When the clinic requires it, a manager without two-step login is sent to set it up before any staff page.

    Only staff pages: public pages and styles stay as they are for anyone, and the set-up itself, the language
    switch (to read it) and logging out stay open. Checked on every request, so a manager already logged in
    when the setting is turned on meets it on their next page.
    """
    if (request.endpoint in TWO_STEP_SET_UP or ACCESS.get(request.endpoint) not in (Access.STAFF, Access.MANAGER)
            or not current_user.is_authenticated or not current_user.is_manager or current_user.two_step_on):
        return None
    from clinic.services.clinic_settings import managers_need_two_step

    if not managers_need_two_step():
        return None
    return _send_to("auth.security")


def _staff_pages_only_read():
    """A staff page opened with GET or HEAD reads outside a database transaction (transaction.read_only_session).

    On PostgreSQL its transaction would end in a ROLLBACK, and with it psycopg forgets the statements it had
    prepared on the connection, the desk's redemption statements among them. Safe methods do not change data;
    one that must (none does now) writes inside ``atomic()`` as any action does.
    """
    if request.method in ("GET", "HEAD") and ACCESS.get(request.endpoint) in (Access.STAFF, Access.MANAGER):
        read_only_session()


def init_app(app: Flask) -> None:
    # Runs before every blueprint's own before_request hooks (app-level hooks come first).
    app.before_request(_check_access)
    app.before_request(_temporary_password_changed_first)
    app.before_request(_managers_set_up_two_step_first)
    app.before_request(_staff_pages_only_read)
