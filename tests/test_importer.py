"""CSV import of existing patients: the preview, the all-or-nothing import, and the pages around them."""

from __future__ import annotations

import csv
import io
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from clinic.extensions import db
from clinic.models import AuditEvent, Patient
from clinic.services import importer
from clinic.services.codes import has_valid_check
from clinic.services.errors import Refused
from clinic.services.patients import patient_by_progress_token
from clinic.services.transaction import Actor
from tests.conftest import Browser

EXISTING_PHONE, EXISTING_RECORD = "13811112222", "MRN-EXISTING"
FORMULA = '=HYPERLINK("http://evil.example","click")'


@contextmanager
def counted_statements():
    """Every SQL statement sent to the database inside the block."""
    statements = []

    def count(_connection, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def sample_file(rows: int = 2000) -> tuple[list[list[str]], dict]:
    """``rows`` patients, some of them bad, and what the preview should say about them.

    Every hundredth block holds one of each problem; the rest are good, and some good names are
    Chinese, carry an emoji, or look like a spreadsheet formula.
    """
    table = [["name", "phone", "external_id"]]
    good, problems = [], {}
    for i in range(rows):
        name, phone, record = f"Patient {i}", f"139{i:08d}", f"R-{i}"
        line = len(table) + 1
        match i % 100:
            case 1:
                phone = f"12ab{i}"
                problems[line] = "only digits"
            case 2:
                phone = f"139{i - 2:08d}"
                problems[line] = f"Same phone number as line {line - 2}"
            case 3:
                record = f"R-{i - 3}"
                problems[line] = f"Same record number as line {line - 3}"
            case 4:
                name = "   "
                problems[line] = "Enter the full name"
            case 5:
                name = "x" * 121
                problems[line] = "at most 120"
            case 6:
                name = "王小明 😀"
            case 7:
                name = FORMULA
        if i == 10:
            phone = EXISTING_PHONE
            problems[line] = "Already a patient: this phone number"
        if i == 11:
            record = EXISTING_RECORD
            problems[line] = "Already a patient: this record number"
        table.append([name, phone, record])
        if line not in problems:
            good.append((name, phone, record))
        if i % 500 == 499:
            table.append(["", " ", ""])  # an empty row, skipped
    return table, {"good": good, "problems": problems}


def encode(table: list[list[str]], delimiter: str = ",", encoding: str = "utf-8") -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(table)
    return out.getvalue().encode(encoding)


@pytest.fixture
def existing(make_patient):
    patient, _token = make_patient(full_name="Already Here", phone=EXISTING_PHONE, external_id=EXISTING_RECORD)
    return patient


def patient_count() -> int:
    count = db.session.scalar(select(func.count()).select_from(Patient))
    db.session.rollback()
    return count


SETTINGS_READS = ("BEGIN", "SELECT settings_stamp.", "SELECT clinics.", "SELECT campaigns.", "SELECT tiers.",
                  "SELECT webhook_endpoints.")


def test_the_preview_of_2000_rows_marks_every_problem_with_a_fixed_number_of_queries(existing):
    table, expected = sample_file(2000)
    with counted_statements() as statements:
        preview = importer.preview_import(encode(table))
    with counted_statements() as few_rows_statements:
        importer.preview_import(encode(sample_file(20)[0]))

    # The settings are checked once per transaction to pick the language of the messages (clinic.i18n),
    # and read in full the first time (clinic/services/settings_snapshot.py).
    def import_queries(statements):
        return [statement for statement in statements if not statement.startswith(SETTINGS_READS)]

    queries = import_queries(statements)
    assert len(queries) == 2, "one query for all the phones, one for all the record numbers"
    assert len(import_queries(few_rows_statements)) == 2
    assert preview.encoding == "UTF-8" and preview.delimiter == ","
    assert preview.counts == {"rows": 2000, "ok": len(expected["good"]), "problems": len(expected["problems"]),
                              "invalid": 60, "duplicate": 40, "existing": 2, "extra_values": 0, "empty": 4}
    by_line = {row.line: row for row in preview.rows}
    for line, message in expected["problems"].items():
        assert not by_line[line].ok
        assert any(message in problem.message for problem in by_line[line].problems), (line, by_line[line])
    assert [(row.details.full_name, row.details.phone, row.details.external_id)
            for row in preview.good_rows] == expected["good"]
    assert by_line[2].ok and by_line[4].problems, "the first of two rows with one phone is imported, not the second"


def test_the_import_creates_exactly_the_good_rows_with_unique_codes_and_working_links(existing, browser):
    table, expected = sample_file(2000)
    actor = Actor(staff_id=None, ip="127.0.0.1")
    with counted_statements() as statements:
        result = importer.import_patients(encode(table), actor)

    assert len(statements) <= 20, "bulk inserts, not a statement per patient"
    created = db.session.scalars(select(Patient).where(Patient.id != existing.id)).all()
    assert sorted((p.full_name, p.phone, p.external_id) for p in created) == sorted(expected["good"])
    by_id = {p.id: p for p in created}
    assert [(by_id[p.id].full_name, by_id[p.id].personal_code) for p in result.patients] == [
        (name, p.personal_code) for (name, _phone, _record), p in zip(expected["good"], result.patients)]
    codes = [p.personal_code for p in created]
    assert len(set(codes)) == len(codes) and all(has_valid_check(code) for code in codes)
    assert existing.personal_code not in codes
    for imported in result.patients[:3] + result.patients[-3:]:
        assert patient_by_progress_token(imported.progress_token).id == imported.id
        assert imported.progress_token not in db.session.get(Patient, imported.id).progress_token_hash
    assert browser.get(f"/p/{result.patients[-1].progress_token}").status_code == 200
    enrolled = db.session.scalar(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "patient.enrolled",
                                        AuditEvent.patient_id.in_([p.id for p in created])))
    summary = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "patients.imported")).one()
    assert enrolled == len(created)
    assert summary.details["count"] == len(created) and summary.details["skipped"] == len(expected["problems"])


