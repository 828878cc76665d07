"""The translation catalogue: extract, merge, compile and check (``make translations``).

    python -m clinic.catalog build    extract every marked string (babel.cfg) into translations/messages.pot,
                                      bring translations/zh_Hans_CN/LC_MESSAGES/messages.po up to date with it,
                                      take in any translator files dropped in translations/zh_Hans_CN/incoming/,
                                      and compile messages.mo
    python -m clinic.catalog compile  only compile the committed .po files into .mo (make run and make test)
    python -m clinic.catalog check    print what is untranslated or wrong; exit 1 if anything is

The .po file is the source of truth and is committed; the .mo is compiled by `make` and never committed.
English is the source language, so it has no catalogue of its own.
"""

from __future__ import annotations

import sys
from io import BytesIO
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "translations"
TEMPLATE = TRANSLATIONS / "messages.pot"
# Babel's names of our languages other than English ("zh_CN" is zh_Hans_CN to Babel and Flask-Babel).
LOCALES = ("zh_Hans_CN",)
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "_l": None,
            "lazy_ngettext": (1, 2), "pgettext": ((1, "c"), 2), "lazy_pgettext": ((1, "c"), 2),
            "npgettext": ((1, "c"), 2, 3)}


def catalogue_path(locale: str) -> Path:
    return TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"


def extract() -> Catalog:
    """Every marked string in clinic/ (Python) and templates/ (Jinja), with where it is used."""
    template = Catalog(project="clinic-referral-portal", charset="utf-8", fuzzy=False)
    methods = [("clinic/**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"trimmed": "true", "extensions": "jinja2.ext.i18n"}}
    for filename, lineno, message, comments, context in extract_from_dir(
            str(ROOT), method_map=methods, options_map=options, keywords=KEYWORDS, comment_tags=("Translators:",),
            strip_comment_tags=True):
        template.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return template


def _read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle, locale=locale)


def _write(catalog: Catalog, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = BytesIO()
    write_po(buffer, catalog, width=100, sort_output=False, include_previous=False)
    path.write_bytes(buffer.getvalue())


def build() -> None:
    template = extract()
    _write(template, TEMPLATE)
    for locale in LOCALES:
        path = catalogue_path(locale)
        catalog = _read(path, locale) if path.exists() else Catalog(locale=locale, project=template.project)
        created = catalog.creation_date
        catalog.update(template, no_fuzzy_matching=True)
        catalog.creation_date = created  # the file changes only when its messages do
        catalog.fuzzy = False
        catalog.obsolete.clear()  # strings no longer used go; git keeps their history
        for incoming in sorted((TRANSLATIONS / locale / "incoming").glob("*.po")):
            for message in _read(incoming, locale):
                current = catalog.get(message.id, message.context)
                if message.id and current is not None and _translated(message):
                    current.string = message.string
                    current.flags.discard("fuzzy")
        _write(catalog, path)
    compile_all()


def compile_all() -> None:
    """Each committed .po into the .mo the app loads (no extraction: quick, for make run/test)."""
    for locale in LOCALES:
        path = catalogue_path(locale)
        with path.with_suffix(".mo").open("wb") as handle:
            write_mo(handle, _read(path, locale))


def _translated(message) -> bool:
    strings = message.string if isinstance(message.string, (tuple, list)) else (message.string,)
    return bool(strings) and all(strings) and "fuzzy" not in message.flags


def problems(locale: str = "zh_Hans_CN") -> list[str]:
    """Untranslated, fuzzy or inconsistent (placeholders) messages of the committed catalogue,
    and strings marked in the code that the catalogue does not have yet."""
    path = catalogue_path(locale)
    if not path.exists():
        return [f"{path.relative_to(ROOT)} does not exist: run make translations"]
    catalog = _read(path, locale)
    found = []
    for message in extract():
        if not message.id:
            continue
        have = catalog.get(message.id, message.context)
        where = ", ".join(f"{file}:{line}" for file, line in message.locations[:2])
        if have is None:
            found.append(f"not in the {locale} catalogue yet ({where}): {message.id!r}")
        elif not _translated(have):
            found.append(f"no {locale} translation ({where}): {message.id!r}")
    for message, errors in catalog.check():
        found += [f"{message.id!r}: {error}" for error in errors]
    return found


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "build"
    if command == "build":
        build()
        return 0
    if command == "compile":
        compile_all()
        return 0
    if command == "check":
        found = problems()
        print("\n".join(found) or "every marked string has a zh_CN translation")
        return 1 if found else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
