"""``make bench``: card sheets (ours vs reportlab), QR encoders, posters, CSV import, the app under HTTP load.

    .venv/bin/python -m bench [SECTION ...] [--sizes 1000,10000] [--repeats 3] [--encoder-urls 2000]
                              [--http-seconds 8]

SECTION is any of cards, encoders, posters, import, http; without one, everything runs.

Every measurement runs in a fresh child process, so its peak memory (VmHWM, read by the child
itself) is its own. Runs are interleaved (ours, baseline, ours, …) so that noise on this shared
machine falls on both alike; the table gives the median of the repeats. Always exits 0: it is a
report, and a missed target is printed as FAIL.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import write_cards

ROOT = Path(__file__).resolve().parent.parent
TARGET_1K_SECONDS, TARGET_10K_SECONDS = 3.0, 30.0
TARGET_RATIO = 1.5
FLAT_MEMORY_TOLERANCE = 1.10  # peak RSS at the largest size at most 10 % above the smallest
IMPLEMENTATIONS = {
    "ours": "bench.cards",
    "reportlab": "bench.baseline_reportlab",
}


def run_child(module: str, *arguments: str, timeout: float = 300) -> tuple[dict, float]:
    """Run ``python -m module arguments… RESULT``; its result JSON and the process's wall time."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    try:
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, "-m", module, *arguments, str(result_path)], cwd=ROOT,
                                   capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - started
        if completed.returncode != 0:
            raise RuntimeError(f"{module} failed:\n{completed.stderr[-3000:]}")
        return json.loads(result_path.read_text(encoding="utf-8")), wall
    finally:
        result_path.unlink(missing_ok=True)


def check_pdf(pdf: Path, cards: list[tuple[str, str, str]], workdir: Path) -> list[str]:
    """Problems found: page count (pikepdf), and the 10 QR codes of page 1 decoded (pdftoppm + zxing-cpp)."""
    import pikepdf
    import zxingcpp
    from PIL import Image

    problems = []
    expected_pages = -(-len(cards) // 10)
    with pikepdf.open(pdf) as document:
        if len(document.pages) != expected_pages:
            problems.append(f"{len(document.pages)} pages, expected {expected_pages}")
    prefix = workdir / f"{pdf.stem}-page"
    subprocess.run(["pdftoppm", "-r", "150", "-gray", "-png", "-f", "1", "-l", "1", "-singlefile", str(pdf),
                    str(prefix)], check=True)
    image_path = prefix.with_suffix(".png")
    with Image.open(image_path) as image:
        found = {result.text for result in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)}
    image_path.unlink()
    expected = {url for _, _, url in cards[:10]}
    if found != expected:
        problems.append(f"page 1: decoded {len(found & expected)} of {len(expected)} QR codes"
                        + (f", {len(found - expected)} unexpected" if found - expected else ""))
    return problems