def test_formula_looking_names_are_stored_as_typed_and_exported_as_text(app, manager):
    data = encode([["name", "phone"], [FORMULA, "13900000001"], ["+1 crowd", "13900000002"], ["王丽", ""]])
    result_page = confirm(manager, preview(manager, data))
    token = result_page.rsplit("/", 1)[-1]
    names = set(db.session.scalars(select(Patient.full_name)))
    assert names == {FORMULA, "+1 crowd", "王丽"}

    links = manager.get(f"/admin/import/{token}/links.csv")
    text = links.get_data().decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    assert rows[0] == ["name", "personal code", "invite URL", "progress URL"]
    assert [row[0] for row in rows[1:]] == ["'" + FORMULA, "'+1 crowd", "王丽"]


@pytest.mark.parametrize("encoding, label", [("gb18030", "GB18030"), ("gbk", "GB18030"),
                                             ("utf-8-sig", "UTF-8 with BOM"), ("utf-16", "UTF-16")])
def test_chinese_excel_files_are_read_in_their_encoding(app, encoding, label):
    table = [["姓名", "手机", "病历号"], ["王丽娟", "139 1234 5678", "住院-001"], ["陈杰", "", "住院-002"]]
    preview = importer.preview_import(encode(table, encoding=encoding))
    assert preview.encoding.startswith(label)
    assert preview.columns == {"full_name": "姓名", "phone": "手机", "external_id": "病历号"}
    assert [(row.details.full_name, row.details.phone, row.details.external_id) for row in preview.rows] == [
        ("王丽娟", "13912345678", "住院-001"), ("陈杰", None, "住院-002")]


@pytest.mark.parametrize("delimiter", [";", "\t", ","])
def test_semicolon_tab_and_comma_files_are_recognised(app, delimiter):
    table = [["Full name", "Mobile", "Record No.", "Notes"], ["Li, Na", "+86 138-0013-8000", "A1", "x"]]
    preview = importer.preview_import(encode(table, delimiter))
    assert preview.delimiter == delimiter
    assert preview.ignored_columns == ["Notes"]
    assert preview.rows[0].details.full_name == "Li, Na" and preview.rows[0].details.phone == "13800138000"


def test_a_row_with_more_values_than_columns_is_held_back(app):
    preview = importer.preview_import(b"name,phone\nLi, Na,13800138000\nWang Li,13800138001\n")
    assert [row.ok for row in preview.rows] == [False, True]
    assert "more values than the header" in preview.rows[0].problems[0].message


