"""Webhooks and notifications: a real receiver on 127.0.0.1 gets each event once, signed; retries, crashes, SSRF.

The receiver is an ``http.server`` on a thread. It checks every request's signature the way the
README tells receivers to, and "processes" a delivery once however often it arrives (it drops
repeats by ``X-Clinic-Delivery``), like a real receiver must. Time is moved forward by passing
``now`` to the sender instead of sleeping through the backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from clinic import create_app
from clinic.extensions import db
from clinic.models import (AuditEvent, NotificationTemplate, OutboxEvent, Patient, Tier, Voucher, VoucherReminder,
                           WebhookDelivery, WebhookEndpoint)
from clinic.models._time import utcnow
from clinic.services import (audit, erasure, jobs, milestones, notifications, patients, redemption, vouchers,
                             webhook_sender, webhooks)
from clinic.services.errors import Refused
from clinic.services.transaction import Actor, atomic
from clinic.services.voucher_reminders import remind_expiring_vouchers
from tests.conftest import counts, friend
from tests.test_redemption import run_at_once

BUSINESS_EVENTS = ["referral.redeemed", "voucher.issued", "voucher.spent", "referral.milestone", "tier.reached"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Receiver:
    """An HTTP receiver on 127.0.0.1 answering with the statuses it is given (then 200), recording everything."""

    def __init__(self, secret: str | None = None, tls: ssl.SSLContext | None = None):
        self.secret = secret
        self.requests: list[dict] = []
        self.answers: list[int] = []
        self.redirect_to: str | None = None
        self.processed: dict[str, dict] = {}  # delivery id -> event, once each, as a receiver dedupes
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.requests.append({"headers": dict(self.headers), "body": body, "status": status,
                                              "path": self.path})
                    if 200 <= status < 300 and receiver.secret and receiver.verify(self.headers, body):
                        receiver.processed.setdefault(self.headers["X-Clinic-Delivery"], json.loads(body))
                self.send_response(status)
                if receiver.redirect_to:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/clinic?source=test"

    def verify(self, headers, body: bytes) -> bool:
        """What the README tells a receiver to do."""
        timestamp = headers["X-Clinic-Timestamp"]
        expected = hmac.new(self.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(headers["X-Clinic-Signature"], f"sha256={expected}")

    def events(self) -> list[dict]:
        return [json.loads(request["body"]) for request in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks(app):
    """The app as a clinic with its HIS on the local network; delivery only when a test asks for it."""
    app.config.update(WEBHOOK_ALLOW_PRIVATE_NETWORKS=True, WEBHOOK_SEND_AFTER_COMMIT=False)
    return app


@pytest.fixture
def receiver(hooks):
    receiver = Receiver()
    yield receiver
    receiver.close()


def register(receiver: Receiver, events=BUSINESS_EVENTS, manager_id: int | None = None) -> WebhookEndpoint:
    endpoint = webhooks.register_endpoint(webhooks.EndpointRules.from_form(url=receiver.url, events=events,
                                                                           description="HIS"),
                                          Actor(staff_id=manager_id))
    receiver.secret = endpoint.secret
    return endpoint


def outbox_count(event_type: str | None = None) -> int:
    query = select(func.count()).select_from(OutboxEvent)
    if event_type:
        query = query.where(OutboxEvent.event_type == event_type)
    result = db.session.scalar(query)
    db.session.rollback()
    return result


def deliveries() -> list[WebhookDelivery]:
    db.session.rollback()
    return list(db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_each_event_reaches_the_receiver_once_with_a_valid_signature(hooks, receiver, referrer, actor):
    register(receiver)
    with atomic():
        db.session.add(Tier(name="VIP", min_paid_referrals=1))
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    vouchers.spend_voucher(result.friend_voucher.code, actor)
    milestones.record_visit(result.friend.id, actor)
    milestones.record_payment(result.friend.id, 88_000, actor)

    report = webhook_sender.deliver_due()
    assert report.delivered == 7 and not report.problems
    assert webhook_sender.deliver_due().attempts == 0  # nothing twice

    events = receiver.events()
    assert [event["type"] for event in events] == [
        "referral.redeemed", "voucher.issued", "voucher.issued", "voucher.spent", "referral.milestone",
        "referral.milestone", "tier.reached"]
    assert len({request["headers"]["X-Clinic-Delivery"] for request in receiver.requests}) == len(events)
    assert len({event["id"] for event in events}) == len(events)
    for request, event in zip(receiver.requests, events):
        assert receiver.verify(request["headers"], request["body"])
        assert request["headers"]["X-Clinic-Event"] == event["type"]
        assert request["headers"]["Content-Type"].startswith("application/json")
        assert request["path"] == "/hooks/clinic?source=test"
    assert len(receiver.processed) == len(events)

    by_type = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event["data"])
    redeemed = by_type["referral.redeemed"][0]
    assert redeemed["referral_id"] == result.referral.id and redeemed["via"] == "personal_code"
    assert redeemed["referrer"] == {"id": referrer.id, "external_id": "MRN-1"}
    assert redeemed["friend"]["id"] == result.friend.id and redeemed["redeemed_at"].endswith("Z")
    issued = {data["beneficiary"]: data for data in by_type["voucher.issued"]}
    assert issued["referrer"]["amount"] == 20000 and issued["referrer"]["currency"] == "CNY"
    assert issued["referrer"]["code"] == result.referrer_voucher.code and issued["referrer"]["kind"] == "money"
    assert issued["friend"]["label"] == "1 bed-day waived"
    spent = by_type["voucher.spent"][0]
    assert spent["code"] == result.friend_voucher.code and spent["spent_at"].endswith("Z")
    milestone_data = {data["milestone"]: data for data in by_type["referral.milestone"]}
    assert set(milestone_data) == {"visited", "paid"}
    assert milestone_data["paid"]["paid_amount"] == 88_000 and milestone_data["paid"]["currency"] == "CNY"
    tier = by_type["tier.reached"][0]
    assert tier["patient"]["id"] == referrer.id and tier["tier"]["name"] == "VIP"

    everything = b"".join(request["body"] for request in receiver.requests).decode()
    for personal in ("Wang Li", "Chen Jie", "13811112222", "13933334444"):
        assert personal not in everything, personal  # no names or phones outside notifications
    assert all(d.status == "delivered" and d.attempts == 1 and d.last_status_code == 200 for d in deliveries())


def test_events_arrive_in_the_order_they_happened(hooks, receiver, referrer, actor):
    register(receiver, ["referral.redeemed", "voucher.issued", "voucher.spent"])
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    vouchers.spend_voucher(result.referrer_voucher.code, actor)
    webhook_sender.deliver_due()
    assert [event["type"] for event in receiver.events()] == [
        "referral.redeemed", "voucher.issued", "voucher.issued", "voucher.spent"]


def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_try(hooks, receiver, referrer, actor):
    register(receiver, ["referral.redeemed"])
    receiver.answers = [500, 503]
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    start = utcnow()

    assert webhook_sender.deliver_due(start).retrying == 1
    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    assert delivery.next_attempt_at == start + timedelta(seconds=30)
    assert webhook_sender.deliver_due(start + timedelta(seconds=29)).attempts == 0  # backing off

    second = start + timedelta(seconds=30)
    assert webhook_sender.deliver_due(second).retrying == 1
    [delivery] = deliveries()
    assert (delivery.attempts, delivery.last_status_code) == (2, 503)
    assert delivery.next_attempt_at == second + timedelta(seconds=60)  # twice the pause
    assert webhook_sender.deliver_due(second + timedelta(seconds=59)).attempts == 0

    third = second + timedelta(seconds=60)
    assert webhook_sender.deliver_due(third).delivered == 1
    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert delivery.delivered_at == third
    assert [request["status"] for request in receiver.requests] == [500, 503, 200]
    assert len({request["headers"]["X-Clinic-Delivery"] for request in receiver.requests}) == 1
    assert len({request["body"] for request in receiver.requests}) == 1  # the same event each time
    assert all(receiver.verify(request["headers"], request["body"]) for request in receiver.requests)
    assert len(receiver.processed) == 1
    assert webhook_sender.deliver_due(third + timedelta(days=1)).attempts == 0


def test_after_the_last_attempt_a_delivery_fails_and_a_manager_can_resend_it(hooks, receiver, referrer, actor,
                                                                              manager):
    hooks.config["WEBHOOK_MAX_ATTEMPTS"] = 2
    endpoint = register(receiver, ["referral.redeemed"])
    receiver.answers = [500, 500]
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    start = utcnow()
    webhook_sender.deliver_due(start)
    assert webhook_sender.deliver_due(start + timedelta(minutes=1)).failed == 1
    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert webhook_sender.deliver_due(start + timedelta(days=30)).attempts == 0  # given up

    page = manager.get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
    assert "failed" in page and "HTTP 500" in page and f"/admin/webhooks/deliveries/{delivery.id}/resend" in page
    assert manager.post(f"/admin/webhooks/deliveries/{delivery.id}/resend").status_code == 303
    refused = manager.post(f"/admin/webhooks/deliveries/{delivery.id}/resend")  # already waiting
    assert refused.status_code == 409 and "already waiting" in refused.get_data(as_text=True)
    assert manager.post("/admin/webhooks/deliveries/999999/resend").status_code == 404

    assert webhook_sender.deliver_due().delivered == 1
    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert [request["status"] for request in receiver.requests] == [500, 500, 200]
    resent = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "webhook.resent")
    assert db.session.scalar(resent) == 1

    # A delivered one can be resent too (the receiver lost it): same delivery id, so a receiver may drop it.
    assert manager.post(f"/admin/webhooks/deliveries/{delivery.id}/resend").status_code == 303
    webhook_sender.deliver_due()
    assert len(receiver.requests) == 4 and len(receiver.processed) == 1


CRASHING_DESK = """
import os, sys
from clinic import create_app
from clinic.services import redemption
from clinic.services.patients import PatientDetails
from clinic.services.transaction import Actor

