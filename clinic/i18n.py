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

import weakref
from datetime import date, datetime
from pathlib import Path

from babel.dates import format_date
from flask import Flask, current_app, g, has_request_context, request
from flask_babel import Babel, get_locale, get_translations
from flask_babel import _get_current_context as _babel_context
from jinja2 import Template, pass_context, pass_eval_context
from jinja2.environment import TemplateModule
from jinja2.ext import Extension
from jinja2.lexer import Token
from markupsafe import Markup

from clinic.web.sessions import cookies_secure

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

    if "_login_user" not in g and current_app.config["SESSION_COOKIE_NAME"] not in request.cookies:
        # No session cookie, so no one is logged in: a patient's phone opening its page. Flask-Login need
        # not look for a user (about 5 % of a public page), nor read the session (which adds Vary: Cookie).
        return None
    if current_user and current_user.is_authenticated:
        return valid_language(getattr(current_user, "language", None))
    return None


def select_language() -> str:
    if not has_request_context():
        return clinic_language()
    if request.path.startswith("/api/"):
        asked = request.accept_languages.best_match(["en", "zh-CN", "zh"]) if request.accept_languages else None
        return valid_language(asked) or DEFAULT_LANGUAGE
    # Most requests have no query string: werkzeug's args.get raises and catches a KeyError for a missing key.
    switched = valid_language(request.args.get("lang")) if request.query_string else None
    if switched:
        g.switched_language = switched
        return switched
    cookie = request.cookies[LANGUAGE_COOKIE] if LANGUAGE_COOKIE in request.cookies else None  # no KeyError raised
    return _staff_language() or valid_language(cookie) or clinic_language()


