"""Small pieces every view uses: htmx detection, fragments, the acting staff member, roles."""

from __future__ import annotations

from functools import wraps

from flask import abort, render_template, request
from flask_login import current_user, login_required

from clinic.services.transaction import Actor


def is_htmx() -> bool:
    """True for an htmx request that will swap the answer into part of the page."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-Boosted") != "true"


def render_fragment_or_page(fragment: str, page: str, status: int = 200, **context):
    """The fragment alone for htmx, else the full page that includes it."""
    return render_template(fragment if is_htmx() else page, **context), status


def current_actor() -> Actor:
    """Who is acting, from where, and for which branch: every service records it."""
    if not current_user.is_authenticated:
        return Actor(ip=request.remote_addr)
    return Actor(staff_id=current_user.id, ip=request.remote_addr, branch_id=current_user.branch_id)


def manager_required(view):
    """Managers only: a logged-in front-desk user gets 403, an anonymous visitor the login page."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_manager:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def form_value(name: str, max_length: int = 4096) -> str:
    """A submitted text field, cut to a sane length so that huge posts cannot hurt later code."""
    return (request.form.get(name) or "")[:max_length]
