"""HTML to PDF with WeasyPrint, fetching nothing from the network.

Templates link their CSS and the clinic's logo with ordinary paths (``/static/…``,
``/uploads/…``), resolved against an internal base URL. The fetcher serves only the app's own
static files and the current logo, and refuses everything else (other hosts, ``file:``,
paths that climb out of the folders), as Indico does.

Paper is printed in the clinic's language (``Clinic.language``), whoever asks for it: a poster or a
card is read by the clinic's patients and their friends, not by the member of staff who prints it,
and a background job has no reader at all.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import unquote, urlsplit

from flask import current_app, render_template
from flask_babel import force_locale
from PIL import ImageFile
from weasyprint import HTML
from weasyprint.urls import URLFetcher, URLFetcherResponse

# Importing WeasyPrint switches on Pillow's LOAD_TRUNCATED_IMAGES for the whole process, so that a web page's broken
# image still prints. Every image in our PDFs is the app's own (QR codes, a logo checked at upload), and with the
# switch on, a truncated logo upload decoded as a half-grey picture and was accepted. Switched back off.
ImageFile.LOAD_TRUNCATED_IMAGES = False

INTERNAL_BASE_URL = "https://clinic.internal/"
INTERNAL_HOST = urlsplit(INTERNAL_BASE_URL).netloc


class AppFilesFetcher(URLFetcher):
    """Serve ``/static/…`` from the static folder and ``/uploads/<logo>``; refuse anything else."""

    def __init__(self, static_folder: str, upload_folder: str, allowed_uploads: set[str]):
        super().__init__(allowed_protocols={"https"}, allow_redirects=False)
        self.roots = {"static": Path(static_folder).resolve(), "uploads": Path(upload_folder).resolve()}
        self.allowed_uploads = allowed_uploads

    def fetch(self, url, headers=None):
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.netloc != INTERNAL_HOST:
            raise ValueError(f"refused to fetch {url!r}: PDFs use only the app's own files")
        folder, _, relative = unquote(parts.path).lstrip("/").partition("/")
        root = self.roots.get(folder)
        if root is None or (folder == "uploads" and relative not in self.allowed_uploads):
            raise ValueError(f"refused to fetch {url!r}")
        path = (root / relative).resolve()
        if root not in path.parents or not path.is_file():
            raise ValueError(f"refused to fetch {url!r}")
        mime_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return URLFetcherResponse(url, body=path.read_bytes(), headers={"Content-Type": mime_type})


def app_fetcher() -> AppFilesFetcher:
    from clinic.services.clinic_settings import current_clinic

    logo = current_clinic().logo_filename
    return AppFilesFetcher(current_app.static_folder, current_app.config["UPLOAD_FOLDER"],
                           {logo} if logo else set())


def html_to_pdf(html: str) -> bytes:
    return HTML(string=html, base_url=INTERNAL_BASE_URL, url_fetcher=app_fetcher()).write_pdf()


def in_print_language():
    """A context in which gettext, money and dates speak the clinic's language, as printed paper does.

    Callers that prepare text for a PDF (an offer, a reward) before :func:`render_pdf` wrap that in it too.
    """
    from clinic.i18n import clinic_language

    return force_locale(clinic_language())


def render_pdf(template: str, **context) -> bytes:
    """Render ``templates/pdf/<template>`` to PDF bytes, in the clinic's language."""
    from clinic.i18n import format_day

    with in_print_language():
        return html_to_pdf(render_template(template, format_day=format_day, **context))
