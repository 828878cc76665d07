"""Pages anyone may open: the invite page, the progress page and the patient's choices, a voucher, health, brand CSS.

The invite and progress pages are read on phones, often in a chat app's browser on a slow network:
one small stylesheet (static/css/public.css), the brand colours (/brand.css), no web fonts, and
script only where it does something (sharing the invite link, static/js/app.js). They speak the
clinic's language unless the reader switched (clinic/i18n.py).
"""

from __future__ import annotations

from flask import (Blueprint, Response, abort, current_app, jsonify, redirect, render_template, request,
                   send_from_directory, url_for)
from flask_babel import gettext as _

from clinic.extensions import csrf, db
from clinic.i18n import valid_language
from clinic.models._time import utcnow
from clinic.services import progress as progress_service
from clinic.services.patients import FieldErrors, patient_by_progress_token
from clinic.services.errors import Refused
from clinic.services import colours, consents, invitations, invite_opens, leads
from clinic.services import feedback as feedback_service
from clinic.services.clinic_settings import brand_colour, current_clinic
from clinic.services.codes import CodeKind, InvalidCode, parse_code
from clinic.services.database_trouble import DISK_FULL, NOT_WRITABLE, database_trouble
from clinic.services.rewards import quota_left
from clinic.services.transaction import Actor, check_database
from clinic.services.qr import qr_svg
from clinic.services.urls import invite_url, voucher_url
from clinic.services.vouchers import find_voucher
from clinic.web.helpers import form_value
from clinic.web.posters import FORMATS, poster_response

bp = Blueprint("public", __name__)

PRIVATE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}
# The honeypot: a field people never see (static/css/public.css hides it) and robots fill in.
TRAP = "website"
# The page background of static/css/public.css (--bg): the brand colour used as text must read on it.
PAGE_BACKGROUND = "#f5f6f8"


def _parse(raw: str, kind: CodeKind) -> str | None:
    try:
        parsed = parse_code(raw)
    except InvalidCode:
        return None
    return parsed.code if parsed.kind is kind else None


@bp.get("/")
def home():
    return render_template("public/home.html")


@bp.get("/r/<path:raw_code>")
def invite(raw_code: str):
    """The page a friend reaches from a poster or card QR (a stable, printed contract)."""
    try:
        found = invitations.invitation(raw_code)
    except Refused as refusal:
        return render_template("public/invite_unknown.html", message=refusal.message), 410
    if found is None:
        return render_template("public/invite_unknown.html"), 404
    page = _invite_page(found)
    invite_opens.count_open(found.referrer.id, invite_opens.CARD if found.card else invite_opens.PERSONAL)
    # The language comes from the cookie when the URL does not say: a cached page must match it.
    return page, 200, {"Cache-Control": "private, max-age=60", "Vary": "Cookie"}


def _invite_page(found: invitations.Invitation, *, sent=None, errors: dict[str, str] | None = None,
                 problem: str | None = None) -> str:
    """The invite page; with the call-back form as the friend sent it and what is wrong, when it was refused."""
    campaign = found.campaign if found.offer else None
    return render_template("public/invite.html", referrer=found.referrer, code=found.code, offer=found.offer,
                           card=found.card, campaign=campaign, places_left=quota_left(campaign),
                           call_backs=leads.takes_call_backs(found), sent=sent or {}, errors=errors or {},
                           problem=problem, trap=TRAP)


@bp.get("/r/<raw_code>/call-me")
def call_me_page(raw_code: str):
    """Back to the invite page's form: where the language switch of the thank-you or of a refused form leads
    (``?lang=``, a link relative to the page it is on). The code is not looked up here; the invite page does."""
    language = valid_language(request.args.get("lang"))
    return redirect(url_for("public.invite", raw_code=raw_code, **({"lang": language} if language else {}),
                            _anchor="call-me"), code=303)


