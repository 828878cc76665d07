"""Staff accounts without a shell: a manager adds someone, resets a forgotten password or changes a role on the
staff page; everyone changes their own password. A temporary password (clinic.services.staff) is shown once and
lets its holder do nothing but choose their own.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from clinic.services import staff as staff_service
from clinic.services import two_step
from clinic.services.errors import Refused
from clinic.services.patients import FieldErrors
from clinic.web.forms import NewStaffForm, PasswordChangeForm, StaffRoleForm
from clinic.web.helpers import current_actor, manager_required

bp = Blueprint("accounts", __name__)

def staff_page(status: int = 200, **context):
    """The manager's staff page (admin/staff.html), with a form to add someone and any refusal or new password."""
    context.setdefault("new_staff_form", NewStaffForm(formdata=None))
    return render_template("admin/staff.html", accounts=staff_service.staff_list(),
                           unreadable_two_step=two_step.accounts_with_unreadable_secrets(), **context), status


@bp.post("/admin/staff/new")
@manager_required
def add_staff():
    form = NewStaffForm()
    if not form.validate():
        return staff_page(422, new_staff_form=form)
    try:
        issued = staff_service.add_staff(form.email.data, form.role.data, current_actor())
    except Refused as refusal:
        form[refusal.field if refusal.field in form else "email"].errors.append(refusal.message)
        return staff_page(refusal.status, new_staff_form=form)
    # Shown here, once, and never again: not flashed (the flash travels in the session cookie).
    return staff_page(issued=issued, issued_new=True)


@bp.post("/admin/staff/<int:staff_id>/password")
@manager_required
def reset_password(staff_id: int):
    """A forgotten password: a temporary one, shown once; the person is logged out everywhere."""
    try:
        issued = staff_service.reset_password(staff_id, current_actor())
    except Refused as refusal:
        return staff_page(refusal.status, refusal=refusal, refused_id=staff_id)
    return staff_page(issued=issued, issued_new=False)


@bp.post("/admin/staff/<int:staff_id>/role")
@manager_required
def change_role(staff_id: int):
    form = StaffRoleForm()
    try:
        if not form.validate():
            raise Refused("validation_error", _("Choose front desk or manager."), status=422)
        staff = staff_service.change_role(staff_id, form.role.data, current_actor())
    except Refused as refusal:
        return staff_page(refusal.status, refusal=refusal, refused_id=staff_id)
    flash(_("%(email)s's role is saved.", email=staff.email))
    return redirect(url_for("admin.staff"), code=303)


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    """Choose one's own password (and, after a temporary one, before anything else)."""
    form = PasswordChangeForm()
    if request.method == "POST":
        if form.validate():
            try:
                staff_service.change_own_password(current_user.id, form.current_password.data, form.new_password.data,
                                                  form.repeat_password.data, current_user.session_token,
                                                  current_actor())
            except FieldErrors as problems:
                for name, message in problems.errors.items():
                    form[name].errors.append(message)
            else:
                flash(_("Your password is changed. Any other device you were logged in on is logged out."))
                return redirect(url_for("desk.index"), code=303)
        return _password_page(form, 422)
    return _password_page(form)


def _password_page(form: PasswordChangeForm, status: int = 200):
    return render_template("auth/password.html", form=form, min_length=staff_service.MIN_PASSWORD_LENGTH), status
