"""gunicorn's access and error log lines, with the logger class gunicorn.conf.py names: no tokens, codes or phones."""

from __future__ import annotations

import runpy
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from clinic.access_log import PrivateAccessLogger

TOKEN, PHONE, VOUCHER = "mhcO_BljHiMxqi8doFBeBrCC4IZq-4aX", "13812345678", "7KQ2-9XWD-3MHP"
CONF = Path(__file__).parents[1] / "gunicorn.conf.py"


@pytest.fixture
def logs(tmp_path):
    """gunicorn's logger as gunicorn.conf.py configures it, writing its access and error logs to two files."""
    cfg = Config()
    cfg.set("logger_class", runpy.run_path(str(CONF))["logger_class"])
    cfg.set("accesslog", str(tmp_path / "access.log"))
    cfg.set("errorlog", str(tmp_path / "error.log"))
    logger = cfg.logger_class(cfg)
    assert isinstance(logger, PrivateAccessLogger)
    yield SimpleNamespace(logger=logger, access=tmp_path / "access.log", error=tmp_path / "error.log")
    for log in (logger.access_log, logger.error_log):  # gunicorn's loggers are global: leave them bare
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()


def request(logger, raw_uri: str, referer: str | None = None, routed: bool = True) -> None:
    """Log one request as gunicorn does; ``routed=False``: an error gunicorn answered itself (no PATH_INFO)."""
    path, _, query = raw_uri.partition("?")
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": raw_uri, "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1",
               "REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": "Phone"}
    if routed:
        environ["PATH_INFO"] = path.replace("%70", "p")  # decoded, as gunicorn hands it to the app
    headers = [("USER-AGENT", "Phone")]
    if referer:
        environ["HTTP_REFERER"] = referer
        headers.append(("REFERER", referer))
    response = SimpleNamespace(status="200 OK", headers=[("Content-Type", "text/html")], sent=1234)
    logger.access(response, SimpleNamespace(headers=headers), environ, timedelta(milliseconds=12))


@pytest.mark.parametrize("raw_uri, referer, logged, logged_referer", [
    (f"/p/{TOKEN}", None, "GET /p/… HTTP/1.1", "-"),
    (f"/p/{TOKEN}/poster.pdf?design=bold", None, "GET /p/… HTTP/1.1", "-"),
    (f"//p/{TOKEN}", None, "GET //p/… HTTP/1.1", "-"),
    (f"/%70/{TOKEN}", None, "GET /p/… HTTP/1.1", "-"),
    (f"/v/{VOUCHER}", None, "GET /v/… HTTP/1.1", "-"),
    (f"/api/v1/vouchers/{VOUCHER}/spend", None, "GET /api/v1/vouchers/… HTTP/1.1", "-"),
    (f"/patients/?q={PHONE}", f"https://clinic.test/patients/?q={PHONE}", "GET /patients/ HTTP/1.1",
     "https://clinic.test/patients/"),
    (f"/api/v1/patients?phone={PHONE}", None, "GET /api/v1/patients HTTP/1.1", "-"),
    ("/static/app.css?v=3", f"https://clinic.test/p/{TOKEN}?lang=en", "GET /static/app.css HTTP/1.1",
     "https://clinic.test/p/…"),
    ("/r/%E4%BD%A0", None, "GET /r/%E4%BD%A0 HTTP/1.1", "-"),
    ("/r/2NRS-VXZ3", None, "GET /r/2NRS-VXZ3 HTTP/1.1", "-"),  # a personal code: on every poster
    (f"/r/{VOUCHER}", None, "GET /r/… HTTP/1.1", "-"),  # a scratch card's code: what the scratch-off hid
    (f"/r/{VOUCHER.replace('-', '').lower()}/qr.svg", None, "GET /r/… HTTP/1.1", "-"),
])
def test_access_lines_mask_private_paths_and_leave_out_query_strings(logs, raw_uri, referer, logged,
                                                                     logged_referer):
    request(logs.logger, raw_uri, referer)
    line = logs.access.read_text()
    assert f'"{logged}" 200 1234 "{logged_referer}" "Phone"' in line
    assert TOKEN not in line and PHONE not in line and VOUCHER not in line


def test_every_path_atom_is_masked_in_a_custom_format(logs):
    logs.logger.cfg.set("access_log_format", "%(r)s|%(U)s|%(q)s|%(f)s|%({referer}i)s|%({raw_uri}e)s|"
                                             "%({path_info}e)s|%({query_string}e)s|%({http_referer}e)s")
    request(logs.logger, f"/p/{TOKEN}?phone={PHONE}", f"https://clinic.test/patients/?q={PHONE}")
    assert logs.access.read_text().strip() == ("GET /p/… HTTP/1.1|/p/…||https://clinic.test/patients/|"
                                               "https://clinic.test/patients/|/p/…|/p/…||https://clinic.test/patients/")


def test_an_error_gunicorn_answers_itself_is_masked_in_both_logs(logs):
    """The app raised past its handlers (its database down, say): gunicorn logs the request target it read."""
    for target in (f"/p/{TOKEN}?x=1", f"/%70/{TOKEN}", f"http://clinic.test/v/{VOUCHER}", f"/patients/?q={PHONE}"):
        request(logs.logger, target, routed=False)
        try:
            raise RuntimeError("the database went away")
        except RuntimeError:
            logs.logger.exception("Error handling request %s %s", "GET", target)
    access, error = logs.access.read_text(), logs.error.read_text()
    assert [line.split('"')[1] for line in access.splitlines()] == [
        "GET /p/… HTTP/1.1", "GET /p/… HTTP/1.1", "GET /v/… HTTP/1.1", "GET /patients/ HTTP/1.1"]
    assert error.count("Error handling request GET /p/…") == 2 and "Error handling request GET /v/…" in error
    assert "Error handling request GET /patients/\n" in error and "the database went away" in error
    for secret in (TOKEN, PHONE, VOUCHER):
        assert secret not in access and secret not in error


def test_a_request_gunicorn_could_not_read_is_masked_in_its_warning(logs):
    """gunicorn quotes the request line it refused (a control character in it, a bad version) in its warning."""
    for line in (f"GET /p/{TOKEN}\\x01 HTTP/1.1", f"GET /patients/?q={PHONE} HTTP/1.1 junk",
                 f"GET http://clinic.test/v/{VOUCHER} HTTP/9"):
        logs.logger.warning(f"Invalid request from ip=127.0.0.1: Invalid HTTP request line: '{line}'")
    error = logs.error.read_text()
    assert "request line: 'GET /p/… HTTP/1.1'" in error and "request line: 'GET /patients/ HTTP/1.1 junk'" in error
    assert "request line: 'GET /v/… HTTP/9'" in error and "ip=127.0.0.1" in error
    for secret in (TOKEN, PHONE, VOUCHER):
        assert secret not in error
