"""Child process: our batch path, minus the database.

    python -m bench.cards CARDS_FILE OUT_PDF RESULT_JSON

Timed: the card design rendered once by WeasyPrint (``card_design_pdf``, cold: the first
render in this process) plus ``write_card_sheets`` streaming every sheet to OUT_PDF — what
``run_batch`` does between claiming the batch and storing the cards. Not timed: interpreter
start, imports, the throw-away SQLite database with the clinic and campaign rows the design
needs, reading the card list.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench.common import CLINIC_NAME, CLINIC_PHONE, read_cards, write_result


def main(cards_file: str, out_pdf: str, result_json: str) -> None:
    from clinic import create_app
    from clinic.extensions import db
    from clinic.models import CardBatch
    from clinic.services import clinic_settings
    from clinic.services.card_sheet import PrintedCard, write_card_sheets
    from clinic.services.cards import card_design_pdf
    from clinic.services.transaction import Actor

    cards = read_cards(Path(cards_file))
    with tempfile.TemporaryDirectory(prefix="bench-db-") as folder:
        app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder}/bench.db", "TESTING": True,
                          "BATCH_FOLDER": folder})
        with app.app_context():
            db.create_all()
            clinic_settings.update_clinic({"name": CLINIC_NAME, "phone": CLINIC_PHONE}, Actor())
            clinic_settings.update_default_campaign({
                "name": "Refer a friend", "referrer_reward_kind": "money", "referrer_reward_amount": 20000,
                "friend_reward_kind": "service", "friend_reward_label": "1 bed-day waived",
                "voucher_valid_days": 90}, Actor())

            started = time.perf_counter()
            design = card_design_pdf(CardBatch(size=len(cards), design="classic", bleed=False, id=7))
            designed = time.perf_counter()
            with open(out_pdf, "wb") as out:
                pages = write_card_sheets(design, (PrintedCard(*card) for card in cards), out)
            finished = time.perf_counter()
            db.session.remove()
            db.engine.dispose()
    write_result(Path(result_json), seconds=finished - started, design_seconds=designed - started, pages=pages)


if __name__ == "__main__":
    main(*sys.argv[1:4])