@bp.post("/r/<raw_code>/call-me")
@csrf.exempt
def call_me(raw_code: str):
    """A friend's "Call me back" request (clinic/services/leads.py): the thank-you, or the page again with what is
    wrong (422; 409 when the code takes no requests now). Nothing is stored unless the whole form is right.

    Exempt from the CSRF check like the patient's choices: the friend's phone has no session (the invite page sets
    no cookie, and is cached a minute, so it could not carry a session's token either), and a request holds no
    authority that a forging site could borrow: it can only ask what anyone may ask on the open page, which the
    honeypot field and the per-client limit (clinic/web/limits.py) keep to people. The answer is the same for a
    patient's phone as for anyone's, and the referrer is shown only as the invite page shows them (masked).
    """
    try:
        found = invitations.invitation(raw_code)
    except Refused as refusal:
        return render_template("public/invite_unknown.html", message=refusal.message), 410, PRIVATE_HEADERS
    if found is None:
        return render_template("public/invite_unknown.html"), 404, PRIVATE_HEADERS
    errors, problem = {}, None
    try:
        # No address in the audit: the log is append-only, and the friend is nobody the clinic knows yet.
        leads.request_call_back(found, form_value("name"), form_value("phone"), form_value("consent"), form_value(TRAP))
    except FieldErrors as problems:
        errors, status = problems.errors, 422
    except Refused as refusal:
        if refusal.status == 404:  # the referrer was erased a moment ago: as the invite page would now say
            return render_template("public/invite_unknown.html"), 404, PRIVATE_HEADERS
        problem, status = refusal.message, refusal.status
    else:
        return render_template("public/call_me_thanks.html", code=found.code), 200, PRIVATE_HEADERS
    # What the friend typed comes back in the page (cut short: a huge post is not sent back whole), kept by no cache.
    sent = {field: form_value(field, max_length=200) for field in ("name", "phone", "consent")}
    return _invite_page(found, sent=sent, errors=errors, problem=problem), status, PRIVATE_HEADERS


@bp.get("/p/<token>")
def progress(token: str):
    """A patient's private progress page (a stable, printed contract)."""
    return _progress_page(token)


def _progress_page(token: str, *, status: int = 200, feedback_error: str | None = None):
    """The progress page; after a refused "How was your visit?" answer, with the reason in its card."""
    page = progress_service.progress_page(token)
    if page is None:
        return render_template("public/progress_unknown.html"), 404, PRIVATE_HEADERS
    return render_template("public/progress.html", page=page, token=token, feedback_error=feedback_error,
                           invite_link=invite_url(page.patient.personal_code)), status, PRIVATE_HEADERS


@bp.post("/p/<token>/feedback")
@csrf.exempt
def feedback(token: str):
    """The patient's 0-10 answer (clinic/services/feedback.py): 303 back to the card, which thanks them; or the page
    with the reason (422 a bad score, 409 answered in the last 90 days), nothing saved.

    Exempt from the CSRF check for the reasons of :func:`save_choices`: the unguessable token is the authority.
    """
    try:
        feedback_service.record_answer(token, feedback_service.parse_score(request.form.getlist("score")))
    except Refused as refusal:
        return _feedback_refused(token, refusal)
    return redirect(url_for("public.progress", token=token, _anchor="feedback"), code=303), PRIVATE_HEADERS


@bp.post("/p/<token>/feedback/call-me")
@csrf.exempt
def feedback_callback(token: str):
    """A detractor's "Yes, please call me": recorded for the manager's call list, then back to the card (303)."""
    try:
        feedback_service.request_callback(token)
    except Refused as refusal:
        return _feedback_refused(token, refusal)
    return redirect(url_for("public.progress", token=token, _anchor="feedback"), code=303), PRIVATE_HEADERS


def _feedback_refused(token: str, refusal: Refused):
    """An unknown (rotated, erased) link gets the progress page's 404 before anything is read from the form."""
    if refusal.status == 404:
        return render_template("public/progress_unknown.html"), 404, PRIVATE_HEADERS
    return _progress_page(token, status=refusal.status, feedback_error=refusal.message)


