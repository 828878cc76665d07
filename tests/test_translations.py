"""Chinese and English: every string people read is marked for translation and has its zh_CN text.

The template check reads each template as Jinja's lexer does: text outside ``{{ }}``/``{% %}`` and outside
``{% trans %}`` blocks, and the attributes people read (title, placeholder, alt, aria-label, button
values), must not contain words. Strings in Python are marked by hand (``_()``/``lazy_gettext``) and
their translations are checked through the catalogue, like the templates' marked strings.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from jinja2 import Environment
from jinja2.ext import i18n

from clinic import catalog

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "templates").rglob("*.html"))
EXPRESSION = "\x00"  # stands for a {{ }} or {% %} in the text
# Attributes whose values people read or hear.
READ_ATTRIBUTES = {"title", "placeholder", "alt", "aria-label", "aria-description", "label", "data-confirm",
                   "data-copied", "data-share-title", "data-share-text"}
# Words that are the same in every language (formats, standards, units).
UNTRANSLATED_WORDS = {"QR", "CSV", "PDF", "API", "URL", "HMAC", "SHA", "JSON", "OpenAPI", "HTTP", "HTTPS",
                      "A4", "A5", "A6", "SVG", "PNG", "JPEG", "ID", "HIS", "EMR", "VIP", "mm", "px", "POST", "GET",
                      "X", "WeChat", "SMS", "htmx", "Bearer", "Idempotency", "Key", "Authorization"}
WORD = re.compile(r"[A-Za-z\u3400-\u9fff][A-Za-z\u3400-\u9fff'’-]*")


class _ReadableText(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skipping += 1
        attributes = dict(attrs)
        for name, value in attrs:
            readable = name in READ_ATTRIBUTES or (
                name == "value" and tag in ("input", "button")
                and attributes.get("type") in ("submit", "button", "reset"))
            if readable and value:
                self.found.append(value)

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skipping:
            self._skipping -= 1

    def handle_data(self, data):
        if not self._skipping:
            self.found.append(data)


def untranslated_text(source: str) -> list[str]:
    """The pieces of a template's text that people read and that are not marked for translation."""
    env = Environment(extensions=[i18n])
    pieces, in_trans, after_block_begin = [], False, False
    for _line, kind, value in env.lex(source):
        if kind == "whitespace":
            continue
        if kind == "block_begin":
            after_block_begin = True
            pieces.append(EXPRESSION)
            continue
        if after_block_begin and kind == "name":
            if value == "trans":
                in_trans = True
            elif value == "endtrans":
                in_trans = False
        after_block_begin = False
        if kind == "data" and not in_trans:
            pieces.append(value)
        elif kind in ("variable_begin",):
            pieces.append(EXPRESSION)
    parser = _ReadableText()
    parser.feed("".join(pieces))
    parser.close()
    found = []
    for text in parser.found:
        words = [word for word in WORD.findall(text.replace(EXPRESSION, " ")) if word not in UNTRANSLATED_WORDS]
        if words:
            found.append(" ".join(text.replace(EXPRESSION, "…").split()))
    return found


def test_the_check_sees_unmarked_text_and_accepts_marked_text():
    assert untranslated_text('<p>Hello {{ name }}</p>') == ["Hello …"]
    assert untranslated_text('<input placeholder="Scan the code">') == ["Scan the code"]
    assert untranslated_text('<button type="submit">{{ _("Save") }}</button>') == []
    assert untranslated_text("{% trans %}Hello {{ name }}{% endtrans %}") == []
    assert untranslated_text("<p>门诊</p>") == ["门诊"]
    assert untranslated_text("<script>var x = 'words';</script><p>PDF · QR</p>") == []


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: str(path.relative_to(ROOT / "templates")))
def test_every_template_string_is_marked_for_translation(template):
    unmarked = untranslated_text(template.read_text(encoding="utf-8"))
    assert not unmarked, "not marked for translation:\n" + "\n".join(unmarked)


def test_every_marked_string_has_a_zh_CN_translation():
    problems = catalog.problems("zh_Hans_CN")
    assert not problems, f"{len(problems)} problems (python -m clinic.catalog check):\n" + "\n".join(problems)


def test_the_compiled_catalogue_is_up_to_date():
    """The .mo the app loads is compiled from the committed .po (`make test`/`make run` compile it)."""
    po = catalog.catalogue_path("zh_Hans_CN")
    mo = po.with_suffix(".mo")
    assert mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime, "run: make translations"


# Four English words in a row: what a merge leaves when it glues a new entry's msgid onto the translation above it
# (its `msgid ""` line outside the conflict), which then still "has a translation" and compiles.
ENGLISH_RUN = re.compile(r"[A-Za-z]{3,}(?:[ ,;:]+[a-z]{2,}){3}")


def test_no_chinese_translation_carries_a_run_of_english_words():
    from clinic.catalog import _read, catalogue_path

    glued = []
    for message in _read(catalogue_path("zh_Hans_CN"), "zh_Hans_CN"):
        translations = message.string if isinstance(message.string, (list, tuple)) else [message.string]
        glued += [f"{message.id!r}: {text!r}" for text in translations if text and ENGLISH_RUN.search(text)]
    assert not glued, "\n".join(glued)
