"""Proof that tests/test_api.py provoked every documented API error code, each with its documented status.

The codes are taken from the answers themselves (``record_answer`` is called on every response the API test
client gets), not from a list someone keeps by hand: a code the tests stop provoking, a code answered with
another status than the document gives it, or a code answered but not documented fails the run.

Under pytest-xdist the module's tests are spread over the workers, so each worker hands what it saw to the
controller (``workeroutput``) and the controller checks the union at the end of the session. The check runs
only when every test function of tests/test_api.py ran (not with ``-k`` or a single test).
"""

from __future__ import annotations

import pytest

SEEN_ERRORS: set[tuple[str, int]] = set()
RAN_TESTS: set[str] = set()
PROBLEMS: list[str] = []
CHECKED: list[bool] = []


def record_answer(response) -> None:
    body = response.get_json(silent=True)
    if response.status_code >= 400 and isinstance(body, dict) and isinstance(body.get("error"), dict):
        SEEN_ERRORS.add((body["error"].get("code"), response.status_code))


def record_ran(test_name: str) -> None:
    RAN_TESTS.add(test_name)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    output = getattr(node, "workeroutput", {})
    SEEN_ERRORS.update(tuple(pair) for pair in output.get("api_errors_seen", ()))
    RAN_TESTS.update(output.get("api_tests_ran", ()))


def coverage_problems() -> list[str]:
    from clinic.api.spec import ERROR_CODES
    from tests import test_api

    every_test = {name for name in vars(test_api) if name.startswith("test_")}
    if not RAN_TESTS or not every_test <= RAN_TESTS:
        return []
    CHECKED.append(True)
    seen_codes = {code for code, _status in SEEN_ERRORS}
    problems = [f"documented API error code never provoked by tests/test_api.py: {code}"
                for code in sorted(set(ERROR_CODES) - seen_codes)]
    problems += [f"API error code answered but not in the document: {code}"
                 for code in sorted(seen_codes - set(ERROR_CODES))]
    problems += [f"API error code {code} answered with {status}, the document says {ERROR_CODES[code][0]}"
                 for code, status in sorted(SEEN_ERRORS) if code in ERROR_CODES and ERROR_CODES[code][0] != status]
    return problems


def pytest_sessionfinish(session, exitstatus) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller checks the union
        workeroutput["api_errors_seen"] = sorted(SEEN_ERRORS)
        workeroutput["api_tests_ran"] = sorted(RAN_TESTS)
        return
    PROBLEMS[:] = coverage_problems()
    if PROBLEMS:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if PROBLEMS:
        terminalreporter.section("API error codes (tests/api_error_coverage.py)", red=True)
        for problem in PROBLEMS:
            terminalreporter.line(problem, red=True)
    elif CHECKED:
        terminalreporter.line(f"API error codes: all {len({c for c, _ in SEEN_ERRORS})} documented codes "
                              "were answered with their documented status")