def sentence_gap() -> str:
    """What goes between two sentences said one after the other: a space in English, nothing in Chinese, whose full
    stop (。) closes the sentence ("…使用）。 推荐…" reads as a typo)."""
    return "" if current_language().startswith("zh") else " "


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

    Kept where Flask-Babel keeps its per-context state (``babel_translations`` in the namespace its
    ``_get_current_context()`` returns, ``g._flask_babel`` in Flask-Babel 4), because that is the attribute
    ``flask_babel.refresh()`` (a language just changed) and ``force_locale`` (PDFs printed in the clinic's
    language) reset. Until session 6 it was kept in ``g.babel_translations``, which neither resets: a PDF
    rendered after a page in the same request kept the page's language. tests/test_i18n_services.py checks
    this with force_locale; the function is private to Flask-Babel, and that test fails if it changes.
    """
    context = _babel_context()
    if context is None:
        return get_translations()
    translations = getattr(context, "babel_translations", None)
    if translations is None:
        translations = context.babel_translations = get_translations()
    return translations


def gettext(string: str, /, **variables) -> str:
    """``flask_babel.gettext`` for code on a request's path: the same text, the translations found once.

    Flask-Babel looks its context up through Flask's proxies four times a message, and the locale's name,
    to find the translations it already found; this asks once per context (_translations).
    """
    translated = _translations().ugettext(string)
    return translated % variables if variables else translated


def pgettext(context: str, string: str, /, **variables) -> str:
    """``flask_babel.pgettext``, as :func:`gettext`."""
    translated = _translations().upgettext(context, string)
    return translated % variables if variables else translated


class _FinishedMessages:
    """One catalogue's messages as templates print them: translated, made Markup and %-formatted, once.

    Jinja's "newstyle" gettext translates, wraps the result in Markup and %-formats it (even with no
    variables) on every call, behind three nested ``Context.call``s: about 10 µs a message, a sixth of a
    patient's page. A message without variables comes out the same every time for a given catalogue, so
    it is finished once per process and language; one with variables is translated and made Markup once,
    and only formatted (which escapes the variables) on each call. Only literal strings reach these
    functions, but the tables stop growing at ``LIMIT`` entries all the same.
    """

    LIMIT = 10_000

    def __init__(self, translations):
        self.translations = translations
        self.finished: dict[str, Markup] = {}
        self.unformatted: dict[str, Markup] = {}
        self.in_context: dict[tuple[str, str], Markup] = {}

    def gettext(self, string: str, variables: dict) -> Markup:
        if variables:
            markup = self.unformatted.get(string)
            if markup is None:
                markup = self._keep(self.unformatted, string, Markup(self.translations.ugettext(string)))
            return markup % variables
        finished = self.finished.get(string)
        if finished is None:
            finished = self._keep(self.finished, string, Markup(self.translations.ugettext(string)) % {})
        return finished

    def pgettext(self, context: str, string: str) -> Markup:
        finished = self.in_context.get((context, string))
        if finished is None:
            finished = self._keep(self.in_context, (context, string),
                                  Markup(self.translations.upgettext(context, string)) % {"context": context})
        return finished

    def _keep(self, table: dict, key, value: Markup) -> Markup:
        if len(table) < self.LIMIT:
            table[key] = value
        return value


_FINISHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _messages(evaluation) -> _FinishedMessages:
    """The finished messages of the language being rendered, found once per template render.

    Kept on the render's EvalContext, which its blocks and macros share: looking the translations up
    through Flask's and Flask-Babel's context proxies on every message cost more than the message.
    """
    try:
        return evaluation.clinic_messages
    except AttributeError:
        translations = _translations()
        messages = _FINISHED.get(translations)
        if messages is None:
            messages = _FINISHED.setdefault(translations, _FinishedMessages(translations))
        if not getattr(evaluation, "outlives_a_render", False):
            evaluation.clinic_messages = messages
        return messages


class MacroModuleAwareTemplate(Template):
    """Marks the EvalContext of imported macro modules as outliving a render (see _messages).

    ``{% from "_macros.html" import status %}`` (without context) evaluates the macros once per process
    in a module Jinja keeps on the template: its EvalContext serves every later render, whatever its
    language. A catalogue kept there printed the first request's language in every later page's status
    labels, until a worker was recycled. Macros of such a module look their catalogue up on each message.
    """

    def make_module(self, vars=None, shared=False, locals=None):
        context = self.new_context(vars, shared, locals)
        context.eval_ctx.outlives_a_render = True
        return TemplateModule(self, context)


# Templates' gettext family: what Jinja's newstyle i18n does (see jinja2.ext._make_new_gettext), the same
# results, from _FinishedMessages. Text without autoescape (plain-text templates) is translated and
# formatted as Jinja would, never as Markup. They take the EvalContext, not the Context: Jinja copies
# the whole Context for a pass_context call made in a block that sets variables, on every call. Their
# own parameters are positional-only: a template may pass a variable called num, string or context.
@pass_eval_context
def _template_gettext(evaluation, string: str, /, **variables) -> str:
    if evaluation.autoescape:
        return _messages(evaluation).gettext(string, variables)
    return _messages(evaluation).translations.ugettext(string) % variables


def _formatted(evaluation, translated: str, variables: dict) -> str:
    """As Jinja's newstyle gettext finishes a message: Markup when autoescaping, then %-formatted."""
    return (Markup(translated) if evaluation.autoescape else translated) % variables


@pass_eval_context
def _template_ngettext(evaluation, singular: str, plural: str, num: int, /, **variables) -> str:
    variables.setdefault("num", num)
    return _formatted(evaluation, _messages(evaluation).translations.ungettext(singular, plural, num), variables)


@pass_eval_context
def _template_pgettext(evaluation, string_context: str, string: str, /, **variables) -> str:
    if evaluation.autoescape and not variables:
        return _messages(evaluation).pgettext(string_context, string)
    variables.setdefault("context", string_context)
    return _formatted(evaluation, _messages(evaluation).translations.upgettext(string_context, string), variables)


@pass_eval_context
def _template_npgettext(evaluation, string_context: str, singular: str, plural: str, num: int, /,
                         **variables) -> str:
    variables.setdefault("context", string_context)
    variables.setdefault("num", num)
    translated = _messages(evaluation).translations.unpgettext(string_context, singular, plural, num)
    return _formatted(evaluation, translated, variables)


def _as_filter(message_function):
    """A template gettext function as a filter of the message's first literal (see LiteralMessages)."""
    @pass_context
    def message_filter(context, first: str, /, *arguments, **variables) -> str:
        return message_function(context.eval_ctx, first, *arguments, **variables)
    return message_filter


