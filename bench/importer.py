"""CSV import of 2,000 patients (issue 4: "previews in under 5 s"), as a service call and as the manager sees it.

``measure_import()`` times, on a fresh SQLite database per run (the embedded default) holding 1,000
patients already: the preview (decode, parse, check every row, two queries), the import (one
transaction with bulk inserts), and the same two steps through the web pages, where the upload, the
stored file and the rendering of a page listing every row are included. Median of ``REPEATS`` runs.
Run alone: ``python -m bench.importer``.
"""

from __future__ import annotations

import io
import json
import statistics
import tempfile
import time
from pathlib import Path

ROWS = 2000
ALREADY_PATIENTS = 1000
REPEATS = 3
TARGET_PREVIEW_SECONDS = 5.0


def sample_csv(rows: int = ROWS) -> bytes:
    """A clinic's export: Chinese and Latin names, about 5 % bad rows, some already patients; UTF-8 with a BOM."""
    lines = ["姓名,手机,病历号"]
    for i in range(rows):
        name, phone, record = (f"王{i}号" if i % 2 else f"Patient {i}"), f"139 {i:04d} {i % 7:04d}", f"R-{i}"
        if i % 40 == 1:
            phone = "12ab"
        elif i % 40 == 2:
            record = f"R-{i - 1}"
        elif i % 50 == 3:
            phone = f"138{i:08d}"  # one of the patients already registered
        lines.append(f"{name},{phone},{record}")
    return ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8")


def _fresh_app(folder: Path):
    from sqlalchemy import insert

    from clinic import create_app
    from clinic.extensions import db
    from clinic.models import Patient, Role
    from clinic.services import clinic_settings
    from clinic.services.codes import generate_personal_code
    from clinic.services.staff import create_staff
    from clinic.services.transaction import Actor, atomic

    app = create_app({"TESTING": True, "SECRET_KEY": "bench", "WTF_CSRF_ENABLED": False,
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'bench.db'}",
                      "PUBLIC_BASE_URL": "https://c.example",
                      "UPLOAD_FOLDER": str(folder / "uploads"), "IMPORT_FOLDER": str(folder / "imports")})
    with app.app_context():
        db.create_all()
        clinic_settings.update_clinic({"name": "Harbour Family Dental 港湾口腔"}, Actor())
        create_staff("manager@bench.example", "correct horse battery", Role.MANAGER.value)
        with atomic():
            db.session.execute(insert(Patient), [{
                "full_name": f"Old {i}", "phone": f"138{i:08d}", "personal_code": generate_personal_code(),
                "progress_token_hash": f"{i:064x}"} for i in range(ALREADY_PATIENTS)])
    return app


def _timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _service_run(folder: Path, data: bytes) -> dict:
    from clinic.extensions import db
    from clinic.services import importer
    from clinic.services.transaction import Actor

    app = _fresh_app(folder)
    with app.app_context():
        preview_s, preview = _timed(lambda: importer.preview_import(data))
        import_s, result = _timed(lambda: importer.import_patients(data, Actor()))
        db.session.remove()
        db.engine.dispose()
    return {"preview_s": preview_s, "import_s": import_s, "good_rows": len(preview.good_rows),
            "created": len(result.patients)}


def _web_run(folder: Path, data: bytes) -> dict:
    import re

    from clinic.extensions import db

    app = _fresh_app(folder)
    client = app.test_client()
    client.post("/login", data={"email": "manager@bench.example", "password": "correct horse battery"})
    preview_s, page = _timed(lambda: client.post("/admin/import/preview", data={"file": (io.BytesIO(data), "p.csv")},
                                                 content_type="multipart/form-data"))
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html[:500]
    form = {name: re.search(rf'name="{name}" value="([^"]*)"', html).group(1) for name in ("token", "expected")}
    confirm_s, done = _timed(lambda: client.post("/admin/import/confirm", data=form))
    assert done.status_code == 303, done.get_data(as_text=True)[:500]
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    return {"web_preview_s": preview_s, "web_confirm_s": confirm_s, "preview_page_kb": len(page.get_data()) / 1024}


def measure_import(rows: int = ROWS, repeats: int = REPEATS) -> dict:
    """Seconds (median of ``repeats``) to preview and to import ``rows`` patients, as a service and through the web."""
    data = sample_csv(rows)
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as service_folder, tempfile.TemporaryDirectory() as web_folder:
            runs.append({**_service_run(Path(service_folder), data), **_web_run(Path(web_folder), data)})
    result = {"rows": rows, "file_kb": round(len(data) / 1024, 1), "already_patients": ALREADY_PATIENTS,
              "good_rows": runs[0]["good_rows"], "created": runs[0]["created"], "repeats": repeats}
    for key in ("preview_s", "import_s", "web_preview_s", "web_confirm_s", "preview_page_kb"):
        result[key] = round(statistics.median(run[key] for run in runs), 3)
    result["target_preview_s"] = TARGET_PREVIEW_SECONDS
    result["pass"] = result["web_preview_s"] < TARGET_PREVIEW_SECONDS
    return result


if __name__ == "__main__":
    print(json.dumps(measure_import(), indent=2))
