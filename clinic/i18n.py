"""Languages: English and Simplified Chinese, chosen per person (Flask-Babel).

Who reads which language:
- staff: their own choice (``Staff.language``), else the clinic's default language;
- patients and friends (/, /r/, /p/, /v/) and anyone not logged in: the clinic's language, or the one
  they picked with a page's language switch (``?lang=zh_CN``, remembered in a cookie for a year);
- the API: English unless the request's Accept-Language asks for Chinese — error *codes* are the
  stable contract, the messages are for people;
- outside a request (batch PDFs, CLI): the clinic's default language.

Money and dates follow the language: ``CN¥1,200.00`` / ``¥1,200.00``; ``2026-11-22`` / ``2026年11月22日``.
English keeps ISO dates: unambiguous at a desk that serves patients from anywhere.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from babel.dates import format_date
from flask import Flask, g, has_request_context, request
from flask_babel import Babel, get_locale, get_translations

LANGUAGES = {"en": "English", "zh_CN": "简体中文"}
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "lang"
LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600

# Catalogues live under Babel's full name of the locale (translations/zh_Hans_CN/LC_MESSAGES/messages.po):
# Flask-Babel looks them up by that name.
TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"

babel = Babel()


def valid_language(value: str | None) -> str | None:
    """``zh-CN``/``zh_cn``/``zh`` -> ``zh_CN``; anything else that is not ours -> None."""
    if not value:
        return None
    wanted = value.strip().replace("-", "_").lower()
    for language in LANGUAGES:
        if wanted == language.lower() or wanted == language.split("_")[0].lower():
            return language
    return None


def clinic_language() -> str:
    from clinic.services.clinic_settings import current_clinic

    return valid_language(current_clinic().language) or DEFAULT_LANGUAGE


def _staff_language() -> str | None:
    from flask_login import current_user

    if current_user and current_user.is_authenticated:
        return valid_language(getattr(current_user, "language", None))
    return None


def select_language() -> str:
    if not has_request_context():
        return clinic_language()
    if request.path.startswith("/api/"):
        asked = request.accept_languages.best_match(["en", "zh-CN", "zh"]) if request.accept_languages else None
        return valid_language(asked) or DEFAULT_LANGUAGE
    switched = valid_language(request.args.get("lang"))
    if switched:
        g.switched_language = switched
        return switched
    return _staff_language() or valid_language(request.cookies.get(LANGUAGE_COOKIE)) or clinic_language()


def current_language() -> str:
    """The language of what is being rendered now, as one of LANGUAGES' keys."""
    locale = get_locale()  # Babel's zh_CN is zh_Hans_CN
    if locale is None:
        return clinic_language()
    return valid_language(f"{locale.language}_{locale.territory}" if locale.territory else locale.language) \
        or DEFAULT_LANGUAGE


def format_day(day: date | None, language: str | None = None) -> str:
    """A calendar day for people: ``2026-11-22`` in English, ``2026年11月22日`` in Chinese."""
    if day is None:
        return ""
    language = language or current_language()
    if language == "en":
        return day.isoformat()
    return format_date(day, format="long", locale=language)


def format_moment(local: datetime, language: str | None = None) -> str:
    """A clinic-local date and time: ``2026-11-22 14:05`` / ``2026年11月22日 14:05``."""
    return f"{format_day(local.date(), language)} {local:%H:%M}"


def _translations():
    """This context's translations, found once.

    Kept where Flask-Babel itself keeps them (``g.babel_translations``), so that ``flask_babel.refresh()``
    (a language just changed) and ``force_locale`` (PDFs printed in the clinic's language) reset it.
    """
    translations = getattr(g, "babel_translations", None)
    if translations is None:
        translations = g.babel_translations = get_translations()
    return translations


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS))
    babel.init_app(app, locale_selector=select_language)
    # Templates call gettext a hundred times or more per page; Flask-Babel looks the context, the locale
    # and its cache up again on each call (about 30 µs). Looked up once per context instead.
    app.jinja_env.install_gettext_callables(
        gettext=lambda string: _translations().ugettext(string),
        ngettext=lambda singular, plural, n: _translations().ungettext(singular, plural, n),
        pgettext=lambda context, string: _translations().upgettext(context, string),
        npgettext=lambda context, singular, plural, n: _translations().unpgettext(context, singular, plural, n),
        newstyle=True,
    )
    # {% trans %} blocks collapse their whitespace, as babel.cfg extracts them.
    app.jinja_env.policies["ext.i18n.trimmed"] = True
    app.jinja_env.globals.update(LANGUAGES=LANGUAGES, current_language=current_language)

    @app.after_request
    def _remember_switched_language(response):
        switched = g.get("switched_language")
        if switched and request.cookies.get(LANGUAGE_COOKIE) != switched:
            response.set_cookie(LANGUAGE_COOKIE, switched, max_age=LANGUAGE_COOKIE_SECONDS, samesite="Lax",
                                httponly=True, secure=app.config.get("SESSION_COOKIE_SECURE", False))
        return response
