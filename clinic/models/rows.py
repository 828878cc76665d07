"""Read-only copies of rows for the hottest read paths: the model's attributes, none of the ORM's cost.

An ORM entity costs about twice a plain row to load (identity map, instance state, events), and the
public pages load a few on every request. ``row_class(Model, *mixins)`` makes a frozen dataclass with
the model's column attributes and the pure methods it shares with the model through ``mixins``, so
templates and services read either alike; ``columns_of(Model)`` selects exactly those columns, in order,
so ``Row(*result_row)`` builds one. A copy has no session: it cannot lazy-load, and handing one to the
ORM (``referral.campaign = copy``) fails loudly instead of writing anything.
"""

from __future__ import annotations

from dataclasses import make_dataclass

from sqlalchemy import inspect

from clinic.models import Campaign, Card, Clinic, Patient, Tier, Voucher
from clinic.models.campaign import CampaignRules
from clinic.models.patient import PatientNames
from clinic.models.voucher import VoucherState


def column_keys(model) -> list[str]:
    return [attribute.key for attribute in inspect(model).column_attrs]


def columns_of(model, keys: list[str] | None = None) -> list:
    """The model's mapped columns (or ``keys`` of them) in ``row_class`` order, for ``select(*columns_of(Model))``."""
    return [getattr(model, key) for key in keys or column_keys(model)]


def row_class(model, *mixins: type, keys: list[str] | None = None, name: str | None = None) -> type:
    return make_dataclass(name or f"{model.__name__}Row", keys or column_keys(model), bases=mixins, frozen=True)


# The copies the settings snapshot and the public pages read.

ClinicRow = row_class(Clinic)
CampaignRow = row_class(Campaign, CampaignRules)
TierRow = row_class(Tier)
# What a patient's and a friend's public pages use of a patient: the names, whether the display name may be shown to
# friends, and the code to share. Not every column: each column of a result costs the PostgreSQL driver a
# description object per query.
PUBLIC_PATIENT_KEYS = ["id", "display_name", "full_name", "personal_code", "name_on_posters"]
PublicPatientRow = row_class(Patient, PatientNames, keys=PUBLIC_PATIENT_KEYS, name="PublicPatientRow")
VoucherRow = row_class(Voucher, VoucherState)
CardRow = row_class(Card)
