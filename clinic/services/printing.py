"""Checks that PDF printing will be fast and correct on this machine.

Without Debian's libharfbuzz-subset0, WeasyPrint subsets fonts in Python: a Chinese poster
took 12.4 s instead of 0.2 s here. Without a Noto CJK font, Chinese names print as boxes.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache


@lru_cache(maxsize=1)
def printing_problems() -> tuple[str, ...]:
    """What is missing for printing, as sentences; empty when all is well. Checked once per process."""
    problems = []
    try:
        from weasyprint.text.ffi import harfbuzz_subset
    except (ImportError, OSError) as error:
        return (f"WeasyPrint cannot load ({error}): install Pango (Debian: libpango-1.0-0).",)
    if harfbuzz_subset is None:
        problems.append("WeasyPrint did not find libharfbuzz-subset: PDFs with Chinese text will take seconds "
                        "instead of milliseconds (Debian: apt-get install libharfbuzz-subset0).")
    if shutil.which("fc-list"):
        # One listing of every installed family serves both checks: each fc-list costs start-up its scan of the fonts.
        fonts = subprocess.run(["fc-list", ":", "family"], capture_output=True, text=True, timeout=30).stdout
        if "Noto Sans CJK" not in fonts and "Noto Serif CJK" not in fonts:
            problems.append("No Noto CJK font is installed: Chinese names would print as boxes "
                            "(Debian: apt-get install fonts-noto-cjk).")
        if "Noto Color Emoji" not in fonts:
            problems.append("Noto Color Emoji is not installed: an emoji in a name would print as a box "
                            "(Debian: apt-get install fonts-noto-color-emoji).")
    from clinic.services.card_sheet import MONO_FONT

    if not MONO_FONT.is_file():
        problems.append(f"{MONO_FONT} is missing: scratch-card batches would fail "
                        "(Debian: apt-get install fonts-liberation).")
    return tuple(problems)
