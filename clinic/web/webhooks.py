"""Manager pages: webhook endpoints, their deliveries (with resend), and the wording of patient notifications."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext

from clinic.models.patient import NOTIFICATION_LANGUAGES
from clinic.services import invitation_messages, notifications
from clinic.services import webhooks as webhook_service
from clinic.services.errors import Refused
from clinic.services.patients import FieldErrors
from clinic.web.forms import InvitationAudienceForm, SendInvitationsForm, WebhookEndpointForm
from clinic.web.helpers import current_actor, form_value, manager_required

bp = Blueprint("webhooks", __name__, url_prefix="/admin")


@bp.before_request
@manager_required
def _managers_only():
    """Every page here is for managers; front-desk staff get 403."""


def _index_page(form: WebhookEndpointForm, status: int = 200):
    return render_template("webhooks/index.html", form=form, endpoints=webhook_service.list_endpoints(),
                           deliveries=webhook_service.recent_deliveries(), event_types=webhook_service.EVENT_TYPES,
                           cancel_reasons=notifications.CANCEL_REASONS), status


@bp.route("/webhooks", methods=["GET", "POST"])
def index():
    """The endpoints, a form to add one, and the latest deliveries to any of them.

    A new endpoint's secret is in the answer to the POST only (never redirected to): copy it now.
    """
    form = WebhookEndpointForm()
    if request.method == "POST":
        if form.validate():
            endpoint = webhook_service.register_endpoint(form.rules, current_actor())
            return _endpoint_page(endpoint.id, status=201, new_secret=endpoint.secret)
        return _index_page(form, 422)
    return _index_page(form)


def _endpoint_page(endpoint_id: int, refusal: Refused | None = None, status: int = 200,
                   new_secret: str | None = None):
    try:
        endpoint = webhook_service.get_endpoint(endpoint_id)
    except Refused:
        abort(404)
    status_filter = request.args.get("status") if request.method == "GET" else None
    return render_template("webhooks/endpoint.html", endpoint=endpoint, refusal=refusal, status_filter=status_filter,
                           deliveries=webhook_service.recent_deliveries(endpoint.id, status_filter, limit=100),
                           event_types=webhook_service.EVENT_TYPES, cancel_reasons=notifications.CANCEL_REASONS,
                           new_secret=new_secret), status


@bp.get("/webhooks/<int:endpoint_id>")
def show(endpoint_id: int):
    """One endpoint: how to verify a signature, and its deliveries with their outcome (not its secret)."""
    return _endpoint_page(endpoint_id)


@bp.post("/webhooks/<int:endpoint_id>/rotate-secret")
def rotate_secret(endpoint_id: int):
    """A new signing secret, in this answer only (never redirected to, never shown again): copy it now."""
    try:
        endpoint = webhook_service.rotate_secret(endpoint_id, current_actor())
    except Refused:
        abort(404)
    return _endpoint_page(endpoint.id, new_secret=endpoint.secret)


def _endpoint_action(endpoint_id: int, action, done: str, then: str = "webhooks.show"):
    try:
        action()
    except Refused as refusal:
        if refusal.status == 404:
            abort(404)
        raise
    flash(done)
    return redirect(url_for(then, **({"endpoint_id": endpoint_id} if then == "webhooks.show" else {})), code=303)


@bp.post("/webhooks/<int:endpoint_id>/enable")
def enable(endpoint_id: int):
    return _endpoint_action(endpoint_id, lambda: webhook_service.set_enabled(endpoint_id, True, current_actor()),
                            _("The endpoint is enabled: new events and waiting deliveries go to it again."))


@bp.post("/webhooks/<int:endpoint_id>/disable")
def disable(endpoint_id: int):
    return _endpoint_action(endpoint_id, lambda: webhook_service.set_enabled(endpoint_id, False, current_actor()),
                            _("The endpoint is disabled: it gets no new events, and what is waiting stays waiting."))


@bp.post("/webhooks/<int:endpoint_id>/delete")
def delete(endpoint_id: int):
    return _endpoint_action(endpoint_id, lambda: webhook_service.delete_endpoint(endpoint_id, current_actor()),
                            _("The endpoint and its deliveries are deleted."), then="webhooks.index")


@bp.post("/webhooks/deliveries/<int:delivery_id>/resend")
def resend(delivery_id: int):
    """Send one delivery again now (a receiver that lost it, or one that failed every attempt)."""
    try:
        delivery = webhook_service.get_delivery(delivery_id)
    except Refused:
        abort(404)
    try:
        webhook_service.resend(delivery.id, current_actor())
    except Refused as refusal:
        return _endpoint_page(delivery.endpoint_id, refusal, refusal.status)
    flash(_("Delivery %(id)s will be sent again in a moment.", id=delivery.id))
    return redirect(url_for("webhooks.show", endpoint_id=delivery.endpoint_id), code=303)


@bp.route("/notifications", methods=["GET", "POST"])
def notifications_page():
    """The wording of the messages patients who agreed receive, per language; empty restores the built-in text."""
    errors: dict[str, str] = {}
    submitted: dict[str, str] = {}
    refusal, status = None, 200
    if request.method == "POST":
        names = [notifications.field_name(kind, language) for kind in notifications.KINDS
                 for language in NOTIFICATION_LANGUAGES]
        submitted = {name: form_value(name, 4 * notifications.TEMPLATE_MAX) for name in names if name in request.form}
        try:
            changed = notifications.save_templates(submitted, current_actor())
        except FieldErrors as problems:
            errors, status = problems.errors, 422
        except Refused as problem:
            refusal, status = problem, problem.status
        else:
            flash(_("Messages saved.") if changed else _("Nothing changed."))
            return redirect(url_for("webhooks.notifications_page"), code=303)
    return render_template("webhooks/notifications.html", templates=notifications.templates(), errors=errors,
                           refusal=refusal, submitted=submitted, languages=notifications.LANGUAGE_NAMES,
                           subscribed=webhook_service.subscribed(notifications.EVENT)), status


@bp.route("/invitations", methods=["GET", "POST"])
def invitations():
    """Send patients who agreed to messages their code and invite link: choose who, see how many and the message,
    then send (at most BATCH_LIMIT per press; press again for the rest)."""
    status = 200
    send_form = SendInvitationsForm(formdata=None)
    refusal = None
    if request.method == "POST":
        send_form = SendInvitationsForm()
        audience_form = send_form
        if send_form.validate():
            audience = send_form.audience()
            try:
                run = invitation_messages.send_invitations(audience, current_actor())
            except Refused as problem:
                refusal, status = problem, problem.status
            else:
                flash(ngettext("Their code is on its way to %(num)s patient.",
                               "Their code is on its way to %(num)s patients.", len(run.sent)))
                if run.remaining:
                    flash(ngettext("%(num)s more patient is in this audience: press again to send to them.",
                                   "%(num)s more patients are in this audience: press again to send to them.",
                                   run.remaining))
                return redirect(url_for("webhooks.invitations", not_within_days=audience.not_within_days,
                                        enrolled_within_days=audience.enrolled_within_days), code=303)
        else:
            status = 422
    else:
        audience_form = InvitationAudienceForm(request.args)
        if request.args and not audience_form.validate():
            status = 422
    preview = None
    if not (audience_form.enrolled_within_days.errors or audience_form.not_within_days.errors):  # confirm aside
        audience = audience_form.audience()
        preview = invitation_messages.preview(audience)
        if request.method == "GET":
            send_form.not_within_days.data = audience.not_within_days
            send_form.enrolled_within_days.data = audience.enrolled_within_days
    return render_template("webhooks/invitations.html", audience_form=audience_form, send_form=send_form,
                           preview=preview, refusal=refusal, languages=notifications.LANGUAGE_NAMES,
                           batch_limit=invitation_messages.BATCH_LIMIT), status