app = create_app({"TESTING": True, "SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": sys.argv[1],
                  "WEBHOOK_SEND_AFTER_COMMIT": False})
with app.app_context():
    redemption.redeem_code(sys.argv[2], PatientDetails(full_name="Zhou Bo", phone="13955556666"), Actor())
    print("committed", flush=True)
    os._exit(9)  # the process dies with the event committed and nothing sent
"""


def restarted_app(app):
    return create_app({"TESTING": True, "SECRET_KEY": "test-secret", "RATELIMIT_ENABLED": False,
                       "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                       "WEBHOOK_ALLOW_PRIVATE_NETWORKS": True, "WEBHOOK_SEND_AFTER_COMMIT": False})


def test_a_crash_between_the_event_and_its_delivery_loses_nothing(hooks, receiver, referrer):
    register(receiver, ["referral.redeemed", "voucher.issued"])
    db.session.rollback()
    crashed = subprocess.run([sys.executable, "-c", CRASHING_DESK, hooks.config["SQLALCHEMY_DATABASE_URI"],
                              referrer.personal_code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert crashed.returncode == 9 and "committed" in crashed.stdout, crashed.stderr
    assert receiver.requests == []
    assert [d.status for d in deliveries()] == ["pending"] * 3

    restarted = restarted_app(hooks)
    try:
        with restarted.app_context():
            output = restarted.test_cli_runner().invoke(args=["deliver-webhooks", "--once"]).output
            assert "Delivered 3, will retry 0, gave up on 0." in output
            assert webhook_sender.deliver_due().attempts == 0
            db.session.remove()
    finally:
        with restarted.app_context():
            db.engine.dispose()
    assert sorted(event["type"] for event in receiver.events()) == ["referral.redeemed", "voucher.issued",
                                                                    "voucher.issued"]
    assert len(receiver.processed) == 3
    assert all(receiver.verify(request["headers"], request["body"]) for request in receiver.requests)


def test_a_sender_that_dies_while_sending_is_replaced_when_its_lease_runs_out(hooks, receiver, referrer, actor):
    register(receiver, ["referral.redeemed"])
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    now = utcnow()
    claim = webhook_sender.claim_next(now)  # ...and the sender holding it dies before posting
    assert claim is not None
    assert webhook_sender.deliver_due(now).attempts == 0  # another sender leaves the claimed delivery alone
    later = now + webhook_sender.CLAIM_LEASE
    assert webhook_sender.deliver_due(later).delivered == 1
    # The dead sender's outcome, had it come back late, changes nothing any more.
    webhook_sender.record(claim, webhook_sender.Outcome(False, 500, "HTTP 500"), later, max_attempts=8,
                          base_seconds=30, max_seconds=3600)
    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert len(receiver.requests) == 1


def test_several_senders_at_once_never_send_the_same_delivery_twice(hooks, receiver, referrer, actor):
    register(receiver, ["voucher.issued"])
    for number in range(6):
        redemption.redeem_code(referrer.personal_code, friend(f"Friend {number}", f"1390000{number:04d}"), actor)
    db.session.rollback()
    barrier = threading.Barrier(4)
    errors = []

    def sender():
        with hooks.app_context():
            try:
                barrier.wait()
                webhook_sender.deliver_due()
            except Exception as problem:  # noqa: BLE001 - reported below
                errors.append(problem)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    ids = [request["headers"]["X-Clinic-Delivery"] for request in receiver.requests]
    assert len(ids) == 12 and len(set(ids)) == 12
    assert all(d.status == "delivered" and d.attempts == 1 for d in deliveries())


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hooks",
    "http://127.1/hooks",
    "http://10.1.2.3/hooks",
    "http://192.168.1.20/his",
    "http://172.16.0.1/",
    "http://100.64.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hooks",
    "http://[::ffff:127.0.0.1]/hooks",
    "http://[fd00::1]/hooks",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://localhost:5000/hooks",
    "file:///etc/passwd",
    "ftp://93.184.215.14/",
    "gopher://93.184.215.14/",
    "javascript:alert(1)",
    "http://user:secret@93.184.215.14/hooks",
    "http:///nohost",
    "http://93.184.215.14:99999/",
    "http://host.invalid/hooks",
    "https://93.184.215.14/a b",
    "",
])
def test_unsafe_receiver_addresses_are_refused(app, url):
    app.config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = False
    with pytest.raises(Refused) as refused:
        webhook_sender.check_url(url, allow_private=False)
    assert refused.value.field == "url" and refused.value.message


def test_public_addresses_are_accepted_and_private_ones_only_when_allowed(app):
    target = webhook_sender.check_url("https://93.184.215.14/hooks?x=1", allow_private=False)
    assert (target.scheme, target.port, target.path, target.address) == ("https", 443, "/hooks?x=1", "93.184.215.14")
    assert webhook_sender.check_url("http://10.0.0.7:8080/his", allow_private=True).address == "10.0.0.7"
    assert webhook_sender.check_url("http://localhost:8080/his", allow_private=True).address in ("127.0.0.1", "::1")
    with pytest.raises(Refused, match="link-local"):  # the cloud metadata service, even on-premise
        webhook_sender.check_url("http://169.254.169.254/", allow_private=True)
    with pytest.raises(Refused, match="WEBHOOK_ALLOW_PRIVATE_NETWORKS"):
        webhook_sender.check_url("http://10.0.0.7/", allow_private=False)


# Spellings of cloud metadata services and of reserved addresses that reach them; none is allowed even when the
# clinic allows private networks.
METADATA_URLS = [
    "http://[64:ff9b::a9fe:a9fe]/",        # NAT64 (well-known prefix) of 169.254.169.254
    "http://[::ffff:169.254.169.254]/",    # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::]/",          # 6to4
    "http://2852039166/",                  # 169.254.169.254 as one decimal number
    "http://0251.0376.0251.0376/",         # in octal
    "http://0xa9fea9fe/",                  # in hexadecimal
    "http://169.254.43518/",
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud, inside carrier-grade NAT space
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS instance metadata over IPv6, inside unique-local space
    "http://[fd20:ce::254]/",              # Google Cloud over IPv6
    "http://168.63.129.16/",               # Azure WireServer
    "http://192.0.0.192/",                 # Oracle Cloud Classic
    "http://[64:ff9b:1::a9fe:a9fe]/",      # local-use NAT64 prefix: reserved
    "http://[::169.254.169.254]/",         # IPv4-compatible (deprecated): reserved
    "http://[::ffff:0:a9fe:a9fe]/",        # IPv4-translated: reserved
    "http://[2001::a9fe:a9fe]/",           # Teredo: reserved
    "http://198.18.0.1/",                  # benchmarking: reserved
]


@pytest.mark.parametrize("url", METADATA_URLS)
@pytest.mark.parametrize("allow_private", [False, True], ids=["public-only", "private-allowed"])
def test_metadata_services_and_reserved_addresses_are_refused_in_every_spelling(app, url, allow_private):
    with pytest.raises(Refused) as refused:
        webhook_sender.check_url(url, allow_private=allow_private)
    assert refused.value.field == "url"
    assert "WEBHOOK_ALLOW_PRIVATE_NETWORKS" not in refused.value.message  # allowing them would not help


@pytest.mark.parametrize("url, address", [
    ("http://[64:ff9b::808:808]/", "64:ff9b::808:808"),  # NAT64 of 8.8.8.8: a public receiver behind NAT64
    ("http://[2002:808:808::1]/", "2002:808:808::1"),
])
def test_an_ipv6_address_reaching_a_public_ipv4_address_is_accepted(app, url, address):
    assert webhook_sender.check_url(url, allow_private=False).address == address


@pytest.mark.parametrize("url", ["http://[64:ff9b::a00:7]/", "http://[64:ff9b::7f00:1]/", "http://[2002:a00:7::]/"])
def test_an_ipv6_address_reaching_a_private_ipv4_address_needs_private_networks_allowed(app, url):
    with pytest.raises(Refused, match="WEBHOOK_ALLOW_PRIVATE_NETWORKS"):
        webhook_sender.check_url(url, allow_private=False)
    assert webhook_sender.check_url(url, allow_private=True)


def test_the_address_is_checked_again_when_sending(hooks, receiver, referrer, actor, monkeypatch):
    """Registered while allowed (or while the name resolved elsewhere), refused at send time: nothing leaves."""
    register(receiver, ["referral.redeemed"])
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    hooks.config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = False
    assert webhook_sender.deliver_due().retrying == 1
    [delivery] = deliveries()
    assert "loopback" in delivery.last_error and delivery.last_status_code is None
    assert receiver.requests == []


def test_a_host_name_that_turns_into_a_private_address_is_not_followed(hooks, receiver, referrer, actor,
                                                                      monkeypatch):
    hooks.config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = False
    answers = {"hooks.example.test": "93.184.215.14"}
    fake_dns(monkeypatch, answers)
    port = receiver.server.server_address[1]
    endpoint = webhooks.register_endpoint(webhooks.EndpointRules.from_form(
        url=f"http://hooks.example.test:{port}/hooks", events=["referral.redeemed"]), actor)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    answers["hooks.example.test"] = "127.0.0.1"  # DNS rebinding: now it points at this computer
    assert webhook_sender.deliver_due().retrying == 1
    assert receiver.requests == [] and "loopback" in deliveries()[0].last_error

    # On-premise, the same name may point inside: the request goes to the address that was checked.
    hooks.config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = True
    receiver.secret = endpoint.secret
    assert webhook_sender.deliver_due(utcnow() + timedelta(minutes=1)).delivered == 1
    assert receiver.requests[0]["headers"]["Host"] == f"hooks.example.test:{port}"


@pytest.mark.parametrize("address", ["169.254.169.254", "64:ff9b::a9fe:a9fe", "::ffff:169.254.169.254",
                                     "2002:a9fe:a9fe::", "100.100.100.200", "fd00:ec2::254"])
def test_a_host_name_that_turns_into_a_metadata_service_is_not_followed_even_on_premise(
        hooks, receiver, referrer, actor, monkeypatch, address):
    """DNS rebinding: public when the endpoint is saved, the metadata service when the event is sent."""
    answers = {"hooks.example.test": "93.184.215.14"}
    fake_dns(monkeypatch, answers)
    webhooks.register_endpoint(webhooks.EndpointRules.from_form(
        url=f"http://hooks.example.test:{receiver.server.server_address[1]}/hooks", events=["referral.redeemed"]),
        actor)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    answers["hooks.example.test"] = address
    connections = []
    monkeypatch.setattr(webhook_sender.socket, "create_connection", lambda *args, **kwargs: connections.append(args))
    assert webhook_sender.deliver_due().retrying == 1
    assert connections == [] and receiver.requests == []
    assert "Webhooks cannot go to hooks.example.test" in deliveries()[0].last_error


def fake_dns(monkeypatch, answers: dict[str, str]) -> None:
    """Host names resolve as ``answers`` say (the dict may change during the test); others as usual."""
    real = webhook_sender.socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):
        if host in answers:
            return [(2, 1, 6, "", (answers[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(webhook_sender.socket, "getaddrinfo", resolve)


@pytest.fixture
def certificates(tmp_path):
    """A test certificate authority and a certificate it signed for hooks.clinic.test."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (tmp_path / "san.cnf").write_text("subjectAltName=DNS:hooks.clinic.test\n")
    for command in (["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Test CA"],
                    ["req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=hooks.clinic.test"],
                    ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                     "-out", "server.pem", "-days", "2", "-extfile", "san.cnf"]):
        subprocess.run(["openssl", *command], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def test_https_receivers_get_the_event_with_their_certificate_checked(hooks, referrer, actor, monkeypatch,
                                                                      certificates):
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    receiver = Receiver(tls=server_tls)
    try:
        fake_dns(monkeypatch, {"hooks.clinic.test": "127.0.0.1"})
        port = receiver.server.server_address[1]
        endpoint = webhooks.register_endpoint(webhooks.EndpointRules.from_form(
            url=f"https://hooks.clinic.test:{port}/hooks", events=["referral.redeemed"]), actor)
        receiver.secret = endpoint.secret
        redemption.redeem_code(referrer.personal_code, friend(), actor)

        assert webhook_sender.deliver_due().retrying == 1  # a certificate no trusted authority signed
        assert "certificate" in deliveries()[0].last_error and receiver.requests == []

        trusting = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
        monkeypatch.setattr(webhook_sender, "tls_context", lambda: trusting)
        assert webhook_sender.deliver_due(utcnow() + timedelta(minutes=1)).delivered == 1
        assert len(receiver.processed) == 1
        assert receiver.requests[0]["headers"]["Host"] == f"hooks.clinic.test:{port}"
    finally:
        receiver.close()


def test_redirects_are_not_followed(hooks, receiver, referrer, actor):
    register(receiver, ["referral.redeemed"])
    receiver.answers = [302]
    receiver.redirect_to = "http://169.254.169.254/latest/meta-data/"
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert webhook_sender.deliver_due().retrying == 1
    [delivery] = deliveries()
    assert delivery.last_status_code == 302 and "redirect" in delivery.last_error
    assert len(receiver.requests) == 1


def test_an_unreachable_receiver_is_a_failed_attempt(hooks, referrer, actor):
    closed = Receiver()
    register(closed, ["referral.redeemed"])
    closed.close()
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert webhook_sender.deliver_due().retrying == 1
    [delivery] = deliveries()
    assert delivery.last_status_code is None and delivery.last_error


def test_nothing_is_written_when_the_business_transaction_rolls_back(hooks, receiver, referrer, actor, monkeypatch):
    register(receiver)
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)
    written = outbox_count()

    with pytest.raises(Refused):  # the friend is the referrer
        redemption.redeem_code(referrer.personal_code, friend("Wang Li", "13811112222"), actor)
    vouchers.spend_voucher(result.friend_voucher.code, actor)
    with pytest.raises(Refused):  # already spent
        vouchers.spend_voucher(result.friend_voucher.code, actor)
    assert outbox_count() == written + 1  # the one spend that happened

    def broken(*args, **kwargs):
        raise RuntimeError("the disk is full")

    # referral.redeemed is emitted before the vouchers: a failure after it takes the event down too.
    monkeypatch.setattr(redemption, "reward_redemption", broken)
    with pytest.raises(RuntimeError):
        redemption.redeem_code(referrer.personal_code, friend("Liu Yang", "13900009999"), actor)
    assert outbox_count() == written + 1
    assert len(deliveries()) == (written + 1)
    webhook_sender.deliver_due()
    assert "Liu" not in "".join(request["body"].decode() for request in receiver.requests)


