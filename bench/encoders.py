"""QR encoders compared: time to turn URLs into a module matrix, automatic mask, error correction M.

    python -m bench.encoders [COUNT] [RESULT_JSON]

Encoders that are not installed are skipped (``qrcode`` is not a project dependency; to include
it: ``pip install --target /tmp/qrcode-pkg qrcode`` and run with ``PYTHONPATH=/tmp/qrcode-pkg``).
Each encoder gets the same URLs, shaped like the cards' (``https://refer.clinic.example/r/`` plus
a 12-symbol code), and must choose its mask pattern itself, as the batch job needs.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from bench.common import BASE_URL

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def sample_urls(count: int) -> list[str]:
    rng = random.Random(2024)
    return [BASE_URL + "".join(rng.choice(ALPHABET) for _ in range(12)) for _ in range(count)]


def zxing_cpp(url: str):
    import numpy as np
    import zxingcpp

    barcode = zxingcpp.create_barcode(url, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    return np.asarray(barcode.to_image(scale=1, add_quiet_zones=False)) < 128


def segno_(url: str):
    import segno

    return segno.make_qr(url, error="m", boost_error=False).matrix


def qrcode_(url: str):
    import qrcode

    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=0)
    code.add_data(url)
    code.make(fit=True)
    return code.get_matrix()


ENCODERS = {"zxing-cpp": ("zxingcpp", zxing_cpp), "segno": ("segno", segno_), "qrcode": ("qrcode", qrcode_)}


def measure(count: int = 2000) -> dict[str, dict]:
    import importlib
    import importlib.metadata

    urls = sample_urls(count)
    results: dict[str, dict] = {}
    for name, (module, encode) in ENCODERS.items():
        try:
            importlib.import_module(module)
            version = importlib.metadata.version(name if name != "zxing-cpp" else "zxing-cpp")
        except ImportError:
            results[name] = {"skipped": "not installed"}
            continue
        encode(urls[0])  # imports and first-call set-up out of the timing
        started = time.perf_counter()
        for url in urls:
            matrix = encode(url)
        seconds = time.perf_counter() - started
        results[name] = {"version": version, "seconds": seconds, "per_code_ms": seconds / count * 1000,
                         "modules": len(matrix), "count": count}
    return results


def main(count: int = 2000, result_json: str | None = None) -> None:
    results = measure(count)
    if result_json:
        Path(result_json).write_text(json.dumps(results), encoding="utf-8")
    else:
        for name, figures in results.items():
            print(name, figures)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, sys.argv[2] if len(sys.argv) > 2 else None)
