"""The HTTP benchmark's requests in one process, counted in instructions under callgrind.

    .venv/bin/python -m bench.instructions [--requests 100] [--only progress] [--backend sqlite|postgresql]
                                           [--keep DIR]

CPU time moves with whatever else runs on the machine, by ±10 % or more here; an instruction count does
not (within ~0.1 % between runs), so two versions of a change can be compared while other work runs. It
is the requests of ``bench.inprocess`` (the same data, warm-up and endpoints), run under
``valgrind --tool=callgrind`` with instrumentation off until the measured requests: the seeding runs at
about a tenth of native speed, the requests at about a fiftieth. Each endpoint's measured requests are
one callgrind dump (``--keep DIR`` keeps them, for ``callgrind_annotate --inclusive=yes DIR/<endpoint>``).

Instructions are not time: a cache miss or a system call (SQLite's file locks, PostgreSQL's round trips)
costs more than its count. So confirm a change's effect with ``bench.inprocess`` in the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.inprocess import ENDPOINTS, argument_parser, prepare, warmup  # noqa: E402

# Callgrind zeroes its counters when the process enters MARK_START's C function and writes them out when it
# enters MARK_END's: two libc calls that nothing in a request makes.
MARK_START, MARK_END = "getsid", "getpgid"
CHILD_FLAG = "BENCH_INSTRUCTIONS_OUT"
# Work that runs every so many seconds of wall-clock time, not per request: the invite page opens each process writes
# every 10 s (clinic/services/invite_opens.py). Under callgrind a request takes ~50 × as long, so such work would be
# counted ~50 × as often per request as it runs for real (one write in ~8,500 invite pages of a busy worker).
CLOCK_WORK_OFF = {"INVITE_OPENS_FLUSH_SECONDS": "86400"}


def callgrind_control(switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], check=True, capture_output=True)


def measure(options) -> None:
    """In the process under callgrind: seed, then each endpoint's requests between the two marks."""
    seeder, endpoints, statements = prepare(options)
    for name, request in endpoints.items():
        for number in range(warmup(name)):
            request(number)
        callgrind_control("on")
        os.getsid(0)
        for number in range(options.requests):
            answer = request(warmup(name) + number)
            if answer.status_code != 200:
                raise SystemExit(f"{name}: answered {answer.status_code}")
        os.getpgid(0)
        callgrind_control("off")
    seeder.close()


def instructions(dump: Path) -> int:
    for line in dump.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit(f"{dump}: no summary line")


def main() -> int:
    parser = argument_parser("python -m bench.instructions", __doc__.splitlines()[0], 100)
    parser.add_argument("--keep", type=Path, help="a folder to keep each endpoint's callgrind dump in")
    options = parser.parse_args()
    if os.environ.get(CHILD_FLAG):
        measure(options)
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as folder:
        out = Path(folder) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--zero-before={MARK_START}",
                   f"--dump-before={MARK_END}", f"--callgrind-out-file={out}", sys.executable, "-m",
                   "bench.instructions", *sys.argv[1:]]
        completed = subprocess.run(command, cwd=ROOT, env={**os.environ, CHILD_FLAG: "1", **CLOCK_WORK_OFF},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if completed.returncode != 0:
            raise SystemExit(f"callgrind run failed:\n{completed.stdout[-2000:]}{completed.stderr[-3000:]}")
        names = [name for name in ENDPOINTS
                 if options.only in (None, name)]
        dumps = sorted(Path(folder).glob("callgrind.out.*"), key=lambda path: int(path.suffix[1:]))
        if len(dumps) != len(names):
            raise SystemExit(f"expected {len(names)} dumps, found {len(dumps)}")
        for name, dump in zip(names, dumps):
            print(f"{name:10} {instructions(dump) / options.requests / 1e6:8.3f} M instructions a request", flush=True)
            if options.keep:
                options.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(dump, options.keep / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