def test_nobody_subscribed_nothing_written_and_disabled_endpoints_get_nothing(hooks, receiver, referrer, actor,
                                                                             manager):
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert outbox_count() == 0
    endpoint = register(receiver, ["voucher.spent"])
    redemption.redeem_code(referrer.personal_code, friend("Li Lei", "13900001234"), actor)
    assert outbox_count() == 0  # voucher.spent only

    result = redemption.redeem_code(referrer.personal_code, friend("Han Mei", "13900004321"), actor)
    vouchers.spend_voucher(result.referrer_voucher.code, actor)  # queued for the endpoint...
    assert manager.post(f"/admin/webhooks/{endpoint.id}/disable").status_code == 303
    vouchers.spend_voucher(result.friend_voucher.code, actor)  # ...not this one: disabled
    assert outbox_count("voucher.spent") == 1
    assert webhook_sender.deliver_due().attempts == 0  # what waits for a disabled endpoint stays waiting
    assert manager.post(f"/admin/webhooks/{endpoint.id}/enable").status_code == 303
    assert webhook_sender.deliver_due().delivered == 1

    endpoint_id = endpoint.id
    assert manager.post(f"/admin/webhooks/{endpoint_id}/delete").status_code == 303
    assert deliveries() == [] and db.session.get(WebhookEndpoint, endpoint_id) is None
    actions = set(db.session.scalars(select(AuditEvent.action).where(AuditEvent.action.like("webhook.%"))))
    assert actions == {"webhook.created", "webhook.disabled", "webhook.enabled", "webhook.deleted"}


