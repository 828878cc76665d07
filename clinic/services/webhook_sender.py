"""Sending webhook deliveries: safe addresses only, signed, retried with backoff, never twice at once.

A delivery leaves the outbox in three short steps, none of which holds a database lock while the
network is used:

1. **claim** — one transaction picks a due delivery (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
   that senders on several hosts take different rows; SQLite's single writer serialises them) and
   moves its ``next_attempt_at`` forward by a lease with a conditional UPDATE. A second sender's
   UPDATE then matches nothing, so no two senders post the same delivery at once. A message for a
   patient (``notification.requested``) who no longer agrees to it is cancelled here instead;
2. **post** — outside any transaction: the host is resolved and every address checked (loopback,
   private, link-local… are refused unless ``WEBHOOK_ALLOW_PRIVATE_NETWORKS``), then the request goes
   to the address that was checked, so a DNS answer that changes in between cannot redirect it.
   Redirects are not followed;
3. **record** — the outcome: delivered on a 2xx, else another attempt after a backoff, or failed
   after ``WEBHOOK_MAX_ATTEMPTS``.

A sender that dies between 1 and 3 leaves the delivery pending with its lease, and a sender tries
it again once the lease runs out: delivery is *at least once*. Receivers drop repeats by the
``X-Clinic-Delivery`` header, which stays the same on every attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import current_app, has_app_context
from flask_babel import gettext as _
from sqlalchemy import exists, select, update

from clinic.extensions import db
from clinic.models import DeliveryStatus, OutboxEvent, WebhookDelivery, WebhookEndpoint
from clinic.models._time import utcnow
from clinic.services import audit, jobs
from clinic.services.errors import Refused
from clinic.services.transaction import Actor, atomic

log = logging.getLogger(__name__)

URL_MAX = 500
# Long enough for the DNS look-up and the request's timeout: a claim older than this was abandoned.
CLAIM_LEASE = timedelta(minutes=2)
RESPONSE_READ_LIMIT = 64 * 1024  # what is read of a receiver's answer (and then thrown away)
USER_AGENT = "clinic-referral-portal-webhooks/1"


def redacted_url(url: str) -> str:
    """The address as it may be shown or logged: ``http://host:port/path?…``.

    SMS gateways often take their API key in the query string (``?apikey=…``), and a user name and
    password may sit before the host: both are replaced by "…", wherever the address appears outside
    the endpoint's row (lists, logs, the audit log).
    """
    try:
        parts = urlsplit(url or "")
    except ValueError:
        return "…"
    _userinfo, at, host = parts.netloc.rpartition("@")
    shown = f"{parts.scheme}://{'…@' if at else ''}{host}{parts.path}" if parts.scheme else parts.path
    return shown + ("?…" if parts.query else "") + ("#…" if parts.fragment else "")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature receivers check: hex HMAC-SHA256 with the endpoint's secret over ``timestamp.body``."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (one of the addresses that passed the check) and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


def allow_private_networks() -> bool:
    return bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE_NETWORKS"))


def _networks(*cidrs: str) -> tuple:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# Cloud providers' metadata and platform services: they hand out credentials to whoever asks from inside, so no
# webhook may reach them, even with private networks allowed. (169.254.169.254 and fe80::… are link-local anyway.)
METADATA_SERVICES = _networks(
    "100.100.100.200/32",  # Alibaba Cloud ECS metadata (inside the carrier-grade NAT range)
    "168.63.129.16/32",    # Azure WireServer (a public address that answers only inside Azure)
    "192.0.0.192/32",      # Oracle Cloud Classic metadata
    "fd00:ec2::/64",       # AWS over IPv6: instance metadata fd00:ec2::254, DNS ::253, time ::123
    "fd20:ce::254/128",    # Google Cloud metadata over IPv6
)
# Where a receiver inside the clinic's network may be, with WEBHOOK_ALLOW_PRIVATE_NETWORKS.
PRIVATE_NETWORKS = _networks("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                             "100.64.0.0/10",  # carrier-grade NAT, and VPNs such as Tailscale
                             "fc00::/7")       # unique local IPv6
# Not reachable on the internet, though Python's ``is_global`` (3.11) says they are: IETF protocol assignments
# (192.0.0.0/24), the retired 6to4 relay anycast and IPv6 documentation.
NOT_GLOBAL = _networks("192.0.0.0/24", "192.88.99.0/24", "3fff::/20")
# NAT64's well-known prefix: a translator on the way delivers 64:ff9b::a9fe:a9fe to 169.254.169.254. The other
# IPv6 forms that carry an IPv4 address (the local-use NAT64 prefix 64:ff9b:1::/48, IPv4-translated
# ::ffff:0:a.b.c.d, the old IPv4-compatible ::a.b.c.d) lie in the reserved ::/8: refused whatever they carry.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _ipv4_reached(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a packet to this IPv6 address is delivered to: IPv4-mapped, 6to4 or NAT64; else None."""
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip.ipv4_mapped or ip.sixtofour


