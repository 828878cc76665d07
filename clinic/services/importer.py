"""Importing existing patients from a CSV file: a preview that writes nothing, then one transaction.

Clinics keep their patient lists in Excel or export them from their HIS. A file is read as UTF-8
(with or without the BOM that Excel writes for "CSV UTF-8"), else as GB18030, the encoding a Chinese
Excel uses for plain "CSV" (it contains GBK). Each row is checked by the rules of enrolment at the
desk (:meth:`PatientDetails.from_form`), then against the rest of the file, then against the
patients already registered with one query per column: never one per row.

The import never trusts the browser with the file: the upload is stored here between preview and
confirm, read again, checked again inside the write transaction, and refused as a whole when the
rows it would create are not the rows the manager saw in the preview.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from clinic.extensions import db
from clinic.models import Patient
from clinic.services import audit
from clinic.services.codes import format_code, generate_personal_code
from clinic.services.errors import Refused, stored_by_the_server
from clinic.services.patients import FieldErrors, PatientDetails, new_progress_token
from clinic.services.posters import MAX_POSTERS, posters_pdf
from clinic.services.text import spreadsheet_cell
from clinic.services.transaction import Actor, atomic
from clinic.services.urls import invite_url, progress_url

MAX_BYTES = 2 * 1024 * 1024
MAX_ROWS = 5000
TEMPLATE_HEADER = ("name", "phone", "external_id")
DELIMITERS = {",": _l("comma"), ";": _l("semicolon"), "\t": _l("tab")}
TOO_LARGE = _l("The file is larger than %(megabytes)s MB: split it into smaller files "
               "(at most %(rows)s patients each).",
               megabytes=MAX_BYTES // (1024 * 1024), rows=f"{MAX_ROWS:,}")
COLUMN_LABELS = {"full_name": _l("name"), "phone": _l("phone number"), "external_id": _l("record number")}

# Header cells are compared lower-cased, without spaces, underscores, dashes, dots, # or slashes.
HEADER_ALIASES = {
    **dict.fromkeys(("name", "fullname", "patientname", "patient", "姓名", "名字", "患者姓名", "病人姓名"),
                    "full_name"),
    **dict.fromkeys(("phone", "phonenumber", "mobile", "mobilephone", "mobilenumber", "cellphone", "tel",
                     "telephone", "电话", "手机", "手机号", "手机号码", "电话号码", "联系电话"), "phone"),
    **dict.fromkeys(("externalid", "recordnumber", "recordno", "mrn", "medicalrecordnumber", "patientid",
                     "病历号", "病历号码", "病历编号", "病案号"), "external_id"),
}
_HEADER_NOISE = re.compile(r"[\s_\-.#/]+")

UPLOAD_TOKEN = re.compile(r"\A[0-9a-f]{32}\Z")  # secrets.token_hex(16): 128 random bits
UPLOAD_KEEP_SECONDS = 24 * 3600  # uploads and the list of patients a batch created (for its posters)
LINKS_KEEP_SECONDS = 15 * 60  # the raw progress tokens, like a welcome slip's (clinic.web.fresh_links)
_SUFFIXES = {"upload": ".csv", "claimed": ".importing", "batch": ".batch.json", "links": ".links.json"}


def _file_refusal(reason: str, message: str, status: int = 400) -> Refused:
    return Refused(reason, message, field="file", status=status)


@dataclass(frozen=True)
class Problem:
    """Why a row will not be imported. ``kind``: invalid, duplicate, existing or extra_values."""

    kind: str
    field: str | None
    message: str


@dataclass
class PreviewRow:
    line: int  # the line of the file where the row starts, as a text editor counts
    values: dict[str, str]  # as written in the file
    details: PatientDetails | None  # None when a value breaks the rules of enrolment
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.details is not None and not self.problems


@dataclass
class ImportPreview:
    encoding: str
    delimiter: str
    columns: dict[str, str]  # field -> the header cell it was read from
    ignored_columns: list[str]
    rows: list[PreviewRow]
    empty_rows: int  # skipped: rows with nothing in them

    @property
    def good_rows(self) -> list[PreviewRow]:
        return [row for row in self.rows if row.ok]

    @property
    def problem_rows(self) -> list[PreviewRow]:
        return [row for row in self.rows if not row.ok]

    @property
    def counts(self) -> dict[str, int]:
        """Rows in all, rows to import, rows with problems, and rows with each kind of problem."""
        counts = {"rows": len(self.rows), "ok": 0, "problems": 0, "invalid": 0, "duplicate": 0, "existing": 0,
                  "extra_values": 0, "empty": self.empty_rows}
        for row in self.rows:
            counts["ok" if row.ok else "problems"] += 1
            for kind in {problem.kind for problem in row.problems}:
                counts[kind] += 1
        return counts

    @property
    def delimiter_name(self) -> str:
        return DELIMITERS[self.delimiter]

    @property
    def fingerprint(self) -> str:
        """Names the set of rows the import would create, so a confirm can insist on what was shown."""
        lines = ",".join(str(row.line) for row in self.good_rows)
        return hashlib.sha256(lines.encode()).hexdigest()[:32]


def preview_import(data: bytes) -> ImportPreview:
    """Read and check a CSV file of patients without writing anything.

    Refuses the file as a whole (:class:`Refused`, status 4xx) when it is not a CSV file we can
    read; otherwise each row says what would stop it from being imported.
    """
    preview = read_patient_csv(data)
    mark_existing_patients(preview)
    return preview


def read_patient_csv(data: bytes) -> ImportPreview:
    """Decode, find the header and check each row against the enrolment rules and the rest of the file."""
    text, encoding = _decode(data)
    if not text.strip():
        raise _file_refusal("empty_file", _("The file is empty."))
    delimiter, header = _choose_delimiter(text)
    positions = _header_positions(header)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[PreviewRow] = []
    empty_rows = 0
    line, header_read = 1, False
    try:
        for cells in reader:
            start, line = line, reader.line_num + 1  # a quoted value may span lines
            blank = not any(cell.strip() for cell in cells)
            if not header_read:  # the header, or a blank line above it
                header_read = not blank
                continue
            if blank:
                empty_rows += 1
                continue
            if len(rows) == MAX_ROWS:
                raise _file_refusal("too_many_rows", _("The file has more than %(rows)s patients: split it into "
                                                      "smaller files and import them one by one.",
                                                      rows=f"{MAX_ROWS:,}"), status=413)
            rows.append(_check_row(start, cells, positions, len(header), delimiter))
    except csv.Error as error:
        raise _file_refusal("not_csv", _("Line %(line)s of the file cannot be read as CSV (%(error)s). "
                                          "Save the sheet again as CSV and upload that file.", line=line,
                                          error=error)) from None
    if not rows:
        raise _file_refusal("no_rows", _("The file has a header row but no patients below it."))
    _mark_duplicates(rows)
    return ImportPreview(encoding=encoding, delimiter=delimiter,
                         columns={name: header[index].strip() for name, index in positions.items()},
                         ignored_columns=[cell.strip() for index, cell in enumerate(header)
                                          if index not in positions.values() and cell.strip()],
                         rows=rows, empty_rows=empty_rows)


def _decode(data: bytes) -> tuple[str, str]:
    """The text of the file and the name of its encoding, or a refusal a manager can act on."""
    if len(data) > MAX_BYTES:
        raise _file_refusal("too_large", str(TOO_LARGE), status=413)
    if not data:
        raise _file_refusal("empty_file", _("The file is empty."))
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise _file_refusal("spreadsheet", _("This is an Excel workbook, not a CSV file. In Excel choose "
                                              "File › Save As › “CSV UTF-8 (Comma delimited)” and upload that "
                                              "file."), status=415)
    if data.startswith(codecs.BOM_UTF8):
        return _decode_as(data[len(codecs.BOM_UTF8):], "utf-8", "UTF-8 with BOM"), "UTF-8 with BOM"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode Text"
        return _decode_as(data, "utf-16", "UTF-16"), "UTF-16"
    if b"\x00" in data:
        raise _file_refusal("binary", _("This is not a CSV file: it holds binary data. "
                                         "Save the sheet as CSV and upload that file."), status=415)
    for codec, name in (("utf-8", "UTF-8"), ("gb18030", "GB18030 (Chinese Excel)")):
        try:
            return data.decode(codec), name
        except UnicodeDecodeError:
            continue
    raise _file_refusal("bad_encoding", _("The file's characters cannot be read: it is neither UTF-8 nor "
                                           "GB18030/GBK. In Excel choose “CSV UTF-8 (Comma delimited)” when "
                                           "saving."), status=415)


def _decode_as(data: bytes, codec: str, name: str) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        raise _file_refusal("bad_encoding", _("The file says it is %(encoding)s but is not: save it again as "
                                               "“CSV UTF-8 (Comma delimited)”.", encoding=name),
                            status=415) from None


def _first_row(text: str, delimiter: str) -> list[str]:
    try:
        for cells in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if any(cell.strip() for cell in cells):
                return cells
    except csv.Error:
        pass
    return []


def _header_key(cell: str) -> str:
    return _HEADER_NOISE.sub("", cell.strip().lower())


def _choose_delimiter(text: str) -> tuple[str, list[str]]:
    """The delimiter whose first row names the most known columns (ties: the most cells), and that row."""
    best = max(((delimiter, _first_row(text, delimiter)) for delimiter in DELIMITERS),
               key=lambda pair: (len({HEADER_ALIASES.get(_header_key(cell)) for cell in pair[1]} - {None}),
                                 len(pair[1])))
    return best


def _header_positions(header: list[str]) -> dict[str, int]:
    """Which column holds each field; refuses a file without a usable header row."""
    positions: dict[str, int] = {}
    for index, cell in enumerate(header):
        name = HEADER_ALIASES.get(_header_key(cell))
        if name is None:
            continue
        if name in positions:
            raise _file_refusal("ambiguous_header", _(
                "Two columns could be the %(column)s: “%(first)s” and “%(second)s”. Delete or rename one of them.",
                column=COLUMN_LABELS[name], first=header[positions[name]].strip(), second=cell.strip()))
        positions[name] = index
    if "full_name" not in positions or len(positions) < 2:
        raise _file_refusal("no_header", _("The first row must name the columns: name, and phone or external_id "
                                            "(or 姓名, 手机, 病历号). Download the template to see how."))
    return positions



def _check_row(line: int, cells: list[str], positions: dict[str, int], columns: int, delimiter: str) -> PreviewRow:
    values = {name: cells[index] if index < len(cells) else "" for name, index in positions.items()}
    problems = []
    if any(cell.strip() for cell in cells[columns:]):
        problems.append(Problem("extra_values", None, _(
            "This row has more values than the header has columns: is there a %(delimiter)s in a name without "
            "quotes around it?", delimiter=DELIMITERS[delimiter])))
    try:
        details = PatientDetails.from_form(full_name=values["full_name"], phone=values.get("phone"),
                                           external_id=values.get("external_id"))
    except FieldErrors as errors:
        details = None
        problems += [Problem("invalid", name, message) for name, message in errors.errors.items()]
    return PreviewRow(line=line, values=values, details=details, problems=problems)


def _mark_duplicates(rows: list[PreviewRow]) -> None:
    """The second and later rows with a phone or record number seen earlier in the file."""
    first_line: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.details is None:
            continue
        for name in ("phone", "external_id"):
            value = getattr(row.details, name)
            if not value:
                continue
            seen = first_line.setdefault((name, value), row.line)
            if seen != row.line:
                row.problems.append(Problem("duplicate", name, _("Same %(column)s as line %(line)s.",
                                                                   column=COLUMN_LABELS[name], line=seen)))


def mark_existing_patients(preview: ImportPreview) -> None:
    """Rows whose phone or record number is already registered: two queries for the whole file."""
    for name, column in (("phone", Patient.phone), ("external_id", Patient.external_id)):
        values = {getattr(row.details, name) for row in preview.rows if row.details and getattr(row.details, name)}
        if not values:
            continue
        taken = set(db.session.scalars(select(column).where(column.in_(values))))
        for row in preview.rows:
            if row.details is not None and getattr(row.details, name) in taken:
                row.problems.append(Problem("existing", name, _("Already a patient: this %(column)s is registered.",
                                                                column=COLUMN_LABELS[name])))


@dataclass(frozen=True)
class ImportedPatient:
    id: int
    full_name: str
    personal_code: str
    progress_token: str  # shown once: only its hash is stored


@dataclass
class ImportResult:
    patients: list[ImportedPatient]
    preview: ImportPreview


def import_patients(data: bytes, actor: Actor, *, expected: str | None = None) -> ImportResult:
    """Create a patient, with a personal code and a progress link, for every good row: all or none.

    The file is checked again inside the write transaction. ``expected`` is the
    :attr:`ImportPreview.fingerprint` the manager confirmed: when the rows to create differ
    (someone registered one of these patients since), nothing is imported. A patient enrolled
    by another desk during the insert breaks a unique constraint and also rolls everything back.
    """
    preview = read_patient_csv(data)
    with atomic():
        mark_existing_patients(preview)
        if expected is not None and preview.fingerprint != expected:
            raise Refused("preview_changed", _("Nothing was imported: the rows that can be imported changed since "
                                                "the preview (a patient in the file was registered meanwhile). "
                                                "Check the new preview and confirm again."), status=409)
        good = preview.good_rows
        if not good:
            raise Refused("nothing_to_import", _("Nothing was imported: no row of the file can be imported."))
        codes = _unused_personal_codes(len(good))
        tokens = [new_progress_token() for _ in good]
        try:
            # Rows come back in any order (ordered RETURNING would cost a statement per row on SQLite):
            # each one is matched to its row by its personal code.
            id_by_code = dict(db.session.execute(insert(Patient).returning(Patient.personal_code, Patient.id), [{
                "full_name": row.details.full_name, "display_name": row.details.display_name,
                "phone": row.details.phone, "external_id": row.details.external_id,
                "name_on_posters": False, "personal_code": code, "progress_token_hash": token_hash,
                "enrolled_by_id": actor.staff_id, "branch_id": actor.branch_id,
            } for row, code, (_token, token_hash) in zip(good, codes, tokens)]).all())
        except IntegrityError:
            raise Refused("import_conflict", _("Nothing was imported: a patient in the file was registered at the "
                                                "desk during the import. Check the new preview and confirm again."),
                          status=409) from None
        ids = [id_by_code[code] for code in codes]
        audit.record_for_each_patient("patient.enrolled", actor, ids, source="import")
        audit.record("patients.imported", actor, count=len(ids), skipped=len(preview.rows) - len(ids),
                     encoding=preview.encoding)
    return ImportResult(patients=[ImportedPatient(id=patient_id, full_name=row.details.full_name,
                                                  personal_code=code, progress_token=token)
                                  for patient_id, row, code, (token, _hash) in zip(ids, good, codes, tokens)],
                        preview=preview)


def _unused_personal_codes(count: int) -> list[str]:
    """``count`` different personal codes nobody holds: one query per round, and a second round is rare."""
    codes: set[str] = set()
    while len(codes) < count:
        fresh = {generate_personal_code() for _ in range(count - len(codes))} - codes
        codes |= fresh - set(db.session.scalars(select(Patient.personal_code)
                                                .where(Patient.personal_code.in_(fresh))))
    return list(codes)


def template_csv() -> str:
    """The header row a file needs, with the BOM that makes Excel read it as UTF-8."""
    return "\ufeff" + ",".join(TEMPLATE_HEADER) + "\r\n"


# The upload between preview and confirm, and what an import leaves for its result page, live in
# IMPORT_FOLDER under a 128-bit random token: <token>.csv (the upload), <token>.importing (while the
# import runs), <token>.batch.json (the patients created, for their posters) and <token>.links.json
# (the raw progress tokens, deleted when downloaded or after LINKS_KEEP_SECONDS). The session cannot
# hold them (2,000 links are ~100 KB against a 4 KB cookie) and a worker's memory is not shared with
# the other workers, so this folder must be shared by every worker, like BATCH_FOLDER.


def _file(folder: str, token: str, kind: str) -> Path:
    """The path for ``token``; anything but 32 lower-case hex digits is unknown, so no path can be smuggled in."""
    if not isinstance(token, str) or not UPLOAD_TOKEN.match(token):
        raise Refused("unknown_import", _("This import is unknown or has expired: upload the file again."), status=404)
    return Path(folder) / f"{token}{_SUFFIXES[kind]}"


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by this user only, replacing ``path`` in one step."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def sweep(folder: str | Path) -> int:
    """Delete what has outlived its use: progress links after 15 minutes, everything else after a day.

    Run on every upload, whenever an import's result or links are read, and from cron (``flask prune-imports``):
    were it run on uploads only, the next import could be months away, and the raw progress tokens and the
    uploaded files (names and phone numbers) would stay on disk until then. Returns how many files went.
    """
    now, deleted = time.time(), 0
    try:
        paths = list(Path(folder).iterdir())
    except FileNotFoundError:  # nothing was ever uploaded
        return 0
    for path in paths:
        # <token>.links.json, the .links.taken being downloaded, and their half-written temporary files
        keep = LINKS_KEEP_SECONDS if ".links." in path.name else UPLOAD_KEEP_SECONDS
        try:
            if path.stat().st_mtime < now - keep:
                path.unlink()
                deleted += 1
        except FileNotFoundError:
            pass
    return deleted


def store_upload(folder: str, data: bytes) -> str:
    """Keep an uploaded file until it is confirmed; returns its token."""
    path = Path(folder)
    token = secrets.token_hex(16)
    with stored_by_the_server(path):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        sweep(path)
        _write_private(_file(folder, token, "upload"), data)
    return token


def read_upload(folder: str, token: str) -> bytes:
    try:
        return _file(folder, token, "upload").read_bytes()
    except FileNotFoundError:
        raise Refused("unknown_import", _("This file was already imported, or its preview has expired: "
                                           "upload it again."), status=404) from None


def import_upload(folder: str, token: str, actor: Actor, *, expected: str | None) -> ImportResult:
    """Import a stored upload once, and keep what its result page offers.

    The upload is claimed by renaming it, so a double-clicked Confirm imports once; when the
    import is refused the upload is put back, to be previewed and confirmed again.
    """
    upload, claimed = _file(folder, token, "upload"), _file(folder, token, "claimed")
    try:
        os.rename(upload, claimed)
    except FileNotFoundError:
        raise Refused("unknown_import", _("This file was already imported, or its preview has expired: "
                                           "upload it again."), status=404) from None
    try:
        result = import_patients(claimed.read_bytes(), actor, expected=expected)
    except BaseException:
        os.rename(claimed, upload)
        raise
    _write_private(_file(folder, token, "batch"), json.dumps({
        "patient_ids": [patient.id for patient in result.patients],
        "skipped": len(result.preview.rows) - len(result.patients)}).encode())
    _write_private(_file(folder, token, "links"), json.dumps(
        [[patient.id, patient.full_name, patient.personal_code, patient.progress_token]
         for patient in result.patients]).encode())
    claimed.unlink()
    return result


@dataclass(frozen=True)
class ImportBatch:
    token: str
    patient_ids: list[int]
    skipped: int
    links_available: bool

    @property
    def poster_parts(self) -> list[tuple[int, int, int]]:
        """(part, first, last) for each PDF of at most MAX_POSTERS posters, numbered from 1."""
        return [(number, start + 1, min(start + MAX_POSTERS, len(self.patient_ids)))
                for number, start in enumerate(range(0, len(self.patient_ids), MAX_POSTERS), start=1)]


def import_batch(folder: str, token: str) -> ImportBatch:
    """What an import created, for its result page (kept a day)."""
    sweep(folder)
    try:
        saved = json.loads(_file(folder, token, "batch").read_text())
    except FileNotFoundError:
        raise Refused("unknown_import", _("This import is unknown or too old: find its patients on the Patients "
                                           "page."), status=404) from None
    links = _file(folder, token, "links")
    return ImportBatch(token=token, patient_ids=saved["patient_ids"], skipped=saved["skipped"],
                       links_available=links.exists() and links.stat().st_mtime >= time.time() - LINKS_KEEP_SECONDS)


def batch_posters_pdf(folder: str, token: str, part: int) -> bytes:
    """Posters (A4, classic) for one part of an import's patients, in file order."""
    ids = import_batch(folder, token).patient_ids[(part - 1) * MAX_POSTERS:part * MAX_POSTERS] if part >= 1 else []
    if not ids:
        raise Refused("not_found", _("There is no such part of this import."), status=404)
    patients = {patient.id: patient for patient in db.session.scalars(select(Patient).where(
        Patient.id.in_(ids), Patient.erased_at.is_(None)))}  # an erased patient's code invites nobody
    return posters_pdf([patients[patient_id] for patient_id in ids if patient_id in patients], "classic", "A4")