def test_after_commit_a_background_job_sends_at_once(hooks, receiver, referrer, actor):
    hooks.config["WEBHOOK_SEND_AFTER_COMMIT"] = True
    register(receiver, ["referral.redeemed"])
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    jobs.wait_for_all()
    assert len(receiver.processed) == 1
    assert deliveries()[0].status == "delivered"


def consenting(patient_id: int, channel: str = "sms", language: str = "zh_CN", consent: bool = True) -> Patient:
    return notifications.set_preferences(patient_id, channel, language, consent, Actor())


def test_notifications_go_only_to_patients_who_agreed(hooks, receiver, referrer, make_patient, actor):
    register(receiver, ["notification.requested"])
    consenting(referrer.id)
    with atomic():
        db.session.add(Tier(name="VIP", min_paid_referrals=1))
    result = redemption.redeem_code(referrer.personal_code, friend(), actor)  # the friend has not agreed
    milestones.record_payment(result.friend.id, None, actor)  # a visit too: "your friend visited"
    webhook_sender.deliver_due()

    messages = {event["data"]["template"]: event["data"] for event in receiver.events()}
    assert set(messages) == {"reward_earned", "friend_visited", "tier_reached"}
    for message in messages.values():
        assert message["channel"] == "sms" and message["language"] == "zh_CN"
        assert message["to"] == {"patient_id": referrer.id, "external_id": "MRN-1", "phone": "13811112222",
                                 "name": "Wang Li"}
    assert messages["reward_earned"]["text"].startswith("Wang Li，您在Test Clinic获得一份奖励：¥200.00代金券")
    assert "Chen J." in messages["friend_visited"]["text"] and "Chen Jie" not in messages["friend_visited"]["text"]
    assert "VIP会员" in messages["tier_reached"]["text"]
    assert messages["reward_earned"]["about"]["voucher_id"] == result.referrer_voucher.id

    # Without consent (or after it is withdrawn), nothing at all is emitted.
    other, _token = make_patient(full_name="Zhao Min", phone="13822223333")
    consenting(other.id, channel="sms", consent=False)
    consenting(referrer.id, consent=False)
    before = outbox_count("notification.requested")
    redemption.redeem_code(other.personal_code, friend("Sun Li", "13900002222"), actor)
    redemption.redeem_code(referrer.personal_code, friend("Qian Bo", "13900003333"), actor)
    assert outbox_count("notification.requested") == before == 3


def test_the_managers_wording_and_the_patients_language_are_used(hooks, receiver, referrer, actor, manager):
    register(receiver, ["notification.requested"])
    consenting(referrer.id, channel="wechat", language="en")
    response = manager.post("/admin/notifications", {
        "reward_earned-en": "Hi {name}! {reward} at {clinic}, until {expires}.", "reward_earned-zh_CN": ""})
    assert response.status_code == 303
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    webhook_sender.deliver_due()
    [message] = [event["data"] for event in receiver.events()]
    assert message["channel"] == "wechat" and message["language"] == "en"
    assert message["text"].startswith("Hi Wang Li! CN¥200.00 off at Test Clinic, until 20")

    before = counts()
    refused = manager.post("/admin/notifications", {"reward_earned-en": "Hi {name.__class__} {phone}",
                                                    "tier_reached-en": "Fine {tier}"})
    assert refused.status_code == 422 and "Unknown placeholder" in refused.get_data(as_text=True)
    assert db.session.scalars(select(NotificationTemplate.text)).all() == [
        "Hi {name}! {reward} at {clinic}, until {expires}."]
    assert counts() == before
    assert manager.post("/admin/notifications", {"reward_earned-en": ""}).status_code == 303  # built-in again
    assert db.session.scalar(select(func.count()).select_from(NotificationTemplate)) == 0


def test_no_message_without_a_gateway_subscribed(hooks, receiver, referrer, actor):
    register(receiver, ["voucher.issued"])
    consenting(referrer.id)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert outbox_count("notification.requested") == 0