def _address_problem(address: str, allow_private: bool) -> str | None:
    """Why a webhook may not go to this address, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone ("fe80::1%eth0") is link-local anyway
    if ip.version == 6:
        ip = _ipv4_reached(ip) or ip  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_unspecified or ip.is_multicast:
        return _("an address no web server answers on")
    if ip.is_link_local:
        return _("a link-local address (such as a cloud metadata service)")
    if any(ip in network for network in METADATA_SERVICES):
        return _("a cloud provider's metadata service")
    if ip.is_loopback:
        return None if allow_private else _("a loopback address (this computer)")
    if any(ip in network for network in PRIVATE_NETWORKS):
        return None if allow_private else _("a private network address")
    if ip.is_global and not ip.is_reserved and not any(ip in network for network in NOT_GLOBAL):
        return None
    return _("a reserved address")


def check_url(url: str | None, *, allow_private: bool) -> Target:
    """Check a webhook URL and resolve its host; raise :class:`Refused` (field ``url``) when it may not be used.

    Only ``http`` and ``https``; no user name or password in the address; the host must resolve, and
    every address it resolves to must be public unless ``allow_private`` (an on-premise HIS).
    Link-local, multicast, unspecified and reserved addresses and cloud metadata services are refused either
    way. An IPv6 address that reaches an IPv4 one (IPv4-mapped, 6to4, NAT64) is judged by that IPv4 address.
    The host is resolved by the system, so every spelling of an IPv4 address (``2852039166``, ``0251.0376.…``)
    is judged by the address it means.
    """
    def refuse(message: str) -> Refused:
        return Refused("unsafe_url", message, field="url")

    text = (url or "").strip()
    if not text:
        raise refuse(_("Enter the receiver's address, for example https://his.example.com/hooks/referrals."))
    if len(text) > URL_MAX or any(ord(character) < 33 or ord(character) == 127 for character in text):
        raise refuse(_("Enter a web address of at most %(count)s characters, without spaces.", count=URL_MAX))
    try:
        parts = urlsplit(text)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise refuse(_("This is not a valid web address.")) from None
    if parts.scheme not in ("http", "https"):
        raise refuse(_("Only http:// and https:// addresses can receive webhooks."))
    if parts.username is not None or parts.password is not None:
        raise refuse(_("Leave the user name and password out of the address: receivers check the signature "
                       "instead."))
    host = parts.hostname
    if not host:
        raise refuse(_("The address has no host name."))
    try:
        addresses = list(dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
    except (OSError, UnicodeError, ValueError):
        addresses = []
    if not addresses:
        raise refuse(_("The host %(host)s could not be found.", host=host))
    for address in addresses:
        problem = _address_problem(address, allow_private)
        if problem:
            allowing_helps = not allow_private and _address_problem(address, allow_private=True) is None
            if allowing_helps:
                raise refuse(_("Webhooks cannot go to %(host)s: it is %(problem)s. Receivers inside the clinic's "
                               "network need WEBHOOK_ALLOW_PRIVATE_NETWORKS=1 in the server's settings.",
                               host=host, problem=problem))
            raise refuse(_("Webhooks cannot go to %(host)s: it is %(problem)s.", host=host, problem=problem))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path, addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked, whatever the host name resolves to by now."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def tls_context() -> ssl.SSLContext:
    """The system's trusted certificate authorities, with host names checked."""
    return ssl.create_default_context()


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """The same over TLS: the certificate is still checked against the host name."""

    def __init__(self, target: Target, timeout: float):
        self._tls = tls_context()
        super().__init__(target.host, target.port, timeout=timeout, context=self._tls)
        self._address = target.address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


@dataclass(frozen=True)
class Claim:
    """A delivery this sender holds the lease of, with everything needed to post it."""

    delivery_id: int
    attempt: int
    url: str
    secret: str
    event_id: int
    event_type: str
    body: bytes


@dataclass(frozen=True)
class Cancelled:
    """A due delivery that was cancelled instead of claimed: the message may no longer be sent."""

    delivery_id: int
    reason: str


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status_code: int | None = None
    error: str | None = None


