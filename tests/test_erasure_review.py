"""Black-box review of erasure: races and paths the first tests did not reach (one test per defect found)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from clinic.extensions import db
from clinic.models import Card, CardBatch, Patient, Referral, Reward, Voucher
from clinic.services import cards, clinic_settings, erasure, redemption
from clinic.services.errors import Refused
from clinic.services.transaction import Actor
from tests.conftest import friend
from tests.test_cards import GIFT_PACK


def test_a_personal_card_printed_while_the_patient_is_erased_is_not_left_working(make_patient, actor, monkeypatch):
    """print_personal_card checks the patient before rendering and activates the card after: an erasure in between
    must not leave an activated card (a code that pays the erased patient) or its sheet on disk."""
    clinic_settings.update_default_campaign(GIFT_PACK, Actor())
    patient, _token = make_patient(full_name="Wang Lixue", phone="13811112222")
    patient_id = patient.id
    render = cards.write_card_sheets

    def erased_while_rendering(*args, **kwargs):
        erasure.erase_patient(patient_id, "patient_request", Actor())
        return render(*args, **kwargs)

    monkeypatch.setattr(cards, "write_card_sheets", erased_while_rendering)
    with pytest.raises(Refused) as refused:
        cards.print_personal_card(patient_id, "classic", actor)
    assert (refused.value.reason, refused.value.status) == ("patient_erased", 409)
    db.session.expire_all()
    assert db.session.get(Patient, patient_id).erased_at is not None
    working = db.session.scalars(select(Card).where(Card.patient_id == patient_id,
                                                    Card.status == "activated")).all()
    assert working == []
    assert db.session.scalars(select(CardBatch.pdf_filename).where(CardBatch.personal.is_(True),
                                                                   CardBatch.pdf_filename.is_not(None))).all() == []
    assert db.session.scalar(select(CardBatch.status).where(CardBatch.personal.is_(True))) == "failed"