def test_staff_record_consent_at_enrolment_and_on_the_patient_page(desk):
    response = desk.post("/patients/new", {"full_name": "Li Na", "phone": "13800138000", "preferred_channel": "sms",
                                           "preferred_language": "en", "notification_consent": "y"})
    assert response.status_code == 303
    patient = db.session.scalar(select(Patient).where(Patient.full_name == "Li Na"))
    assert (patient.preferred_channel, patient.preferred_language, patient.notification_consent) == ("sms", "en", True)
    assert patient.notification_consent_at is not None

    no_phone = desk.post("/patients/new", {"full_name": "Wu Fan", "preferred_channel": "sms",
                                           "notification_consent": "y"})
    assert no_phone.status_code == 422 and "phone number" in no_phone.get_data(as_text=True)
    no_channel = desk.post("/patients/new", {"full_name": "Wu Fan", "phone": "13800138001",
                                             "notification_consent": "y"})
    assert no_channel.status_code == 422 and "SMS or WeChat" in no_channel.get_data(as_text=True)

    page = desk.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert "Agreed on" in page and "138****8000" in page
    withdrawn = desk.post(f"/patients/{patient.id}/notifications", {"preferred_channel": "sms",
                                                                    "preferred_language": "en"})
    assert withdrawn.status_code == 303
    db.session.refresh(patient)
    assert patient.notification_consent is False and patient.notification_consent_at is None
    bad = desk.post(f"/patients/{patient.id}/notifications", {"preferred_channel": "telegram",
                                                              "preferred_language": "en", "notification_consent": "y"})
    assert bad.status_code == 422 and "Pick SMS, WeChat" in bad.get_data(as_text=True)
    assert desk.post(f"/patients/{patient.id}/notifications", {}).status_code == 422
    assert desk.post("/patients/999999/notifications", {"preferred_channel": "none",
                                                        "preferred_language": "en"}).status_code == 404
    actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.patient_id == patient.id)).all()
    assert "patient.notification_consent" in actions


def test_the_desk_redemption_form_still_works_without_the_message_fields(desk, referrer):
    response = desk.post("/desk/redeem", {"code": referrer.personal_code, "full_name": "Chen Jie",
                                          "phone": "13933334444"})
    assert response.status_code == 303, response.get_data(as_text=True)
    friend_row = db.session.scalar(select(Patient).where(Patient.full_name == "Chen Jie"))
    assert (friend_row.preferred_channel, friend_row.notification_consent) == ("none", False)


def test_a_manager_adds_an_endpoint_and_sees_its_secret_once(hooks, manager, receiver):
    response = manager.post("/admin/webhooks", {"url": receiver.url, "description": "HIS",
                                                "events": ["voucher.issued", "tier.reached"]})
    assert response.status_code == 201
    endpoint = db.session.scalar(select(WebhookEndpoint))
    assert endpoint.events == ["voucher.issued", "tier.reached"] and len(endpoint.secret) == 64
    page = response.get_data(as_text=True)
    assert endpoint.secret in page and "shown only this once" in page and "X-Clinic-Signature" in page
    again = manager.get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
    assert endpoint.secret not in again and "X-Clinic-Signature" in again and "Make a new secret" in again

    hooks.config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = False
    before = counts()
    refused = manager.post("/admin/webhooks", {"url": receiver.url, "events": ["voucher.issued"]})
    assert refused.status_code == 422 and "loopback" in refused.get_data(as_text=True)
    no_events = manager.post("/admin/webhooks", {"url": "https://93.184.215.14/hooks"})
    assert no_events.status_code == 422 and "at least one event" in no_events.get_data(as_text=True)
    assert 'value="https://93.184.215.14/hooks"' in no_events.get_data(as_text=True)
    assert counts() == before
    assert db.session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 1


def test_front_desk_staff_cannot_open_the_webhook_pages(desk):
    for url in ("/admin/webhooks", "/admin/notifications"):
        assert desk.get(url).status_code == 403
    adding = desk.post("/admin/webhooks", {"url": "https://93.184.215.14/", "events": ["voucher.issued"]})
    assert adding.status_code == 403


def test_the_readme_verification_example_accepts_a_real_delivery(hooks, receiver, referrer, actor):
    """The snippet in README "Webhooks" is run as written against a delivery the receiver got."""
    endpoint = register(receiver, ["referral.redeemed"])
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    webhook_sender.deliver_due()
    readme = (PROJECT_ROOT / "README.md").read_text()
    snippet = readme.split("<!-- verify-webhook -->", 2)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - our own documentation
    request = receiver.requests[0]
    headers = request["headers"]
    assert namespace["verify"](endpoint.secret, headers["X-Clinic-Timestamp"], headers["X-Clinic-Signature"],
                               request["body"])
    assert not namespace["verify"](endpoint.secret, headers["X-Clinic-Timestamp"], headers["X-Clinic-Signature"],
                                   request["body"] + b" ")
    assert not namespace["verify"]("wrong secret", headers["X-Clinic-Timestamp"], headers["X-Clinic-Signature"],
                                   request["body"])


def test_old_finished_deliveries_and_their_events_are_pruned_and_pending_ones_stay(hooks, receiver, referrer, actor,
                                                                                    make_patient):
    register(receiver, ["referral.redeemed"])
    hooks.config["WEBHOOK_MAX_ATTEMPTS"] = 1
    receiver.answers = [200, 500]
    for number in range(3):
        redemption.redeem_code(make_patient()[0].personal_code, friend(f"Friend {number}", f"1393333444{number}"),
                               actor)
    webhook_sender.deliver_due()  # one delivered, one failed for good, one left pending below
    with atomic():
        states = [delivery.status for delivery in db.session.scalars(select(WebhookDelivery)
                                                                     .order_by(WebhookDelivery.id))]
        db.session.execute(update(WebhookDelivery).where(WebhookDelivery.id == select(func.max(WebhookDelivery.id))
                                                         .scalar_subquery()).values(status="pending"))
        old = utcnow() - timedelta(days=91)
        db.session.execute(update(WebhookDelivery).values(created_at=old))
        db.session.execute(update(OutboxEvent).values(created_at=old))
    assert sorted(states[:2]) == ["delivered", "failed"]

    result = hooks.test_cli_runner().invoke(args=["prune-webhooks", "--days", "90"])
    assert result.exit_code == 0, result.output
    assert "Deleted 2 finished deliveries and 2 events" in result.output
    assert [delivery.status for delivery in deliveries()] == ["pending"]
    assert outbox_count() == 1
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == "webhooks.pruned")) == 1

    again = hooks.test_cli_runner().invoke(args=["prune-webhooks", "--days", "90"])
    assert "Deleted 0 finished deliveries and 0 events" in again.output
    assert hooks.test_cli_runner().invoke(args=["prune-webhooks", "--days", "0"]).exit_code != 0


def withdraw(patient_id: int) -> None:
    notifications.set_preferences(patient_id, "none", "zh_CN", False, Actor())


def delivery_of(event_type: str) -> WebhookDelivery:
    [delivery] = [d for d in deliveries() if d.event.event_type == event_type]
    return delivery


def point_at(endpoint_id: int, receiver: Receiver) -> None:
    """The gateway is back (on another port): the endpoint's address now reaches it."""
    with atomic():
        endpoint = db.session.get(WebhookEndpoint, endpoint_id)
        endpoint.url = receiver.url
        receiver.secret = endpoint.secret