def preview(manager: Browser, data: bytes, name: str = "patients.csv"):
    return manager.post("/admin/import/preview", {"file": (io.BytesIO(data), name)},
                        content_type="multipart/form-data")


def confirm_form(page) -> dict:
    html = page.get_data(as_text=True)
    return {name: re.search(rf'name="{name}" value="([^"]*)"', html).group(1) for name in ("token", "expected")}


def confirm(manager: Browser, preview_page) -> str:
    assert preview_page.status_code == 200, preview_page.get_data(as_text=True)
    response = manager.post("/admin/import/confirm", confirm_form(preview_page))
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"]


def test_a_patient_registered_between_preview_and_confirm_stops_the_whole_import(manager, existing, make_patient):
    table, expected = sample_file(300)
    page = preview(manager, encode(table))
    form = confirm_form(page)
    taken = expected["good"][-1]
    make_patient(full_name="Came in meanwhile", phone=taken[1])

    refused = manager.post("/admin/import/confirm", form)
    html = refused.get_data(as_text=True)
    assert refused.status_code == 409 and "Nothing was imported" in html
    line = table.index(list(taken)) + 1
    assert "Already a patient" in re.search(rf'<tr id="line-{line}">.*?</tr>', html, re.S).group(0)
    assert patient_count() == 2

    again = manager.post("/admin/import/confirm", confirm_form(refused))  # the new preview, confirmed
    assert again.status_code == 303
    assert patient_count() == 2 + len(expected["good"]) - 1