def event_body(event: OutboxEvent) -> bytes:
    """The JSON every endpoint receives for an event: the same bytes on every attempt."""
    envelope = {"id": event.id, "type": event.event_type,
                "created_at": event.created_at.isoformat(timespec="seconds") + "Z", "data": event.payload}
    return json.dumps(envelope, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def due(now: datetime):
    """The conditions of a delivery the sender takes at ``now``: pending, its time come, its endpoint enabled
    (a disabled endpoint's deliveries wait on purpose). Also what ``flask check`` calls overdue, some minutes back."""
    return (WebhookDelivery.status == DeliveryStatus.PENDING.value, WebhookDelivery.next_attempt_at <= now,
            WebhookEndpoint.enabled.is_(True))


def cancel(delivery_id: int, reason: str, now: datetime) -> bool:
    """Mark a waiting delivery as never to be sent, in the current transaction; False if it no longer waits."""
    return db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.PENDING.value)
        .values(status=DeliveryStatus.CANCELLED.value, cancel_reason=reason, cancelled_at=now)
        .execution_options(synchronize_session=False)).rowcount == 1


def claim_next(now: datetime) -> Claim | Cancelled | None:
    """Take the lease of the next due delivery (of an enabled endpoint), or None when nothing is due.

    A plain read first, so that an idle sender never takes SQLite's write lock. A patient's message
    is sent only if they still agree to it now: otherwise it is cancelled (and audited) in the same
    transaction, and returned as :class:`Cancelled`.
    """
    # notifications imports webhooks, which imports this module.
    from clinic.services import notifications

    if not db.session.scalar(select(exists().where(WebhookDelivery.endpoint_id == WebhookEndpoint.id, *due(now)))):
        db.session.rollback()
        return None
    with atomic():
        candidates = db.session.execute(
            select(WebhookDelivery.id, OutboxEvent.event_type, OutboxEvent.payload)
            .join(WebhookEndpoint, WebhookDelivery.endpoint_id == WebhookEndpoint.id)
            .join(OutboxEvent, WebhookDelivery.event_id == OutboxEvent.id)
            .where(*due(now)).order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(5)
            .with_for_update(skip_locked=True, of=WebhookDelivery)).all()
        for delivery_id, event_type, payload in candidates:
            withheld = notifications.withheld_because(payload) if event_type == notifications.EVENT else None
            if withheld:
                if cancel(delivery_id, withheld, now):
                    audit.record("webhook.cancelled", Actor(), reason=withheld, delivery_id=delivery_id,
                                 patient_id=(payload.get("to") or {}).get("patient_id"))
                    return Cancelled(delivery_id, withheld)
                continue
            claimed = db.session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.PENDING.value,
                       WebhookDelivery.next_attempt_at <= now)
                .values(attempts=WebhookDelivery.attempts + 1, next_attempt_at=now + CLAIM_LEASE, last_attempt_at=now)
                .execution_options(synchronize_session=False)).rowcount
            if claimed == 1:
                delivery = db.session.get(WebhookDelivery, delivery_id, populate_existing=True)
                return Claim(delivery_id=delivery.id, attempt=delivery.attempts, url=delivery.endpoint.url,
                             secret=delivery.endpoint.secret, event_id=delivery.event_id,
                             event_type=delivery.event.event_type, body=event_body(delivery.event))
    return None


def post(claim: Claim, *, allow_private: bool, timeout: float) -> Outcome:
    """POST the event to the receiver once; any 2xx answer is success, anything else a failed attempt."""
    try:
        target = check_url(claim.url, allow_private=allow_private)
    except Refused as refusal:
        return Outcome(False, error=refusal.message[:200])
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        "X-Clinic-Event": claim.event_type,
        "X-Clinic-Delivery": str(claim.delivery_id),
        "X-Clinic-Timestamp": timestamp,
        "X-Clinic-Signature": "sha256=" + sign(claim.secret, timestamp, claim.body),
    }
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target, timeout)
    try:
        connection.request("POST", target.path, body=claim.body, headers=headers)
        response = connection.getresponse()
        response.read(RESPONSE_READ_LIMIT)
        status = response.status
    except (OSError, http.client.HTTPException) as problem:
        return Outcome(False, error=_describe(problem))
    finally:
        connection.close()
    if 200 <= status < 300:
        return Outcome(True, status_code=status)
    if 300 <= status < 400:
        return Outcome(False, status_code=status, error=f"HTTP {status}: redirects are not followed")
    return Outcome(False, status_code=status, error=f"HTTP {status}")