def test_withdrawing_consent_cancels_the_messages_waiting_for_a_gateway_that_was_down(hooks, referrer, desk,
                                                                                       manager, actor):
    """The reviewer's case: the SMS gateway is down, the patient withdraws, the gateway comes back: no SMS."""
    closed = Receiver()
    endpoint = register(closed, ["notification.requested", "referral.redeemed"])
    closed.close()
    consenting(referrer.id)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert webhook_sender.deliver_due().retrying == 2
    waiting = delivery_of("notification.requested")
    assert waiting.status == "pending" and waiting.last_error == "connection refused"

    response = desk.post(f"/patients/{referrer.id}/notifications", {"preferred_channel": "none",
                                                                    "preferred_language": "zh_CN"})
    assert response.status_code == 303
    cancelled = delivery_of("notification.requested")
    assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "no_consent")
    assert cancelled.cancelled_at is not None
    assert delivery_of("referral.redeemed").status == "pending"  # not a message: it still goes
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "patient.notification_consent")
                              .order_by(AuditEvent.id.desc()))
    assert event.patient_id == referrer.id and event.details["cancelled_messages"] == [cancelled.id]

    gateway = Receiver()
    try:
        point_at(endpoint.id, gateway)
        assert webhook_sender.deliver_due(utcnow() + timedelta(minutes=1)).describe() == (
            "Delivered 1, will retry 0, gave up on 0.")
        assert [event["type"] for event in gateway.events()] == ["referral.redeemed"]
    finally:
        gateway.close()
    assert delivery_of("notification.requested").status == "cancelled"

    for page in (manager.get("/admin/webhooks"), manager.get(f"/admin/webhooks/{endpoint.id}?status=cancelled")):
        text = page.get_data(as_text=True)
        assert "cancelled" in text and "the patient no longer agrees to messages by this channel" in text
    assert f"/admin/webhooks/deliveries/{cancelled.id}/resend" in text  # listed under "cancelled"


@pytest.mark.parametrize("change, reason", [
    ({"notification_consent": False}, "no_consent"),
    ({"preferred_channel": "wechat"}, "no_consent"),
    ({"phone": "13899998888"}, "phone_changed"),
])
def test_a_message_goes_only_if_the_patient_still_agrees_when_it_is_sent(hooks, receiver, referrer, actor, change,
                                                                          reason):
    """Checked by the sender itself, whatever changed the patient (an older version, another tool, the database)."""
    register(receiver, ["notification.requested", "referral.redeemed"])
    consenting(referrer.id)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    with atomic():
        db.session.execute(update(Patient).where(Patient.id == referrer.id).values(**change))

    report = webhook_sender.deliver_due()
    assert (report.delivered, report.cancelled, report.attempts) == (1, 1, 1)
    assert "Cancelled 1 message(s)" in report.describe()
    assert [event["type"] for event in receiver.events()] == ["referral.redeemed"]
    cancelled = delivery_of("notification.requested")
    assert (cancelled.status, cancelled.cancel_reason, cancelled.attempts) == ("cancelled", reason, 0)
    audited = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "webhook.cancelled"))
    assert (audited.patient_id, audited.reason, audited.details["delivery_id"]) == (referrer.id, reason, cancelled.id)
    assert webhook_sender.deliver_due(utcnow() + timedelta(days=1)).attempts == 0


def test_a_message_still_agreed_to_is_sent_after_the_gateway_comes_back(hooks, referrer, actor):
    closed = Receiver()
    endpoint = register(closed, ["notification.requested"])
    closed.close()
    consenting(referrer.id)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert webhook_sender.deliver_due().retrying == 1
    consenting(referrer.id, language="en")  # another language: still the same consent, channel and phone
    gateway = Receiver()
    try:
        point_at(endpoint.id, gateway)
        assert webhook_sender.deliver_due(utcnow() + timedelta(minutes=1)).delivered == 1
        assert gateway.events()[0]["data"]["to"]["phone"] == "13811112222"
    finally:
        gateway.close()


def test_a_withdrawal_while_the_message_is_being_posted_leaves_an_honest_record(hooks, receiver, referrer, actor):
    """A message already handed to the gateway cannot be called back: accepted, it is recorded as delivered."""
    register(receiver, ["notification.requested"])
    consenting(referrer.id)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    now = utcnow()
    claim = webhook_sender.claim_next(now)
    withdraw(referrer.id)
    assert delivery_of("notification.requested").status == "cancelled"
    webhook_sender.record(claim, webhook_sender.Outcome(True, 200), now, max_attempts=8, base_seconds=30,
                          max_seconds=3600)
    delivery = delivery_of("notification.requested")
    assert (delivery.status, delivery.cancel_reason) == ("delivered", None)

    # Refused by the gateway instead, it stays cancelled: no retry.
    consenting(referrer.id)
    redemption.redeem_code(referrer.personal_code, friend("Li Lei", "13900001234"), actor)
    now = utcnow()
    claim = webhook_sender.claim_next(now)
    withdraw(referrer.id)
    webhook_sender.record(claim, webhook_sender.Outcome(False, 503, "HTTP 503"), now, max_attempts=8,
                          base_seconds=30, max_seconds=3600)
    assert [d.status for d in deliveries()] == ["delivered", "cancelled"]