def test_an_upload_the_server_cannot_keep_is_told_as_the_server_s_fault(app, manager, existing, tmp_path, caplog):
    """An import folder the app's user may not write: 503 with a message and the reason in the log, not a 500."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    app.config["IMPORT_FOLDER"] = str(blocker / "imports")
    table, _ = sample_file(20)
    page = preview(manager, encode(table))
    assert page.status_code == 503
    assert "could not be stored on the server" in page.get_data(as_text=True)
    assert "NotADirectoryError" in caplog.text
    assert patient_count() == 1


def test_a_conflict_at_insert_time_rolls_back_every_row(app, make_patient, monkeypatch):
    table, expected = sample_file(300)
    make_patient(full_name="Registered at the desk", phone=expected["good"][-1][1])
    monkeypatch.setattr(importer, "mark_existing_patients", lambda preview: None)  # as if it came in after the check
    with pytest.raises(Refused) as refusal:
        importer.import_patients(encode(table), Actor())
    assert refusal.value.reason == "import_conflict" and "Nothing was imported" in refusal.value.message
    assert patient_count() == 1
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action.in_(["patients.imported"]))) == 0


def test_the_pages_from_upload_to_links_and_posters(app, manager, manager_user, existing):
    assert "Download the template" in manager.get("/admin/import").get_data(as_text=True)
    template = manager.get("/admin/import/template.csv").get_data().decode("utf-8")
    assert template == "\ufeffname,phone,external_id\r\n"

    table, expected = sample_file(120)
    page = preview(manager, encode(table))
    html = page.get_data(as_text=True)
    assert f"{len(expected['good'])} can be imported" in html
    assert "Already a patient: this phone number is registered." in html and "Same record number as line" in html
    assert patient_count() == 1, "the preview writes nothing"

    result_url = confirm(manager, page)
    token = result_url.rsplit("/", 1)[-1]
    folder = Path(app.config["IMPORT_FOLDER"])
    assert not (folder / f"{token}.csv").exists(), "the upload is deleted once imported"
    assert f"{len(expected['good'])} patients imported" in manager.get(result_url).get_data(as_text=True)
    assert manager.post("/admin/import/confirm", confirm_form(page)).status_code == 404, "imported once only"
    assert patient_count() == 1 + len(expected["good"])

    other_manager = Browser(app.test_client())
    other_manager.login(manager_user.email)
    assert other_manager.get(f"{result_url}/links.csv").status_code == 404, "only the session that imported"

    links = manager.get(f"{result_url}/links.csv")
    assert links.status_code == 200 and links.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(links.get_data().decode("utf-8-sig"))))[1:]
    assert len(rows) == len(expected["good"])
    name, code, invite, progress = rows[0]
    assert name == "Patient 0" and re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}", code)
    assert invite == f"https://clinic.test/r/{code.replace('-', '')}"
    assert manager.get(progress.removeprefix("https://clinic.test")).status_code == 200
    assert manager.get(f"{result_url}/links.csv").status_code == 410, "the links are given once"
    exported = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "export.progress_links"))
    assert [event.details["count"] for event in exported] == [len(expected["good"])]
    assert not any(folder.glob(f"{token}.links*")), "the raw tokens are gone from the server"

    posters = manager.get(f"{result_url}/posters.pdf?part=1")
    assert posters.status_code == 200 and posters.get_data().startswith(b"%PDF")
    assert manager.get(f"{result_url}/posters.pdf?part=2").status_code == 404


def test_poster_parts_hold_at_most_200_posters():
    batch = importer.ImportBatch(token="0" * 32, patient_ids=list(range(450)), skipped=0, links_available=False)
    assert batch.poster_parts == [(1, 1, 200), (2, 201, 400), (3, 401, 450)]


def test_desk_staff_cannot_import(desk):
    data = encode([["name", "phone"], ["Li Na", "13800138000"]])
    assert desk.get("/admin/import").status_code == 403
    assert desk.get("/admin/import/template.csv").status_code == 403
    assert preview(desk, data).status_code == 403
    assert desk.post("/admin/import/confirm", {"token": "0" * 32, "expected": ""}).status_code == 403
    assert desk.get(f"/admin/import/{'0' * 32}/links.csv").status_code == 403
    assert patient_count() == 0


TOO_MANY_ROWS = b"name,phone\n" + b"".join(b"P%d,139%08d\n" % (i, i) for i in range(importer.MAX_ROWS + 1))


@pytest.mark.parametrize("data, name, status, message", [
    (b"", "empty.csv", 400, "The file is empty"),
    (b"\xef\xbb\xbf \r\n\r\n", "blank.csv", 400, "The file is empty"),
    (b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 100, "patients.xlsx", 415, "Excel workbook"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "photo.csv", 415, "binary data"),
    (b"name,phone\nJos\xe9,13800138000\n", "latin1.csv", 415, "neither UTF-8 nor GB18030"),
    (b"Li Na,13800138000\nWang Li,13800138001\n", "noheader.csv", 400, "The first row must name the columns"),
    (b"name,notes\nLi Na,x\n", "namesonly.csv", 400, "The first row must name the columns"),
    ("姓名,电话,手机\n王丽,021-5555,13800138000\n".encode(), "two-phones.csv", 400, "Two columns could be the phone"),
    (b"name,phone\n", "header-only.csv", 400, "no patients below it"),
    (TOO_MANY_ROWS, "big.csv", 413, "more than 5,000 patients"),
    (b"name,phone\n" + b"x" * importer.MAX_BYTES, "huge.csv", 413, "larger than 2 MB"),
    (b"name,phone\n" + b"x" * (3 * importer.MAX_BYTES), "huger.csv", 413, "larger than 2 MB"),
])
def test_bad_files_are_refused_on_the_upload_page(manager, data, name, status, message):
    response = preview(manager, data, name)
    html = response.get_data(as_text=True)
    assert response.status_code == status
    assert message in html and 'name="file"' in html, "the upload form again, with the reason"
    assert patient_count() == 0


def test_a_missing_file_is_asked_for(manager):
    response = manager.post("/admin/import/preview", {}, content_type="multipart/form-data")
    assert response.status_code == 400 and "Choose a CSV file" in response.get_data(as_text=True)


@pytest.mark.parametrize("token", ["../../etc/passwd", "0" * 31, "0" * 32 + "/../x", "A" * 32, "", None])
def test_upload_tokens_cannot_name_other_files(app, token):
    with pytest.raises(Refused) as refusal:
        importer.read_upload(app.config["IMPORT_FOLDER"], token)
    assert refusal.value.status == 404


def test_a_confirm_for_another_sessions_upload_is_refused(app, manager, manager_user):
    page = preview(manager, encode([["name", "phone"], ["Li Na", "13800138000"]]))
    stranger = Browser(app.test_client())
    stranger.login(manager_user.email)
    response = stranger.post("/admin/import/confirm", confirm_form(page))
    assert response.status_code == 404 and 'name="file"' in response.get_data(as_text=True)
    assert patient_count() == 0


def test_progress_links_left_on_the_server_expire_after_15_minutes(app, manager):
    page = preview(manager, encode([["name", "phone"], ["Li Na", "13800138000"]]))
    result_url = confirm(manager, page)
    links_file = Path(app.config["IMPORT_FOLDER"]) / f"{result_url.rsplit('/', 1)[-1]}.links.json"
    old = links_file.stat().st_mtime - importer.LINKS_KEEP_SECONDS - 1
    os.utime(links_file, (old, old))
    assert "downloaded already or have expired" in manager.get(result_url).get_data(as_text=True)
    assert manager.get(f"{result_url}/links.csv").status_code == 410
    assert not links_file.exists()


def age(path: Path, seconds: float) -> Path:
    """Make ``path`` look ``seconds`` old."""
    old = time.time() - seconds
    os.utime(path, (old, old))
    return path


def test_the_sweep_deletes_links_after_15_minutes_and_everything_else_after_a_day(tmp_path):
    def aged(name: str, seconds: float) -> Path:
        (tmp_path / name).write_text("x")
        return age(tmp_path / name, seconds)

    minutes, hours = 60, 3600
    gone = [aged(f"{'a' * 32}.links.json", 16 * minutes), aged(f"{'b' * 32}.links.taken", 16 * minutes),
            aged(f".{'c' * 32}.links.json.0a1b2c3d", 16 * minutes), aged(f"{'d' * 32}.csv", 25 * hours),
            aged(f"{'d' * 32}.batch.json", 25 * hours), aged(f"{'d' * 32}.importing", 25 * hours)]
    kept = [aged(f"{'e' * 32}.links.json", 14 * minutes), aged(f"{'e' * 32}.batch.json", 2 * hours),
            aged(f"{'f' * 32}.csv", 23 * hours)]
    assert importer.sweep(str(tmp_path)) == len(gone)
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    assert importer.sweep(str(tmp_path / "never-made")) == 0


@pytest.mark.parametrize("read", ["", "/links.csv"])
def test_reading_an_import_sweeps_what_other_imports_left_behind(app, manager, read):
    """Not only the next upload, months later, deletes the raw tokens of an import nobody downloaded."""
    folder = Path(app.config["IMPORT_FOLDER"])
    forgotten = confirm(manager, preview(manager, encode([["name", "phone"], ["Li Na", "13800138000"]])))
    unconfirmed = confirm_form(preview(manager, encode([["name", "phone"], ["Zhao Min", "13800138002"]])))["token"]
    latest = confirm(manager, preview(manager, encode([["name", "phone"], ["Wang Li", "13800138001"]])))
    stale_links = age(folder / f"{forgotten.rsplit('/', 1)[-1]}.links.json", importer.LINKS_KEEP_SECONDS + 1)
    stale_upload = age(folder / f"{unconfirmed}.csv", importer.UPLOAD_KEEP_SECONDS + 1)
    assert manager.get(f"{latest}{read}").status_code == 200
    assert not stale_links.exists() and not stale_upload.exists()


def test_prune_imports_is_the_sweep_for_cron(app):
    folder = Path(app.config["IMPORT_FOLDER"])
    folder.mkdir(parents=True, exist_ok=True)
    stale, fresh = folder / f"{'a' * 32}.links.json", folder / f"{'b' * 32}.links.json"
    for path in (stale, fresh):
        path.write_text("[]")
    age(stale, importer.LINKS_KEEP_SECONDS + 1)
    result = app.test_cli_runner().invoke(args=["prune-imports"])
    assert result.exit_code == 0, result.output
    assert f"Deleted 1 expired import files from {folder}" in result.output
    assert not stale.exists() and fresh.exists()


def test_links_swept_away_by_another_request_mid_download_are_gone_not_a_500(app, manager, monkeypatch):
    result_url = confirm(manager, preview(manager, encode([["name", "phone"], ["Li Na", "13800138000"]])))
    rename = os.rename

    def rename_then_swept(source, destination):  # another request's sweep, just after this one claimed the file
        rename(source, destination)
        os.unlink(destination)
    monkeypatch.setattr(importer.os, "rename", rename_then_swept)
    response = manager.get(f"{result_url}/links.csv")
    assert response.status_code == 410 and "have expired" in response.get_data(as_text=True)