def mb(value: float) -> str:
    return f"{value:,.0f} MB"


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for package in ("weasyprint", "reportlab", "zxing-cpp", "pikepdf"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return (f"{os.cpu_count()} CPUs ({model or platform.machine()}), Python {platform.python_version()}, "
            + ", ".join(versions))


def bench_cards(sizes: list[int], repeats: int, workdir: Path) -> tuple[dict, list[str]]:
    runs: dict[tuple[str, int], list[dict]] = {(impl, n): [] for n in sizes for impl in IMPLEMENTATIONS}
    problems: list[str] = []
    card_files = {}
    for n in sizes:
        path = workdir / f"cards-{n}.tsv"
        card_files[n] = (path, write_cards(path, n))
    for repeat in range(repeats):
        for n in sizes:
            path, cards = card_files[n]
            for impl, module in IMPLEMENTATIONS.items():
                pdf = workdir / f"{impl}-{n}.pdf"
                print(f"  run {repeat + 1}/{repeats}: {impl:9} {n:>6,} cards …", end="", flush=True)
                try:
                    result, wall = run_child(module, str(path), str(pdf))
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    print(" FAILED")
                    problems.append(f"{impl} {n:,}: {error}")
                    continue
                result["process_seconds"] = wall
                result["file_mb"] = pdf.stat().st_size / 1e6
                print(f" {result['seconds']:.2f} s, {result['peak_rss_mb']:.0f} MB")
                if repeat == 0:
                    for problem in check_pdf(pdf, cards, workdir):
                        problems.append(f"{impl} {n:,}: {problem}")
                pdf.unlink(missing_ok=True)
                runs[(impl, n)].append(result)
    return runs, problems


def median(results: list[dict], key: str) -> float:
    return statistics.median(result[key] for result in results)


def print_cards_table(sizes: list[int], runs: dict) -> dict:
    medians = {}
    for n in sizes:
        for impl in IMPLEMENTATIONS:
            if runs[(impl, n)]:
                medians[(impl, n)] = {"seconds": median(runs[(impl, n)], "seconds"),
                                      "rss": median(runs[(impl, n)], "peak_rss_mb")}
        if ("ours", n) in medians and ("reportlab", n) in medians:
            medians[("ratio", n)] = medians[("ours", n)]["seconds"] / medians[("reportlab", n)]["seconds"]
    header = (f"{'cards':>7}  {'renderer':10} {'seconds':>8} {'design s':>9} {'cards/s':>9} {'peak RSS':>9} "
              f"{'PDF size':>9} {'process s':>10}  {'ours/rl':>7}  runs (s)")
    print(header)
    print("-" * len(header))
    for n in sizes:
        for impl in IMPLEMENTATIONS:
            results = runs[(impl, n)]
            if not results:
                print(f"{n:>7,}  {impl:10} (no successful run)")
                continue
            seconds = medians[(impl, n)]["seconds"]
            design = f"{median(results, 'design_seconds'):.2f}" if "design_seconds" in results[0] else "-"
            ratio = f"{medians[('ratio', n)]:.2f}x" if impl == "ours" and ("ratio", n) in medians else ""
            print(f"{n:>7,}  {impl:10} {seconds:>8.2f} {design:>9} {n / seconds:>9,.0f} "
                  f"{mb(medians[(impl, n)]['rss']):>9} {median(results, 'file_mb'):>6.1f} MB "
                  f"{median(results, 'process_seconds'):>10.2f}  {ratio:>7}  "
                  + " ".join(f"{result['seconds']:.2f}" for result in results))
    return medians


def print_targets(sizes: list[int], medians: dict) -> bool:
    checks = []
    for n, limit in ((1000, TARGET_1K_SECONDS), (10000, TARGET_10K_SECONDS)):
        if ("ours", n) in medians:
            seconds = medians[("ours", n)]["seconds"]
            checks.append((seconds <= limit, f"{n:,} cards in at most {limit:.0f} s", f"{seconds:.2f} s"))
        elif n in sizes:
            checks.append((False, f"{n:,} cards in at most {limit:.0f} s", "no successful run"))
    measured = [n for n in sizes if ("ours", n) in medians]
    if len(measured) >= 2:
        small, large = min(measured), max(measured)
        low, high = medians[("ours", small)]["rss"], medians[("ours", large)]["rss"]
        checks.append((high <= low * FLAT_MEMORY_TOLERANCE,
                       f"memory flat in batch size (peak at {large:,} <= {FLAT_MEMORY_TOLERANCE:.2f}x at {small:,})",
                       f"{low:.0f} MB -> {high:.0f} MB ({(high / low - 1) * 100:+.1f} %)"))
    for n in (1000, 10000):  # the sizes; a tiny batch is all fixed cost (the WeasyPrint design)
        if ("ratio", n) in medians:
            ratio = medians[("ratio", n)]
            checks.append((ratio <= TARGET_RATIO, f"{n:,} cards: at most {TARGET_RATIO}x the reportlab baseline",
                           f"{ratio:.2f}x"))
    print("Targets (issue 3, Speed):")
    for passed, what, figure in checks:
        print(f"  [{'PASS' if passed else 'FAIL'}] {what}: {figure}" + ("" if passed else "   <<<<<< FAIL"))
    return all(passed for passed, _, _ in checks)


def bench_encoders(count: int) -> None:
    print(f"QR encoders: {count:,} URLs like https://refer.clinic.example/r/ABCD1234EFGH, EC level M, automatic mask")
    try:
        results, _ = run_child("bench.encoders", str(count))
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"  (encoder comparison failed: {error})")
        return
    fastest = min((figures["seconds"] for figures in results.values() if "seconds" in figures), default=None)
    for name, figures in results.items():
        if "seconds" not in figures:
            print(f"  {name:10} {figures.get('skipped', 'skipped')}")
            continue
        print(f"  {name:10} {figures['version']:8} {figures['seconds']:7.2f} s  {figures['per_code_ms']:6.3f} ms/code  "
              f"{figures['modules']}x{figures['modules']} modules  {figures['seconds'] / fastest:5.1f}x the fastest")


