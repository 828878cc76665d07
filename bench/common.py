"""What every benchmark child process shares: the card data file, peak memory, the result file."""

from __future__ import annotations

import json
from pathlib import Path

BASE_URL = "https://refer.clinic.example/r/"
CLINIC_NAME = "Harbour Family Dental 港湾口腔"
CLINIC_PHONE = "+86 21 5555 0100"
BRAND_COLOUR = "#0f766e"  # the app's default brand colour (clinic/models/clinic.py)


def write_cards(path: Path, count: int) -> list[tuple[str, str, str]]:
    """``count`` cards as a batch job makes them: serial, code as printed, invite URL (one per line)."""
    from clinic.services.codes import format_code, generate_bearer_code

    digits = max(4, len(str(count)))
    codes: set[str] = set()
    while len(codes) < count:
        codes.add(generate_bearer_code())
    cards = [(f"B007-{number:0{digits}d}", format_code(code), BASE_URL + code)
             for number, code in enumerate(sorted(codes), start=1)]
    path.write_text("".join("\t".join(card) + "\n" for card in cards), encoding="utf-8")
    return cards


def read_cards(path: Path) -> list[tuple[str, str, str]]:
    return [tuple(line.split("\t")) for line in path.read_text(encoding="utf-8").splitlines()]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(path: Path, **values) -> None:
    values["peak_rss_mb"] = peak_rss_mb()
    path.write_text(json.dumps(values), encoding="utf-8")