@bp.get("/p/<token>/choices")
def choices(token: str):
    """The patient's own privacy choices (clinic/services/consents.py), linked from their progress page."""
    patient = patient_by_progress_token(token)
    if patient is None:
        return render_template("public/progress_unknown.html"), 404, PRIVATE_HEADERS
    return _choices_page(patient, token, saved=request.args.get("saved") == "1")


@bp.post("/p/<token>/choices")
@csrf.exempt
def save_choices(token: str):
    """Save the patient's choices: 303 back to the page, which says so; or the page again with what is wrong (422).

    Exempt from the CSRF check, and only this public form: a patient's phone has no session, so there is no
    session token to check against, and none is needed. The authority is the unguessable token in the URL (192
    random bits), which a forging site cannot know (the patient pages send ``no-referrer``, so no link out of
    them tells it): whoever sends it holds the patient's own link, as for every GET of their pages. An unknown,
    rotated or erased link gets the progress page's 404 before anything is read from the form.
    """
    if patient_by_progress_token(token) is None:
        return render_template("public/progress_unknown.html"), 404, PRIVATE_HEADERS
    wanted, errors = _answers(request.form)
    if not errors:
        try:
            # No address: the audit log is append-only, and a patient's erasure could never take it out again.
            consents.save_own_choices(token, wanted, Actor(patient_link=True))
        except FieldErrors as problems:
            errors = problems.errors
        except Refused:  # the link was rotated or erased a moment ago
            return render_template("public/progress_unknown.html"), 404, PRIVATE_HEADERS
        else:
            return redirect(url_for("public.choices", token=token, saved=1), code=303), PRIVATE_HEADERS
    patient = patient_by_progress_token(token)
    if patient is None:
        return render_template("public/progress_unknown.html"), 404, PRIVATE_HEADERS
    return _choices_page(patient, token, sent=wanted, errors=errors, status=422)


ANSWERS = {"yes": True, "no": False}


def _answers(form) -> tuple[dict[str, bool], dict[str, str]]:
    """Each choice sent, as agreed or not, and the choices sent oddly (twice, or neither yes nor no).

    A choice not sent is left to the service, which knows which ones the page offered.
    """
    wanted, errors = {}, {}
    for choice in consents.CHOICES:
        values = form.getlist(choice)
        if len(values) == 1 and values[0] in ANSWERS:
            wanted[choice] = ANSWERS[values[0]]
        elif values:
            errors[choice] = _("Choose yes or no.")
    return wanted, errors


def _choices_page(patient, token: str, *, saved: bool = False, sent: dict[str, bool] | None = None,
                  errors: dict[str, str] | None = None, status: int = 200):
    """The page with the patient's choices as saved, or as they sent them when something was wrong."""
    now = consents.own_choices(patient)
    shown = {choice: getattr(now, choice) for choice in consents.CHOICES} | (sent or {})
    return render_template("public/choices.html", patient=patient, token=token, now=now, shown=shown,
                           errors=errors or {}, saved=saved), status, PRIVATE_HEADERS


@bp.get("/r/<raw_code>/qr.svg")
def invite_qr(raw_code: str):
    """The QR code of a personal code's invite link, shown on the patient's progress page.

    Its own URL, not drawn into the page: the page is private (``no-store``) and patients reopen it,
    while the QR of a code never changes, so the phone keeps it; and the page stays small. The URL
    holds only the code, which the invite link shows anyway. The code is not looked up: any
    well-formed personal code gets its QR, which says nothing about whether the code exists.
    """
    code = _parse(raw_code, CodeKind.PERSONAL)
    if code is None:
        abort(404)
    return _qr_image(invite_url(code), "public")


@bp.get("/v/<raw_code>/qr.svg")
def voucher_qr(raw_code: str):
    """The QR code of a voucher's link, for its holder to show at checkout from their progress page.

    Its own URL for the invite QR's reasons: the progress page of a patient with many vouchers stays small, and
    the many views that never tap "Show the QR code at checkout" encode no QR. Any well-formed voucher code gets
    its QR, without a lookup, so it says nothing about whether the voucher exists. Kept by the phone only
    (``private``): a voucher code is worth money to whoever holds it.
    """
    code = _parse(raw_code, CodeKind.BEARER)
    if code is None:
        abort(404)
    return _qr_image(voucher_url(code), "private")