def measure_in_child(module: str, function: str) -> dict | None:
    """Run ``bench.<module>.<function>()`` in a fresh process and return its figures (or None, with a note)."""
    label = f"{function}()"
    if not (ROOT / "bench" / f"{module}.py").is_file():
        print(f"  NOTE: bench/{module}.py is not there: no figures")
        return None
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    script = ("import json, sys\n"
              f"from bench.{module} import {function}\n"
              f"json.dump({function}(), open(sys.argv[1], 'w'), default=str)\n")
    try:
        completed = subprocess.run([sys.executable, "-c", script, str(result_path)], cwd=ROOT, capture_output=True,
                                   text=True, timeout=180)
        if completed.returncode != 0:
            last = (completed.stderr.strip().splitlines() or ["no error output"])[-1]
            print(f"  NOTE: {label} failed: {last}")
            return None
        figures = json.loads(result_path.read_text(encoding="utf-8"))
    except subprocess.TimeoutExpired:
        print(f"  NOTE: {label} took more than 180 s: skipped")
        return None
    except (OSError, ValueError) as error:
        print(f"  NOTE: {label} gave no readable result: {error}")
        return None
    finally:
        result_path.unlink(missing_ok=True)
    if not isinstance(figures, dict):
        print(f"  {figures}")
        return None

    def shown(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        if isinstance(value, dict):
            return ", ".join(f"{key} {shown(inner)}" for key, inner in value.items())
        return str(value)

    for key, value in figures.items():
        print(f"  {key:28} {shown(value)}")
    return figures


def bench_posters() -> None:
    print("Posters (bench/posters.py, measure_posters()):")
    measure_in_child("posters", "measure_posters")


def bench_import() -> bool:
    """The CSV import of issue 4: 2,000 rows, some bad, must preview in under 5 s."""
    print("Patient CSV import (bench/importer.py, measure_import()):")
    figures = measure_in_child("importer", "measure_import")
    if figures is None:
        return False
    preview = _first_number(figures, "preview")
    passed = preview is not None and preview < 5
    print(f"  [{'PASS' if passed else 'FAIL'}] 2,000 rows preview in under 5 s: "
          f"{'?' if preview is None else f'{preview:.2f} s'}")
    return passed


def _first_number(figures, word: str):
    """The first number under a key containing ``word`` (the figures may be nested)."""
    for key, value in figures.items():
        if isinstance(value, dict):
            found = _first_number(value, word)
            if found is not None:
                return found
        elif word in key and isinstance(value, (int, float)):
            return float(value)
    return None


def bench_card_sheets(sizes: list[int], repeats: int) -> bool:
    print(f"Scratch-card sheets: {repeats} runs of each, each in a fresh process; "
          "ours = WeasyPrint design once + streamed sheets")
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        runs, problems = bench_cards(sizes, repeats, Path(folder))
    print()
    medians = print_cards_table(sizes, runs)
    print("  medians of the runs. seconds: the rendering itself (for ours the WeasyPrint design, cold, plus all"
          " sheets);\n  process s: the whole child process, with interpreter start, imports and set-up;"
          " ours/rl: ours / reportlab, seconds")
    print()
    print("Sanity checks (first run of each: page count with pikepdf, page 1 QR codes with pdftoppm + zxing-cpp):")
    if problems:
        for problem in problems:
            print(f"  FAIL: {problem}")
    else:
        print("  OK: every PDF has N/10 pages and all 10 QR codes on page 1 decode to the expected URLs")
    print()
    return print_targets(sizes, medians) and not problems


def bench_http(seconds: float) -> bool:
    """The app under gunicorn and wrk (bench/http_load.py), in a child process that prints as it goes."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    try:
        subprocess.run([sys.executable, "-m", "bench.http_load", "--duration", str(seconds), "--result",
                        str(result_path)], cwd=ROOT, timeout=900)
        return json.loads(result_path.read_text(encoding="utf-8") or "{}").get("passed", False)
    except (subprocess.TimeoutExpired, ValueError) as error:
        print(f"  NOTE: the HTTP benchmark gave no result: {error}")
        return False
    finally:
        result_path.unlink(missing_ok=True)


SECTIONS = ("cards", "encoders", "posters", "import", "http")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"what to run, any of: {', '.join(SECTIONS)} (default: everything)")
    parser.add_argument("--sizes", default="1000,10000", help="batch sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--encoder-urls", type=int, default=2000)
    parser.add_argument("--http-seconds", type=float, default=8, help="seconds measured per HTTP endpoint")
    options = parser.parse_args()
    unknown = set(options.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section {', '.join(sorted(unknown))}: choose from {', '.join(SECTIONS)}")
    chosen = options.sections or SECTIONS
    sizes = [int(size) for size in options.sizes.split(",")]

    started = time.perf_counter()
    print(f"bench — {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} — {machine()}")
    all_passed = True
    if "cards" in chosen:
        all_passed = bench_card_sheets(sizes, options.repeats) and all_passed
        print()
    if "encoders" in chosen:
        bench_encoders(options.encoder_urls)
        print()
    if "posters" in chosen:
        bench_posters()
        print()
    if "import" in chosen:
        all_passed = bench_import() and all_passed
        print()
    if "http" in chosen:
        all_passed = bench_http(options.http_seconds) and all_passed
        print()
    if all_passed:
        print(f"All targets PASS. ({time.perf_counter() - started:.0f} s)")
    else:
        print("!" * 72)
        print("!!  SOME TARGETS OR CHECKS FAILED — see FAIL above")
        print("!" * 72)
        print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