def forget_patient(folder: str | Path, patient_id: int) -> int:
    """Drop an erased patient's row (name, raw progress token) from the imports' kept progress links; returns how
    many files changed. Each file is claimed by renaming it, as a download does, and keeps its age."""
    changed = 0
    try:
        paths = [path for path in Path(folder).iterdir() if path.name.endswith(_SUFFIXES["links"])]
    except FileNotFoundError:
        return 0
    for path in paths:
        claimed = path.with_name(f".{path.name}.erasing-{secrets.token_hex(4)}")
        try:
            os.rename(path, claimed)  # a download at this moment finds it gone (410): the links are issued again
        except FileNotFoundError:
            continue
        try:
            rows = json.loads(claimed.read_text())
            kept = [row for row in rows if row[0] != patient_id]
            if kept != rows:
                age = claimed.stat()
                _write_private(claimed, json.dumps(kept).encode())
                os.utime(claimed, (age.st_atime, age.st_mtime))
                changed += 1
        finally:
            try:
                os.rename(claimed, path)
            except FileNotFoundError:  # a sweep took it meanwhile: it was past its 15 minutes
                pass
    return changed


def take_progress_links_csv(folder: str, token: str, actor: Actor) -> str:
    """The import's progress links as a CSV, once: the raw tokens are deleted as they are read.

    Columns: name, personal code, invite URL, progress URL; UTF-8 with a BOM for Excel. The
    download is audited like every export.
    """
    sweep(folder)
    links, taken = _file(folder, token, "links"), _file(folder, token, "links").with_suffix(".taken")
    try:
        os.rename(links, taken)  # one download wins, even when two arrive at once
    except FileNotFoundError:
        raise Refused("links_gone", _("The progress links of this import were already downloaded or have expired "
                                       "(they are kept 15 minutes). Issue a new link from a patient's page if "
                                       "needed."), status=410) from None
    expired = Refused("links_gone", _("The progress links of this import have expired (they are kept "
                                       "15 minutes). Issue a new link from a patient's page if needed."), status=410)
    try:
        if taken.stat().st_mtime < time.time() - LINKS_KEEP_SECONDS:
            raise expired
        rows = json.loads(taken.read_text())
    except FileNotFoundError:  # another request's sweep took it meanwhile: it was past its 15 minutes
        raise expired from None
    finally:
        taken.unlink(missing_ok=True)
    with atomic():
        audit.record("export.progress_links", actor, count=len(rows))
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(["name", "personal code", "invite URL", "progress URL"])
    for _patient_id, full_name, code, progress_token in rows:
        writer.writerow([spreadsheet_cell(full_name), format_code(code), invite_url(code),
                         progress_url(progress_token)])
    return out.getvalue()