def test_a_withdrawal_while_a_sender_checks_the_message_neither_deadlocks_nor_lets_it_go(hooks, receiver, referrer,
                                                                                        actor, backend, monkeypatch):
    """The sender holds the delivery's row and then waits for the patient's; the withdrawal holds the patient's
    row, so it must not wait for the delivery's: PostgreSQL would abort one of the two as a deadlock."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: the withdrawal waits for the whole claim")
    register(receiver, ["notification.requested"])
    consenting(referrer.id)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    db.session.rollback()
    checking, errors, reports = threading.Event(), [], []
    real = notifications.withheld_because

    def slow(payload, patient=None):
        if patient is None:  # the sender's check, with the delivery's row locked
            checking.set()
            time.sleep(1)  # the withdrawal takes the patient's row meanwhile
        return real(payload, patient)

    monkeypatch.setattr(notifications, "withheld_because", slow)

    def sender():
        with hooks.app_context():
            try:
                reports.append(webhook_sender.deliver_due())
            except Exception as problem:  # noqa: BLE001 - reported below
                errors.append(problem)
            finally:
                db.session.remove()

    thread = threading.Thread(target=sender)
    thread.start()
    assert checking.wait(30)
    withdraw(referrer.id)
    thread.join(60)
    assert not errors
    assert reports[0].cancelled == 1 and receiver.requests == []
    assert delivery_of("notification.requested").cancel_reason == "no_consent"


def test_resending_a_message_the_patient_no_longer_agrees_to_is_refused(hooks, receiver, referrer, actor, manager):
    register(receiver, ["notification.requested"])
    consenting(referrer.id)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert webhook_sender.deliver_due().delivered == 1
    delivered = delivery_of("notification.requested")
    withdraw(referrer.id)

    refused = manager.post(f"/admin/webhooks/deliveries/{delivered.id}/resend")
    assert refused.status_code == 409
    assert "cannot be sent again: the patient no longer agrees" in refused.get_data(as_text=True)
    assert delivery_of("notification.requested").status == "delivered"
    assert webhook_sender.deliver_due().attempts == 0 and len(receiver.requests) == 1
    assert not db.session.scalar(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "webhook.resent"))
    with pytest.raises(Refused) as phone_changed:
        with atomic():
            db.session.execute(update(Patient).where(Patient.id == referrer.id)
                               .values(notification_consent=True, preferred_channel="sms", phone="13899998888"))
        webhooks.resend(delivered.id, Actor())
    assert phone_changed.value.reason == "phone_changed" and phone_changed.value.status == 409

    # Agreed again, same channel and number: the manager may send it again.
    with atomic():
        db.session.execute(update(Patient).where(Patient.id == referrer.id).values(phone="13811112222"))
    assert manager.post(f"/admin/webhooks/deliveries/{delivered.id}/resend").status_code == 303
    assert webhook_sender.deliver_due().delivered == 1 and len(receiver.requests) == 2


def test_a_cancelled_message_may_be_resent_once_the_patient_agrees_again(hooks, receiver, referrer, actor, manager):
    register(receiver, ["notification.requested"])
    consenting(referrer.id)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    withdraw(referrer.id)
    cancelled = delivery_of("notification.requested")
    assert cancelled.status == "cancelled"
    assert manager.post(f"/admin/webhooks/deliveries/{cancelled.id}/resend").status_code == 409
    consenting(referrer.id)
    assert manager.post(f"/admin/webhooks/deliveries/{cancelled.id}/resend").status_code == 303
    assert (delivery_of("notification.requested").status, delivery_of("notification.requested").cancel_reason) == (
        "pending", None)
    assert webhook_sender.deliver_due().delivered == 1 and len(receiver.processed) == 1


GATEWAY_KEY = "SECRETKEY123"


def test_a_key_in_the_receivers_address_stays_out_of_logs_audit_and_pages(hooks, manager, manager_user, referrer,
                                                                           actor, caplog):
    """SMS gateways take their key in the query string: it is sent to them, and shown or logged nowhere."""
    closed = Receiver()
    keyed = closed.url.split("?")[0] + f"?apikey={GATEWAY_KEY}"
    endpoint = webhooks.register_endpoint(webhooks.EndpointRules.from_form(url=keyed, events=["referral.redeemed"]),
                                          Actor(staff_id=manager_user.id))
    closed.close()
    assert endpoint.url == keyed  # the sender needs it
    shown = keyed.split("?")[0] + "?…"
    redemption.redeem_code(referrer.personal_code, friend(), actor)

    with caplog.at_level("WARNING", logger="clinic.services.webhook_sender"):
        webhook_sender.send_due_webhooks()
    assert "connection refused" in caplog.text and shown in caplog.text and GATEWAY_KEY not in caplog.text
    output = hooks.test_cli_runner().invoke(args=["deliver-webhooks", "--once"]).output
    assert "will retry" in output and GATEWAY_KEY not in output

    assert manager.post(f"/admin/webhooks/{endpoint.id}/disable").status_code == 303
    assert manager.post(f"/admin/webhooks/{endpoint.id}/rotate-secret").status_code == 200
    details = db.session.scalars(select(AuditEvent.details).where(AuditEvent.action.like("webhook.%"))).all()
    assert len(details) == 3 and all(detail["url"] == shown for detail in details)
    added = manager.post("/admin/webhooks", {"url": keyed, "events": ["referral.redeemed"]}).get_data(as_text=True)
    assert shown in added and GATEWAY_KEY not in added
    with atomic():  # an event written before addresses were redacted
        audit.record("webhook.created", Actor(), endpoint_id=endpoint.id, url=keyed)
    for page in ("/admin/webhooks", f"/admin/webhooks/{endpoint.id}", "/admin/audit"):
        text = manager.get(page).get_data(as_text=True)
        assert GATEWAY_KEY not in text and shown in text, page

    gateway = Receiver()
    try:
        with atomic():
            db.session.get(WebhookEndpoint, endpoint.id).url = gateway.url.split("?")[0] + f"?apikey={GATEWAY_KEY}"
        assert manager.post(f"/admin/webhooks/{endpoint.id}/enable").status_code == 303
        assert webhook_sender.deliver_due(utcnow() + timedelta(hours=1)).delivered == 1
        assert gateway.requests[0]["path"].endswith(f"?apikey={GATEWAY_KEY}")  # the receiver still gets its key
    finally:
        gateway.close()


@pytest.mark.parametrize("url, shown", [
    ("https://gw.example.com/sms?apikey=K&to=x", "https://gw.example.com/sms?…"),
    ("https://user:pass@gw.example.com:8443/hook", "https://…@gw.example.com:8443/hook"),
    ("https://gw.example.com/hook#key", "https://gw.example.com/hook#…"),
    ("https://gw.example.com/hook", "https://gw.example.com/hook"),
    ("http://[::1/hook?k=1", "…"),
])
def test_addresses_are_shown_without_their_query_string_or_user_name(url, shown):
    assert webhook_sender.redacted_url(url) == shown


def test_a_manager_makes_a_new_secret_and_sees_it_once(hooks, manager, desk, receiver, referrer, actor):
    endpoint = register(receiver, ["referral.redeemed"])
    old = endpoint.secret
    page = manager.get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
    assert old not in page and f"/admin/webhooks/{endpoint.id}/rotate-secret" in page

    assert manager.post(f"/admin/webhooks/{endpoint.id}/rotate-secret", csrf=False).status_code == 400
    assert desk.post(f"/admin/webhooks/{endpoint.id}/rotate-secret").status_code == 403
    assert manager.post("/admin/webhooks/999999/rotate-secret").status_code == 404
    db.session.refresh(endpoint)
    assert endpoint.secret == old

    rotated = manager.post(f"/admin/webhooks/{endpoint.id}/rotate-secret")
    assert rotated.status_code == 200
    db.session.refresh(endpoint)
    new = endpoint.secret
    assert new != old and len(new) == 64
    assert new in rotated.get_data(as_text=True) and old not in rotated.get_data(as_text=True)
    assert new not in manager.get(f"/admin/webhooks/{endpoint.id}").get_data(as_text=True)
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "webhook.secret_rotated"))
    assert event.staff_id is not None and event.details["endpoint_id"] == endpoint.id
    assert old not in str(event.details) and new not in str(event.details)

    receiver.secret = new
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert webhook_sender.deliver_due().delivered == 1
    assert len(receiver.processed) == 1  # verified with the new secret


def test_a_corrected_phone_cancels_the_messages_waiting_for_the_old_number(hooks, referrer, desk, actor):
    """A typo in the phone, found while the gateway is down: the message written for the wrong number never goes,
    like one the patient withdrew; the next one goes to the corrected number, with the consent kept."""
    closed = Receiver()
    endpoint = register(closed, ["notification.requested", "referral.redeemed"])
    closed.close()
    consenting(referrer.id)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    assert webhook_sender.deliver_due().retrying == 2

    page = desk.get(f"/patients/{referrer.id}/details").get_data(as_text=True)
    seen = re.search(r'name="seen" type="hidden" value="([^"]+)"', page).group(1)
    response = desk.post(f"/patients/{referrer.id}/details", {"full_name": "Wang Li", "phone": "13811113333",
                                                              "external_id": "MRN-1", "seen": seen})
    assert response.status_code == 303
    cancelled = delivery_of("notification.requested")
    assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "phone_changed")
    assert delivery_of("referral.redeemed").status == "pending"
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "patient.details_corrected"))
    assert event.details == {"fields": ["phone"], "cancelled_messages": [cancelled.id]}
    assert db.session.get(Patient, referrer.id).notification_consent

    gateway = Receiver()
    try:
        point_at(endpoint.id, gateway)
        webhook_sender.deliver_due(utcnow() + timedelta(minutes=1))
        assert [event["type"] for event in gateway.events()] == ["referral.redeemed"]
        redemption.redeem_code(referrer.personal_code, friend("Li Lei", "13900001234"), actor)
        webhook_sender.deliver_due(utcnow() + timedelta(minutes=2))
        [message] = [event["data"] for event in gateway.events() if event["type"] == "notification.requested"]
        assert message["to"]["phone"] == "13811113333"
    finally:
        gateway.close()


def test_a_corrected_name_leaves_the_waiting_messages_to_go(hooks, referrer, actor):
    closed = Receiver()
    register(closed, ["notification.requested"])
    closed.close()
    consenting(referrer.id)
    redemption.redeem_code(referrer.personal_code, friend(), actor)
    patient = db.session.get(Patient, referrer.id)
    patients.correct_details(referrer.id, patients.PatientDetails(full_name="Wang Lei", phone=patient.phone,
                                                                  external_id="MRN-1"),
                             actor, seen=patients.details_fingerprint(patient))
    assert delivery_of("notification.requested").status == "pending"


# --- reminders of vouchers about to expire (clinic/services/voucher_reminders.py) ---------------------------------


WEEK = timedelta(days=7)


def _reminders(receiver) -> list[dict]:
    webhook_sender.deliver_due()
    return [event["data"] for event in receiver.events() if event["data"].get("template") == "voucher_expiring"]


def _expiring_in(voucher: Voucher, days: int):
    """The moment that is ``days`` before the voucher's expiry."""
    return voucher.expires_at - timedelta(days=days)


