"""Poster render times: cold (first render in a fresh process, fonts not yet loaded) and warm.

``measure_posters()`` runs each measurement in a freshly spawned interpreter, so "cold" stays cold
even when other benchmarks ran before it in the same process. Run alone: ``python -m bench.posters``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

WARM_RUNS = 5


def _measure(kind: str) -> dict:
    """In a fresh process: start the app on a temporary SQLite database, render once cold, then warm."""
    started = time.perf_counter()
    from clinic import create_app
    from clinic.extensions import db
    from clinic.services import clinic_settings, posters
    from clinic.services.patients import PatientDetails, enrol_patient
    from clinic.services.transaction import Actor

    render = {"pdf": lambda patient: posters.poster_pdf(patient, "classic", "A4"),
              "png": lambda patient: posters.poster_png(patient, "classic")}[kind]
    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"TESTING": True, "SECRET_KEY": "bench", "PUBLIC_BASE_URL": "https://clinic.example",
                          "SQLALCHEMY_DATABASE_URI": f"sqlite:///{Path(folder) / 'bench.db'}",
                          "UPLOAD_FOLDER": str(Path(folder) / "uploads")})
        with app.app_context():
            db.create_all()
            clinic_settings.update_clinic({"name": "Harbour Family Dental 港湾口腔", "phone": "+86 21 5555 0100",
                                           "address": "88 Harbour Road, Shanghai"}, Actor())
            clinic_settings.update_default_campaign({"name": "Bring a friend", "friend_reward_kind": "service",
                                                     "friend_reward_label": "Free first consultation"}, Actor())
            patient, _ = enrol_patient(PatientDetails(full_name="王丽", display_name="王丽", name_on_posters=True), Actor())
            app_start = time.perf_counter() - started
            timings = []
            for _ in range(1 + WARM_RUNS):
                begin = time.perf_counter()
                size = len(render(patient))
                timings.append(time.perf_counter() - begin)
            db.session.remove()
            db.engine.dispose()
    return {"app_start_s": round(app_start, 3), "cold_s": round(timings[0], 3),
            "warm_s": round(statistics.median(timings[1:]), 3), "bytes": size}


def measure_posters() -> dict:
    """Cold and warm render times of an A4 classic poster PDF and of the 1080×1920 phone PNG."""
    results = {}
    for name, kind in (("poster_a4_classic_pdf", "pdf"), ("poster_phone_png", "png")):
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as fresh_process:
            results[name] = fresh_process.submit(_measure, kind).result()
    return results


if __name__ == "__main__":
    print(json.dumps(measure_posters(), indent=2))