def _describe(problem: Exception) -> str:
    if isinstance(problem, (socket.timeout, TimeoutError)):
        return "no answer in time"
    if isinstance(problem, ConnectionRefusedError):
        return "connection refused"
    if isinstance(problem, ssl.SSLError):
        return f"TLS error: {problem}"[:200]
    return f"{type(problem).__name__}: {problem}"[:200]


def retry_delay(attempt: int, *, base_seconds: int, max_seconds: int) -> timedelta:
    """Exponential backoff: base after the first failed attempt, doubling each time, capped."""
    return timedelta(seconds=min(max_seconds, base_seconds * 2 ** (attempt - 1)))


def record(claim: Claim, outcome: Outcome, now: datetime, *, max_attempts: int, base_seconds: int,
           max_seconds: int) -> str:
    """Write down an attempt's outcome; returns the delivery's status after it.

    Only the claim that is still current may write (same attempt number, still pending): a sender
    whose lease ran out and was overtaken leaves the newer attempt's outcome alone. A message cancelled
    while it was being posted (the patient withdrew consent at that moment) that the receiver accepted
    is recorded as delivered, which it was.
    """
    values = {"last_status_code": outcome.status_code, "last_error": outcome.error}
    writable = [DeliveryStatus.PENDING.value]
    if outcome.delivered:
        values.update(status=DeliveryStatus.DELIVERED.value, delivered_at=now, cancel_reason=None, cancelled_at=None)
        writable.append(DeliveryStatus.CANCELLED.value)
    elif claim.attempt >= max_attempts:
        values.update(status=DeliveryStatus.FAILED.value)
    else:
        values.update(next_attempt_at=now + retry_delay(claim.attempt, base_seconds=base_seconds,
                                                        max_seconds=max_seconds))
    with atomic():
        db.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == claim.delivery_id, WebhookDelivery.attempts == claim.attempt,
                   WebhookDelivery.status.in_(writable))
            .values(**values).execution_options(synchronize_session=False))
    return values.get("status", DeliveryStatus.PENDING.value)


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    cancelled: int = 0  # not attempts: messages the patient no longer agrees to
    problems: list[str] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return self.delivered + self.retrying + self.failed

    def describe(self) -> str:
        done = f"Delivered {self.delivered}, will retry {self.retrying}, gave up on {self.failed}."
        if self.cancelled:
            done += f" Cancelled {self.cancelled} message(s): the patient no longer agrees, or has another phone."
        return done


def deliver_due(now: datetime | None = None, *, limit: int = 100) -> DeliveryReport:
    """Post every delivery that is due at ``now`` (at most ``limit``), one at a time; report what happened.

    ``now`` is the sender's clock: tests move it forward instead of waiting out the backoff.
    """
    now = now or utcnow()
    config = current_app.config
    report = DeliveryReport()
    for _ in range(limit):
        claim = claim_next(now)
        if claim is None:
            break
        if isinstance(claim, Cancelled):
            report.cancelled += 1
            continue
        outcome = post(claim, allow_private=allow_private_networks(), timeout=config["WEBHOOK_TIMEOUT_SECONDS"])
        status = record(claim, outcome, now, max_attempts=config["WEBHOOK_MAX_ATTEMPTS"],
                        base_seconds=config["WEBHOOK_RETRY_BASE_SECONDS"],
                        max_seconds=config["WEBHOOK_RETRY_MAX_SECONDS"])
        if status == DeliveryStatus.DELIVERED.value:
            report.delivered += 1
            continue
        if status == DeliveryStatus.FAILED.value:
            report.failed += 1
        else:
            report.retrying += 1
        report.problems.append(f"delivery {claim.delivery_id} to {redacted_url(claim.url)}: {outcome.error}")
    return report


def send_due_webhooks() -> None:
    """The background job kicked after a commit that queued deliveries (module level, for RQ)."""
    report = deliver_due()
    for problem in report.problems:
        log.warning("Webhook %s", problem)


def kick() -> None:
    """Send what is due now in the background (the job queue, or a thread without Redis).

    Called after a commit: the commit has happened, so a failure here is logged, never raised —
    the deliveries wait in the database for the next kick or for ``flask deliver-webhooks``.
    """
    if not has_app_context() or not current_app.config.get("WEBHOOK_SEND_AFTER_COMMIT"):
        return
    try:
        jobs.submit(send_due_webhooks)
    except Exception:  # noqa: BLE001 - Redis down, say: the outbox keeps the work
        log.exception("Could not start sending webhooks; `flask deliver-webhooks` will send them")