class LiteralMessages(Extension):
    """Compiles ``_("literal", …)`` (and gettext, ngettext, pgettext, npgettext) as a filter of the literal.

    Jinja compiles a call of a template global into ``context.call(…)``, which inspects the function for what
    to pass it on every call: about a quarter of a message's cost, and a patient's page prints two dozen.
    A filter is called directly. ``_("Hello %(name)s", name=n)`` becomes ``"Hello %(name)s"|_gettext_(name=n)``
    in the token stream, so the same function gets the same arguments and prints the same text. The filters
    take the Context, not the EvalContext: Jinja's optimizer calls an EvalContext filter of a constant at
    compile time, which would fix the message in the language of the page that first compiled the template.
    Left as calls: a message that is not a literal, a name after ``.`` or ``|`` (someone else's ``_``), and
    a call followed by ``.``, ``[`` or ``(``, which a filter's result cannot take in Jinja's grammar.
    """

    # The template function's name -> its filter's.
    FILTERS = {"_": "_gettext_", "gettext": "_gettext_", "ngettext": "_ngettext_", "pgettext": "_pgettext_",
               "npgettext": "_npgettext_"}

    def __init__(self, environment):
        super().__init__(environment)
        environment.filters.update({
            "_gettext_": _as_filter(_template_gettext), "_ngettext_": _as_filter(_template_ngettext),
            "_pgettext_": _as_filter(_template_pgettext), "_npgettext_": _as_filter(_template_npgettext)})

    def filter_stream(self, stream):
        tokens = list(stream)
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if self._literal_message_at(tokens, index):
                literal = tokens[index + 2]
                yield literal
                yield Token(token.lineno, "pipe", "|")
                yield Token(token.lineno, "name", self.FILTERS[token.value])
                yield tokens[index + 1]  # "("
                index += 4 if tokens[index + 3].type == "comma" else 3
                continue
            yield token
            index += 1

    def _literal_message_at(self, tokens, index: int) -> bool:
        token = tokens[index]
        if token.type != "name" or token.value not in self.FILTERS or index + 3 >= len(tokens):
            return False
        if index and tokens[index - 1].type in ("dot", "pipe"):
            return False
        if (tokens[index + 1].type, tokens[index + 2].type) != ("lparen", "string") \
                or tokens[index + 3].type not in ("comma", "rparen"):
            return False
        depth = 0
        for after in range(index + 1, len(tokens)):
            kind = tokens[after].type
            depth += (kind == "lparen") - (kind == "rparen")
            if depth == 0:
                return after + 1 < len(tokens) and tokens[after + 1].type not in ("dot", "lbracket", "lparen")
        return False


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS))
    babel.init_app(app, locale_selector=select_language)
    # Templates call gettext a hundred times or more per page; Flask-Babel looks the context, the locale
    # and its cache up again on each call (about 30 µs). Looked up once per context instead, and the
    # messages without variables are finished once per process (_FinishedMessages).
    app.jinja_env.install_gettext_callables(
        gettext=_template_gettext, ngettext=_template_ngettext, pgettext=_template_pgettext,
        npgettext=_template_npgettext, newstyle=True)
    # install_gettext_callables wraps each in Jinja's newstyle wrapper, and "_" calls through one more
    # alias: ours already are newstyle, so the template globals name them directly.
    app.jinja_env.globals.update(_=_template_gettext, gettext=_template_gettext, ngettext=_template_ngettext,
                                 pgettext=_template_pgettext, npgettext=_template_npgettext)
    app.jinja_env.add_extension(LiteralMessages)
    # {% trans %} blocks collapse their whitespace, as babel.cfg extracts them.
    app.jinja_env.policies["ext.i18n.trimmed"] = True
    app.jinja_env.globals.update(LANGUAGES=LANGUAGES, current_language=current_language, sentence_gap=sentence_gap)

    @app.after_request
    def _remember_switched_language(response):
        switched = g.get("switched_language")
        if switched and request.cookies.get(LANGUAGE_COOKIE) != switched:
            response.set_cookie(LANGUAGE_COOKIE, switched, max_age=LANGUAGE_COOKIE_SECONDS, samesite="Lax",
                                httponly=True, secure=cookies_secure(app))
        return response
