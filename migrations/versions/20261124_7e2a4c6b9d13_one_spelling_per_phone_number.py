"""One spelling per phone number: a patient's phone written with the clinic's own country code is stored as
dialled at home.

The desk's "same phone" checks (self-referral, already a patient) compare stored phones exactly, and
``+86 139 1112 7378``, ``0086 13911127378`` and ``13911127378`` were three different patients: an owner could
redeem their own code by writing their number with the country code. clinic/services/patients.py
normalize_phone now stores one spelling (Google's libphonenumber data through ``phonenumbers``); this brings
the phones already stored to it, with a frozen copy of that rule. A phone whose new spelling another patient
already holds is left as it is (the same person registered twice before this: no migration can merge them;
the count is printed). Downgrade changes nothing: both spellings were accepted before.

Revision ID: 7e2a4c6b9d13
Revises: 5c3e9a1b7d20
Create Date: 2026-11-24 05:00:00.000000

"""
import phonenumbers
import sqlalchemy as sa
from alembic import op
from babel.core import get_global


# revision identifiers, used by Alembic.
revision = '7e2a4c6b9d13'
down_revision = '5c3e9a1b7d20'
branch_labels = None
depends_on = None


def canonical(phone: str, region: str | None) -> str:
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return phone
    if not phonenumbers.is_possible_number(number):
        return phone
    if region and number.country_code == phonenumbers.country_code_for_region(region):
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        return "".join(character for character in national if character.isdigit())
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def upgrade():
    bind = op.get_bind()
    zone = bind.execute(sa.text("SELECT timezone FROM clinics WHERE id = 1")).scalar()
    region = get_global("zone_territories").get(zone or "Asia/Shanghai")
    rows = bind.execute(sa.text("SELECT id, phone FROM patients WHERE phone IS NOT NULL ORDER BY id")).all()
    taken = {phone for _, phone in rows}
    left = 0
    for patient_id, phone in rows:
        spelling = canonical(phone, region)
        if spelling == phone:
            continue
        if spelling in taken:
            left += 1
            continue
        bind.execute(sa.text("UPDATE patients SET phone = :phone WHERE id = :id"),
                     {"phone": spelling, "id": patient_id})
        taken.discard(phone)
        taken.add(spelling)
    if left:
        print(f"{left} patient phone(s) kept as written: another patient already holds the same number")


def downgrade():
    pass
