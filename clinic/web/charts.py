"""Geometry for the dashboard's server-rendered SVG charts.

No JavaScript and no inline styles (the CSP forbids them): the templates draw these numbers as
SVG presentation attributes, and colours come from classes in app.css.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from babel.dates import format_skeleton
from flask_babel import gettext as _
from flask_babel import pgettext

from clinic.i18n import current_language
from clinic.services.reports import Funnel, Series

WIDTH = 720
BAR_HEIGHT = 240
LEFT, RIGHT, TOP, BOTTOM = 34, 6, 10, 26
MAX_X_LABELS = 10


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    y: float  # top of the registered bar
    height: float
    paid_y: float
    paid_height: float
    label: str
    title: str


@dataclass(frozen=True)
class Tick:
    value: int
    y: float


@dataclass(frozen=True)
class XLabel:
    x: float
    text: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    left: float
    right: float
    baseline: float
    bars: list[Bar]
    ticks: list[Tick]
    x_labels: list[XLabel]


def _nice_step(peak: int, most_ticks: int = 5) -> int:
    """A step of 1, 2 or 5 times a power of ten giving at most ``most_ticks`` ticks above zero."""
    rough = max(1, math.ceil(peak / most_ticks))
    power = 10 ** (len(str(rough)) - 1)
    return next(power * m for m in (1, 2, 5, 10) if power * m >= rough)


def _short(bucket, unit: str) -> str:
    """An axis label in the reader's language: "Apr 2026" / "2026年4月" for months, "Apr 1" / "4月1日" else."""
    return format_skeleton("yMMM" if unit == "month" else "MMMd", bucket.first_day, locale=current_language())


def referrals_chart(series: Series) -> BarChart:
    """A bar per day, week or month: friends registered, and the part of them who have paid."""
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = BAR_HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_height
    step = _nice_step(series.peak)
    top_value = max(step, math.ceil(series.peak / step) * step)
    scale = plot_height / top_value
    count = max(1, len(series.buckets))
    slot = plot_width / count
    width = max(1.0, slot * 0.72)
    bars = []
    for n, bucket in enumerate(series.buckets):
        height, paid_height = bucket.registered * scale, bucket.paid * scale
        title = _("%(period)s: %(registered)s registered, %(paid)s of them paid", period=bucket.label,
                  registered=bucket.registered, paid=bucket.paid)
        bars.append(Bar(x=round(LEFT + n * slot + (slot - width) / 2, 2), width=round(width, 2),
                        y=round(baseline - height, 2), height=round(height, 2),
                        paid_y=round(baseline - paid_height, 2), paid_height=round(paid_height, 2),
                        label=_short(bucket, series.unit), title=title))
    every = math.ceil(count / MAX_X_LABELS)
    x_labels = [XLabel(round(bar.x + bar.width / 2, 2), bar.label) for n, bar in enumerate(bars) if n % every == 0]
    ticks = [Tick(value, round(baseline - value * scale, 2)) for value in range(0, top_value + 1, step)]
    return BarChart(WIDTH, BAR_HEIGHT, LEFT, WIDTH - RIGHT, baseline, bars, ticks, x_labels)


@dataclass(frozen=True)
class FunnelRow:
    label: str
    count: int
    percent: float | None
    x: float
    width: float
    y: float
    text_x: float
    text_inside: bool  # wide enough to carry its number in white; else the number follows the bar


FUNNEL_WIDTH = 480
FUNNEL_ROW = 44
FUNNEL_BAR = 34
FUNNEL_LABEL = 92
FUNNEL_MIN_TEXT_WIDTH = 110


def funnel_chart(funnel: Funnel) -> list[FunnelRow]:
    """Registered, visited, paid as centred bars, each as wide as its share of those registered."""
    area = FUNNEL_WIDTH - FUNNEL_LABEL
    centre = FUNNEL_LABEL + area / 2
    rows = []
    stages = ((pgettext("referral stage", "Registered"), funnel.registered, 100.0 if funnel.registered else None),
              (pgettext("referral stage", "Visited"), funnel.visited, funnel.visited_percent),
              (pgettext("referral stage", "Paid"), funnel.paid, funnel.paid_percent))
    for n, (label, count, share) in enumerate(stages):
        width = area * (share or 0) / 100
        inside = width >= FUNNEL_MIN_TEXT_WIDTH
        rows.append(FunnelRow(label, count, share, round(centre - width / 2, 2), round(width, 2), n * FUNNEL_ROW,
                              round(centre if inside else centre + width / 2 + 8, 2), inside))
    return rows


def share_split(part: int, whole: int, width: int = FUNNEL_WIDTH) -> float:
    """Where a two-part bar splits, in SVG units."""
    return round(width * part / whole, 2) if whole else 0.0