def test_a_patient_who_agreed_is_reminded_once_of_each_voucher_about_to_expire(hooks, receiver, referrer, actor):
    register(receiver, ["notification.requested"])
    consenting(referrer.id)  # SMS, in Chinese
    first = redemption.redeem_code(referrer.personal_code, friend(), actor).referrer_voucher
    second = redemption.redeem_code(referrer.personal_code, friend("Sun Li", "13900002222"), actor).referrer_voucher
    receiver.requests.clear()
    now = _expiring_in(first, 3)

    report = remind_expiring_vouchers(Actor(), WEEK, now=now)

    assert (report.patients, report.vouchers) == (1, 2)
    [message] = _reminders(receiver)  # one message naming both vouchers, not two
    assert message["to"]["patient_id"] == referrer.id and message["channel"] == "sms"
    assert message["text"].startswith("Wang Li，您在Test Clinic的奖励¥200.00代金券、¥200.00代金券将于")
    assert message["about"] == {"event": "voucher.expiring", "voucher_ids": [first.id, second.id]}
    [event] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "vouchers.expiry_reminded")).all()
    assert event.details["vouchers"] == [first.id, second.id]

    # The next day's run (and every later one) reminds nobody again.
    again = remind_expiring_vouchers(Actor(), WEEK, now=now + timedelta(days=1))
    assert (again.patients, again.vouchers) == (0, 0)
    assert len(_reminders(receiver)) == 1


def test_nobody_is_reminded_who_should_not_be(hooks, receiver, referrer, make_patient, actor, manager_user):
    register(receiver, ["notification.requested"])
    consenting(referrer.id)
    spent = redemption.redeem_code(referrer.personal_code, friend(), actor).referrer_voucher
    vouchers.spend_voucher(spent.code, actor)
    # Issued within the window: its "reward earned" message gave the date days ago.
    recent = redemption.redeem_code(referrer.personal_code, friend("Sun Li", "13900002222"), actor).referrer_voucher
    with atomic():
        db.session.execute(update(Voucher).where(Voucher.id == recent.id)
                           .values(expires_at=recent.issued_at + timedelta(days=5)))
    silent, _token = make_patient(full_name="Zhao Min", phone="13822223333")  # never agreed
    unheard = redemption.redeem_code(silent.personal_code, friend("Qian Bo", "13900003333"), actor).referrer_voucher
    erased, _token = make_patient(full_name="Li Na", phone="13822224444")
    consenting(erased.id)
    redemption.redeem_code(erased.personal_code, friend("He Yu", "13900004444"), actor)
    erasure.erase_patient(erased.id, "patient_request", Actor(staff_id=manager_user.id))
    receiver.requests.clear()

    for now in (recent.issued_at + timedelta(days=2), _expiring_in(unheard, 3)):
        assert remind_expiring_vouchers(Actor(), WEEK, now=now).patients == 0
    assert remind_expiring_vouchers(Actor(), WEEK, now=unheard.expires_at + timedelta(hours=1)).patients == 0
    assert _reminders(receiver) == []
    assert db.session.scalar(select(func.count()).select_from(VoucherReminder)) == 0


def test_without_a_gateway_nothing_is_sent_or_recorded(hooks, receiver, referrer, actor):
    register(receiver, ["voucher.issued"])
    consenting(referrer.id)
    voucher = redemption.redeem_code(referrer.personal_code, friend(), actor).referrer_voucher

    report = remind_expiring_vouchers(Actor(), WEEK, now=_expiring_in(voucher, 3))

    assert not report.gateway and "Webhooks page" in report.describe()
    assert db.session.scalar(select(func.count()).select_from(VoucherReminder)) == 0
    # A gateway added later still reminds of it.
    register(receiver, ["notification.requested"])
    assert remind_expiring_vouchers(Actor(), WEEK, now=_expiring_in(voucher, 2)).vouchers == 1


def test_two_runs_at_the_same_moment_remind_once(hooks, receiver, referrer, actor):
    """Two hosts' crons: the voucher's reminder row is inserted by one of them; the other queues nothing."""
    register(receiver, ["notification.requested"])
    consenting(referrer.id)
    voucher = redemption.redeem_code(referrer.personal_code, friend(), actor).referrer_voucher
    now = _expiring_in(voucher, 3)
    db.session.rollback()
    outcomes = run_at_once(hooks, 2, lambda _: remind_expiring_vouchers(Actor(), WEEK, now=now).vouchers)
    assert sorted(outcomes) == [("ok", 0), ("ok", 1)]
    assert len(_reminders(receiver)) == 1


def test_the_command_reports_what_it_did(hooks, receiver, referrer, actor):
    register(receiver, ["notification.requested"])
    consenting(referrer.id)
    voucher = redemption.redeem_code(referrer.personal_code, friend(), actor).referrer_voucher
    runner = hooks.test_cli_runner()
    assert "Reminded 0 patients of 0 vouchers" in runner.invoke(args=["remind-expiring-vouchers"]).output

    now = voucher.issued_at
    with atomic():  # issued a month ago, three days left
        db.session.execute(update(Voucher).where(Voucher.id == voucher.id).values(
            issued_at=now - timedelta(days=30), expires_at=now + timedelta(days=3)))
    assert "Reminded 0 patients" in runner.invoke(args=["remind-expiring-vouchers", "--days", "2"]).output
    assert "Reminded 1 patient of 1 voucher " in runner.invoke(args=["remind-expiring-vouchers"]).output
    refused = runner.invoke(args=["remind-expiring-vouchers", "--days", "0"])
    assert refused.exit_code == 2 and "--days" in refused.output


def test_the_patients_messages_are_one_obvious_link_from_the_webhooks_page(manager):
    """Notifications and the invitations were reached only through a link in the middle of a paragraph; the top bar
    says "Webhooks", so its page leads to them first thing, as the dashboard leads to its sub-pages."""
    page = manager.get("/admin/webhooks").get_data(as_text=True)
    links = re.search(r'<p class="page-links">(.*?)</p>', page, re.S).group(1)
    assert 'href="/admin/notifications"' in links and 'href="/admin/invitations"' in links
    back = re.search(r'<p class="page-links">(.*?)</p>', manager.get("/admin/notifications").get_data(as_text=True),
                     re.S).group(1)
    assert 'href="/admin/webhooks"' in back and 'href="/admin/invitations"' in back