def _qr_image(url: str, who_may_keep_it: str) -> Response:
    svg = str(qr_svg(url)).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    # A day: the link follows the clinic's public address, which a manager may change.
    return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": f"{who_may_keep_it}, max-age=86400"})


@bp.get(f"/p/<token>/poster.<{FORMATS}:kind>")
def progress_poster(token: str, kind: str):
    """The patient's own poster, PDF or phone image (stable, printed contracts); private like the page."""
    patient = patient_by_progress_token(token)
    if patient is None:
        return render_template("public/progress_unknown.html"), 404, PRIVATE_HEADERS
    return poster_response(patient, kind, PRIVATE_HEADERS)


@bp.get("/v/<path:raw_code>")
def voucher(raw_code: str):
    """Where a phone lands if someone scans a voucher QR: what it is worth, nothing personal."""
    code = _parse(raw_code, CodeKind.BEARER)
    found = find_voucher(code) if code else None
    if found is None:
        return render_template("public/voucher_unknown.html"), 404, PRIVATE_HEADERS
    return render_template("public/voucher.html", voucher=found,
                           status=found.status_at(utcnow())), 200, PRIVATE_HEADERS


@bp.get("/livez")
def livez():
    """The process answers (no database): a liveness probe, and the benchmark's hello-world ceiling."""
    return Response("ok\n", mimetype="text/plain", headers={"Cache-Control": "no-store"})


@bp.get("/healthz")
def healthz():
    """200 ``{"status": "ok"}`` when the database answers and, on SQLite, can be written (DESIGN.md); else 503."""
    try:
        check_database()
    except Exception as error:  # the database is down or cannot save: say so instead of a 500 page
        db.session.rollback()
        trouble = database_trouble(error)
        return jsonify(status="error", database=trouble if trouble in (DISK_FULL, NOT_WRITABLE) else "unreachable"), 503
    finally:
        db.session.rollback()
    return jsonify(status="ok")


def brand_palette(colour: str) -> dict[str, str]:
    """The brand colour and the colours that stay readable with it (WCAG AA, 4.5:1), as CSS variables.

    ``--on-brand``: text on the brand colour (white, or near-black on a light brand such as yellow);
    ``--brand-text``: the brand colour darkened until it reads as text, links and outlines on the page, and the
    dashboard's solid bars (paid);
    ``--brand-tint``: the dashboard's lighter bars (registered): the lightest tint of ``--brand-text`` that still
    stands out from the white card at 3:1 (WCAG 1.4.11), not the brand colour made transparent, which a pale or
    yellow brand leaves all but invisible; ``--on-brand-tint``: the figures written on those bars.
    """
    rgb = colours.parse_hex(colour)
    brand_text = colours.readable_on(rgb, colours.parse_hex(PAGE_BACKGROUND))
    brand_tint = colours.lightest_tint(brand_text, colours.WHITE)
    return {"--brand": colour.lower(), "--on-brand": colours.to_hex(colours.ink_on(rgb)),
            "--brand-text": colours.to_hex(brand_text), "--brand-tint": colours.to_hex(brand_tint),
            "--on-brand-tint": colours.to_hex(colours.ink_on(brand_tint))}


@bp.get("/brand.css")
def brand_css():
    """The clinic's brand colour as a CSS variable: a stylesheet, because the CSP forbids inline styles.

    ``?palette=1`` (the patient pages) adds the readable companions of :func:`brand_palette`.
    """
    colour = brand_colour()
    palette = brand_palette(colour) if request.args.get("palette") else {"--brand": colour}
    variables = " ".join(f"{name}: {value};" for name, value in palette.items())
    return Response(f":root {{ {variables} }}\n", mimetype="text/css", headers={"Cache-Control": "public, max-age=300"})


@bp.get("/uploads/<path:filename>")
def upload(filename: str):
    if filename != current_clinic().logo_filename:
        abort(404)
    return send_from_directory(current_app.config["UPLOAD_FOLDER"], filename, max_age=86400)
