#!/usr/bin/env python3
"""Send the book-completion webhook so that no finished book is lost on the way in.

One file, Python 3.9+ standard library only: copy it into the backend and call ``send(payload)``
at the end of a job. It serialises the payload once, signs it the Standard Webhooks way
(HMAC-SHA256 ``v1``), posts it, and returns the service's parsed ``200`` body.

- Connection errors, timeouts, ``429`` and ``5xx`` are retried with the same ``webhook-id`` and
  the same bytes (a fresh timestamp and signature each attempt), waiting at least the answer's
  ``Retry-After`` (seconds or an HTTP date) and otherwise an exponential backoff with full jitter.
  An answer the service sent before the upload broke (a ``413``, a ``503``) is read and decides.
- Any other ``4xx`` (or ``3xx``), and a body over ``max_body_bytes`` (not sent), raise
  :class:`WebhookRejected` at once: the same bytes would fail the same way. The delivery is kept
  in ``WEBHOOK_SPOOL_DIR/rejected/``; :func:`resend` sends it again once the cause is fixed.
- When the retries are spent, the delivery (its ``webhook-id`` and exact bytes) is written
  atomically to ``WEBHOOK_SPOOL_DIR`` and :class:`WebhookSpooled` names the file; :func:`flush`
  re-sends it later with the same ``webhook-id`` (the service treats a repeat as a retry).

Environment (read at each call): ``WEBHOOK_URL`` (default
``http://localhost:3001/api/webhooks/book-completion``), ``WEBHOOK_SECRET`` (``whsec_<base64>`` or
plain text; several separated by whitespace sign with each; unset: unsigned, for a development
service), ``WEBHOOK_SPOOL_DIR`` (default ``./webhook-spool``), ``WEBHOOK_MAX_BODY_BYTES`` (default
10485760, the service's default limit); ``http_proxy`` / ``https_proxy`` / ``no_proxy`` as urllib
reads them.

Command line::

    python3 book_completion_webhook.py send FILE.json [--url URL] [--max-attempts N]
                                       [--max-elapsed S] [--timeout S] [--max-body-bytes N]
    python3 book_completion_webhook.py flush [same options]
    python3 book_completion_webhook.py rejected [--json]
    python3 book_completion_webhook.py resend (ID | --all) [same options]
    python3 book_completion_webhook.py drop ID

Exit status: 0 when delivered (``flush``: when the spool is empty after it; ``resend``: every one
named), 1 otherwise (``drop``: no such id), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import binascii
import email.utils
import hashlib
import hmac
import http.client
import json
import logging
import os
import random
import re
import select
import signal
import socket
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from types import FrameType
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple, Union

DEFAULT_URL = "http://localhost:3001/api/webhooks/book-completion"
DEFAULT_SPOOL_DIR = "./webhook-spool"
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_MAX_ELAPSED_SECONDS = 3600.0
DEFAULT_TIMEOUT_SECONDS = 30.0
# The service's default BODY_LIMIT_BYTES (10 MiB): a larger body is refused before it is sent.
DEFAULT_MAX_BODY_BYTES = 10485760
# The body goes out in chunks, the socket checked for an early answer (a 413, a 503) before each.
BODY_CHUNK_BYTES = 64 * 1024
REJECTED_DIR_NAME = "rejected"
# A Date header further off than this is named in a 401's hint (the signature's tolerance is 300 s).
CLOCK_HINT_SECONDS = 60
# The service refuses keys under 24 bytes outside development (Standard Webhooks: 24 to 64 bytes).
MIN_KEY_BYTES = 24
# The service's answers are small JSON objects; anything longer is not worth keeping in memory.
MAX_RESPONSE_BYTES = 1024 * 1024
SPOOL_SUFFIX = ".json"
USER_AGENT = "book-completion-webhook-kit/1 (python)"
# The web front end's port, where the original incident sent the webhook; the service is on 3001.
FRONT_END_PORT = 3000
SERVICE_PORT = 3001
ENDPOINT_PATH = "/api/webhooks/book-completion"

# One logger, configured by the caller (the command line sends it to stderr). Never logs book text.
log = logging.getLogger("book_completion_webhook")

Payload = Union[Mapping[str, Any], bytes]


# --- errors ---------------------------------------------------------------------------------------


class WebhookError(Exception):
    """A delivery that was not acknowledged. ``webhook_id`` names it."""

    def __init__(self, message: str, *, webhook_id: str) -> None:
        super().__init__(message)
        self.webhook_id = webhook_id


class WebhookRejected(WebhookError):
    """The service answered a ``4xx`` other than ``429`` (or a redirect), or the body is over
    ``max_body_bytes`` (status ``413``, not sent): not retried, kept in ``rejected/``.

    ``status`` is the HTTP status; ``body`` the parsed JSON answer (the text when it is not JSON;
    the kit's own reason for the size check); ``path`` the file in ``rejected/`` (None if it could
    not be written). Re-sending the same bytes would fail the same way: fix the cause, then
    :func:`resend`.
    """

    def __init__(self, message: str, *, webhook_id: str, status: int, body: Any, path: Optional[str] = None) -> None:
        super().__init__(message, webhook_id=webhook_id)
        self.status = status
        self.body = body
        self.path = path


class UnknownDelivery(WebhookError, LookupError):
    """:func:`resend` or :func:`drop` was given a ``webhook_id`` that ``rejected/`` does not hold."""


class WebhookSpooled(WebhookError):
    """The retries were spent; the delivery is safe in the spool file ``path`` for :func:`flush`."""

    def __init__(self, message: str, *, webhook_id: str, path: str, last_error: str) -> None:
        super().__init__(message, webhook_id=webhook_id)
        self.path = path
        self.last_error = last_error


# --- signing (Standard Webhooks v1) ---------------------------------------------------------------


def secret_to_key(secret: str) -> bytes:
    """One secret as HMAC key bytes: ``whsec_<base64>`` is decoded, anything else is its UTF-8."""
    if not secret.startswith("whsec_"):
        return secret.encode("utf-8")
    encoded = secret[len("whsec_"):]
    try:
        if not encoded or len(encoded) % 4 != 0:
            raise binascii.Error("length")
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("WEBHOOK_SECRET: a whsec_ secret must be followed by standard base64") from None


def secret_keys(secrets: str) -> List[bytes]:
    """Every key of a ``WEBHOOK_SECRET`` value (whitespace-separated, for rotation); none when empty."""
    return [secret_to_key(secret) for secret in secrets.split()]


def sign(keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64 HMAC-SHA256>`` per key, space-separated.

    The signed content is the exact bytes ``<webhook-id>.<timestamp>.<body>``.
    """
    content = f"{webhook_id}.{timestamp}.".encode("utf-8") + body
    entries = [base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode("ascii") for key in keys]
    return " ".join(f"v1,{entry}" for entry in entries)


def request_headers(keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes) -> Dict[str, str]:
    """The headers of one attempt; unsigned (no ``webhook-*`` headers) when there is no key."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if keys:
        headers["webhook-id"] = webhook_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = sign(keys, webhook_id, timestamp, body)
    return headers


def new_webhook_id() -> str:
    """A fresh delivery id. Keep it across the retries of one delivery; never derive it from job_id."""
    return f"msg_{uuid.uuid4().hex}"


def check_webhook_id(webhook_id: str) -> str:
    """Returns the id if it can be sent as a header (visible ASCII, 1 to 255 characters)."""
    if not re.fullmatch(r"[\x21-\x7e]{1,255}", webhook_id):
        raise ValueError("webhook_id: 1 to 255 visible ASCII characters")
    return webhook_id


# --- the body -------------------------------------------------------------------------------------


def encode_payload(payload: Payload) -> bytes:
    """The bytes to sign and send, made once per delivery.

    A mapping is serialised with ``ensure_ascii=False`` (UTF-8, accents and emoji as themselves,
    not ``\\u`` escapes); bytes (e.g. a file's) are sent as they are once they prove to be a
    UTF-8 JSON object. NaN and infinities are refused: they are not JSON.
    """
    if isinstance(payload, (bytes, bytearray)):
        body = bytes(payload)
        try:
            parsed = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError("the payload is not valid UTF-8") from None
        except ValueError as err:
            raise ValueError(f"the payload is not JSON ({err})") from None
        if not isinstance(parsed, dict):
            raise ValueError("the payload must be a JSON object")
        return body
    if not isinstance(payload, Mapping):
        raise TypeError("payload: a dict (or the JSON bytes of one)")
    return json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")


def parse_body(raw: bytes) -> Any:
    """An answer's body: parsed JSON, else its text."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- when to retry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: the n-th wait is uniform in [0, min(cap, base * 2^(n-1)))."""

    base_seconds: float = 5.0
    cap_seconds: float = 300.0

    def ceiling(self, retry: int) -> float:
        """The longest wait after attempt ``retry`` (1 = after the first attempt)."""
        if retry < 1:
            raise ValueError("retry counts from 1")
        # min() first: 2 ** 2000 as a float would overflow.
        return min(self.cap_seconds, self.base_seconds * 2.0 ** min(retry - 1, 64))

    def delay(self, retry: int, rand: Callable[[], float]) -> float:
        """A wait drawn with ``rand`` (uniform in [0, 1), e.g. ``random.random``)."""
        return rand() * self.ceiling(retry)


DEFAULT_BACKOFF = Backoff()


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds asked by a ``Retry-After`` header (delay-seconds or an HTTP date); None if absent or bad.

    ``now`` is Unix time (for the date form); a date in the past means 0.
    """
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d{1,10}", value):
        return float(value)
    when = http_date(value)
    return None if when is None else max(0.0, when - now)


def http_date(value: Optional[str]) -> Optional[float]:
    """An HTTP date (``Retry-After``, ``Date``) as Unix time; None if absent or malformed."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def is_retryable(status: int) -> bool:
    """429 and 5xx may succeed later; every other non-2xx answer would fail the same way."""
    return status == 429 or 500 <= status <= 599


def next_wait(
    attempt: int,
    *,
    retry_after: Optional[float],
    elapsed: float,
    max_attempts: int,
    max_elapsed: float,
    backoff: Backoff,
    rand: Callable[[], float],
) -> Optional[float]:
    """Seconds to wait before the attempt after ``attempt``, or None when the retries are spent.

    The wait is the jittered backoff, never shorter than ``Retry-After``; no attempt starts after
    ``max_elapsed`` seconds (counted from the first attempt's start) nor beyond ``max_attempts``.
    """
    if attempt >= max_attempts:
        return None
    wait = backoff.delay(attempt, rand)
    if retry_after is not None:
        wait = max(wait, retry_after)
    if elapsed + wait > max_elapsed:
        return None
    return wait


# --- one attempt ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, parsed body, ``Retry-After`` and ``Date`` headers."""

    status: int
    body: Any
    retry_after: Optional[str]
    date: Optional[str] = None


def _read_answer(response: http.client.HTTPResponse) -> Answer:
    return Answer(response.status, parse_body(response.read(MAX_RESPONSE_BYTES)),
                  response.getheader("Retry-After"), response.getheader("Date"))


def _answered(sock: socket.socket) -> bool:
    """Whether the service has sent something (an early answer, or its close) without waiting."""
    if hasattr(select, "poll"):
        # poll, not select: select fails on a descriptor numbered past 1023 (a busy backend may have one).
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _early_answer(connection: http.client.HTTPConnection) -> Optional[Answer]:
    """The answer the service sent before the upload broke, if one can still be read."""
    try:
        return _read_answer(connection.getresponse())
    except (OSError, http.client.HTTPException):
        return None


def proxy_for(parts: urllib.parse.SplitResult) -> Optional[urllib.parse.SplitResult]:
    """The proxy urllib would use for this URL (``http_proxy`` / ``https_proxy``, ``no_proxy``
    honoured), or None for a direct connection."""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")


def _connect(parts: urllib.parse.SplitResult, timeout: float) -> Tuple[http.client.HTTPConnection, str, Dict[str, str]]:
    """The connection for one POST to ``parts``, the request target, and headers for the proxy.

    Through a proxy, plain HTTP is sent to it with the absolute URL; HTTPS goes through a
    ``CONNECT`` tunnel, so the service's certificate is still checked end to end."""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = proxy_for(parts)
    if proxy is None:
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return connection_class(parts.hostname or "", parts.port, timeout=timeout), target, {}
    authorization: Dict[str, str] = {}
    if proxy.username is not None:
        credentials = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
        authorization["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    if parts.scheme == "https":
        tunnel = http.client.HTTPSConnection(proxy.hostname or "", proxy.port or 80, timeout=timeout)
        tunnel.set_tunnel(parts.hostname or "", parts.port or 443, headers=authorization)
        return tunnel, target, {}
    direct = http.client.HTTPConnection(proxy.hostname or "", proxy.port or 80, timeout=timeout)
    return direct, f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{target}", authorization


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
    """One POST. Returns any HTTP answer (redirects are not followed); raises OSError /
    HTTPException when there is none.

    The body is written in chunks and the socket checked for an answer before each: a service
    that refuses the upload (``413``, ``503``) answers before it has read it all and may close
    while the rest is still being written. That answer is read and returned, also when the
    write itself broke (``EPIPE``, ``ECONNRESET``) or stalled, instead of the bare network error.
    """
    parts = urllib.parse.urlsplit(url)
    connection, target, proxy_headers = _connect(parts, timeout)
    try:
        connection.putrequest("POST", target, skip_accept_encoding=True)
        for name, value in {**proxy_headers, **headers}.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.putheader("Connection", "close")
        connection.endheaders()
        sock = connection.sock
        # Over TLS the socket turns readable for records that are no answer (a TLS 1.3 session
        # ticket): there, only a broken or stalled write makes the kit look for an answer.
        watch = parts.scheme == "http"
        view = memoryview(body)
        try:
            for offset in range(0, len(view), BODY_CHUNK_BYTES):
                if watch and _answered(sock):
                    break  # the service answered before taking the whole body: read what it said
                sock.sendall(view[offset:offset + BODY_CHUNK_BYTES])
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as broken:
            if isinstance(broken, socket.timeout) and not _answered(sock):
                raise
            answer = _early_answer(connection)
            if answer is None:
                raise
            return answer
        return _read_answer(connection.getresponse())
    finally:
        connection.close()


def describe_failure(reason: BaseException, timeout: float) -> str:
    """A short line for a request that got no answer."""
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    if isinstance(reason, BrokenPipeError):
        return "connection closed while sending, without an answer"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    if isinstance(reason, socket.gaierror):
        return f"host not found ({reason.strerror})"
    return f"{type(reason).__name__}: {reason}"


def describe_answer(answer: Answer) -> str:
    """``<status> <error>: <message>`` from a JSON error body (no book text is ever in one)."""
    parts = [str(answer.status)]
    if isinstance(answer.body, dict):
        if isinstance(answer.body.get("error"), str):
            parts.append(answer.body["error"])
        if isinstance(answer.body.get("message"), str):
            parts[-1] += f": {answer.body['message'][:200]}"
    return " ".join(parts)


# --- why a delivery was refused -------------------------------------------------------------------


def _duration(seconds: float) -> str:
    whole = int(round(abs(seconds)))
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def clock_difference(date_header: Optional[str], now: float) -> Optional[float]:
    """Seconds the service's clock (its ``Date`` header) is ahead of ``now``; None without one."""
    when = http_date(date_header)
    return None if when is None else when - now


def service_body_limit(answer_body: Any) -> Optional[int]:
    """The service's body limit in bytes, when its ``413`` answer gives it (a field or its message)."""
    if not isinstance(answer_body, dict):
        return None
    for name in ("limitBytes", "limit_bytes", "bodyLimitBytes", "maxBytes", "limit"):
        value = answer_body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    message = answer_body.get("message")
    if isinstance(message, str):
        match = re.search(r"(\d{2,}) ?bytes", message)
        if match:
            return int(match.group(1))
    return None


def _secret_forms(secrets: str) -> str:
    held = secrets.split()
    if not held:
        return "this side sent no signature (no WEBHOOK_SECRET), which only a service in development accepts"
    if len(held) > 1:
        return (f"this side's WEBHOOK_SECRET holds {len(held)} secrets separated by whitespace and signs with each "
                "(a passphrase with spaces is several keys)")
    return "this side's secret is a whsec_ one" if held[0].startswith("whsec_") else "this side's secret is plain text"


def rejection_hint(status: int, *, url: str, answer: Optional[Answer], body_size: int, secrets: str,
                   now: Optional[float] = None) -> str:
    """The likely cause of a refusal, in words an operator can act on; '' when there is nothing to add."""
    if status == 401:
        causes = [
            "the same WEBHOOK_SECRET on both sides, character for character (whsec_<base64> is base64-decoded, "
            "any other value is plain text: whsec_ on one side only, or a different secret, never matches)",
            _secret_forms(secrets),
        ]
        ahead = clock_difference(answer.date if answer else None, time.time() if now is None else now)
        if ahead is not None and abs(ahead) > CLOCK_HINT_SECONDS:
            way = "ahead of" if ahead > 0 else "behind"
            causes.append(f"the service's clock is {_duration(ahead)} {way} this host's (its Date header), and a "
                          "webhook-timestamp outside its tolerance (300 s by default) is refused: sync both clocks (NTP)")
        return "Check: " + "; ".join(causes)
    if status == 404:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        hint = (f"Expected: POST {ENDPOINT_PATH} on the service's port {SERVICE_PORT}; "
                f"this went to port {port}, path {parts.path or '/'}")
        if port == FRONT_END_PORT:
            hint += f" (port {FRONT_END_PORT} is the web front end)"
        return hint
    if status == 413:
        limit = service_body_limit(answer.body) if answer else None
        if limit is not None:
            return f"The body is {body_size} bytes; the service's limit is {limit} bytes"
        return f"The body is {body_size} bytes, over the service's BODY_LIMIT_BYTES ({DEFAULT_MAX_BODY_BYTES} by default)"
    if 300 <= status < 400:
        return "A redirect: set WEBHOOK_URL to the endpoint itself"
    return ""


# --- files: the spool and rejected/ ----------------------------------------------------------------


def spool_dir_from_env(spool_dir: Optional[str] = None) -> str:
    """``spool_dir``, else ``WEBHOOK_SPOOL_DIR``, else ``./webhook-spool``."""
    return spool_dir or os.environ.get("WEBHOOK_SPOOL_DIR") or DEFAULT_SPOOL_DIR


def rejected_dir(spool_dir: Optional[str] = None) -> str:
    """Where rejected deliveries are kept: ``rejected/`` under the spool directory."""
    return os.path.join(spool_dir_from_env(spool_dir), REJECTED_DIR_NAME)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable (POSIX); directories cannot be opened this way on Windows.
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: str, record: Mapping[str, Any]) -> None:
    """Writes JSON to ``path`` whole or not at all: a temporary file (mode 0600), fsync, rename."""
    directory = os.path.dirname(path)
    # Book text inside: a directory it creates is its owner's only (an existing one is left as it is).
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".spooling-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(json.dumps(record, ensure_ascii=False).encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _safe_name(webhook_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", webhook_id)[:100]


def spool_write(directory: str, webhook_id: str, body: bytes, reason: str) -> str:
    """Writes one delivery to ``directory`` atomically (temp file, fsync, rename); returns its path.

    The file is JSON ``{"webhook_id", "body", "spooled_at", "reason"}``; ``body`` is the exact
    text that was signed and sent. Its name starts with the UTC time, so a listing is oldest first.
    """
    now = datetime.now(tz=timezone.utc)
    path = os.path.join(directory, f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{_safe_name(webhook_id)}{SPOOL_SUFFIX}")
    _write_atomically(path, {
        "webhook_id": webhook_id,
        "body": body.decode("utf-8"),
        "spooled_at": now.isoformat(),
        "reason": reason,
    })
    return path


def _json_files(directory: str) -> List[str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [os.path.join(directory, name) for name in sorted(names) if name.endswith(SPOOL_SUFFIX) and not name.startswith(".")]


def spool_list(directory: str) -> List[str]:
    """The spooled deliveries, oldest first (temporary files are not deliveries, rejected/ is apart)."""
    return _json_files(directory)


def _read_record(path: str, what: str) -> Dict[str, Any]:
    with open(path, "rb") as file:
        try:
            record = json.loads(file.read().decode("utf-8"))
        except ValueError as err:
            raise ValueError(f"{path} is not a {what} ({err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("webhook_id"), str) or not isinstance(record.get("body"), str):
        raise ValueError(f"{path} is not a {what} (webhook_id and body are required)")
    return record


def spool_read(path: str) -> Tuple[str, bytes]:
    """``(webhook_id, body bytes)`` of one spooled delivery; ValueError when the file is not one."""
    record = _read_record(path, "spooled delivery")
    return record["webhook_id"], record["body"].encode("utf-8")


@dataclass(frozen=True)
class Rejection:
    """One delivery kept in ``rejected/``: what was sent, where, and what the service (or the kit) said."""

    path: str
    webhook_id: str
    body: bytes
    url: str
    status: int
    answer: Any
    reason: str
    rejected_at: str

    @property
    def job_id(self) -> Optional[str]:
        try:
            parsed = json.loads(self.body.decode("utf-8"))
        except ValueError:
            return None
        job_id = parsed.get("job_id") if isinstance(parsed, dict) else None
        return job_id if isinstance(job_id, str) else None


def rejected_path(directory: str, webhook_id: str) -> str:
    """The one file of a delivery in ``rejected/`` (named by its id: a new rejection replaces it)."""
    digest = hashlib.sha256(webhook_id.encode("utf-8")).hexdigest()[:12]
    return os.path.join(directory, f"{_safe_name(webhook_id)}-{digest}{SPOOL_SUFFIX}")


def rejected_write(directory: str, webhook_id: str, body: bytes, *, url: str, status: int, answer: Any, reason: str) -> str:
    """Keeps one rejected delivery in ``directory`` atomically (replacing an earlier rejection of it)."""
    path = rejected_path(directory, webhook_id)
    _write_atomically(path, {
        "webhook_id": webhook_id,
        "body": body.decode("utf-8"),
        "url": url,
        "status": status,
        "answer": answer,
        "reason": reason,
        "rejected_at": datetime.now(tz=timezone.utc).isoformat(),
    })
    return path


def rejected_read(path: str) -> Rejection:
    """One kept rejection; ValueError when the file is not one."""
    record = _read_record(path, "rejected delivery")
    status = record.get("status")
    return Rejection(path=path, webhook_id=record["webhook_id"], body=record["body"].encode("utf-8"),
                     url=str(record.get("url") or ""), status=status if isinstance(status, int) else 0,
                     answer=record.get("answer"), reason=str(record.get("reason") or ""),
                     rejected_at=str(record.get("rejected_at") or ""))


def rejected(spool_dir: Optional[str] = None) -> List[Rejection]:
    """Every delivery kept in ``rejected/``, oldest rejection first. Unreadable files are logged and skipped."""
    found: List[Rejection] = []
    for path in _json_files(rejected_dir(spool_dir)):
        try:
            found.append(rejected_read(path))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as err:
            log.warning("skipped %s: %s", path, err)
    return sorted(found, key=lambda kept: kept.rejected_at)


def _find_rejected(webhook_id: str, spool_dir: Optional[str]) -> Rejection:
    path = rejected_path(rejected_dir(spool_dir), webhook_id)
    try:
        kept = rejected_read(path)
    except FileNotFoundError:
        kept = None
    if kept is None or kept.webhook_id != webhook_id:
        raise UnknownDelivery(f"no rejected delivery {webhook_id} in {rejected_dir(spool_dir)}", webhook_id=webhook_id)
    return kept


def drop(webhook_id: str, *, spool_dir: Optional[str] = None) -> Rejection:
    """Deletes one kept rejection (once handled otherwise) and returns what it was.

    Raises :class:`UnknownDelivery` when ``rejected/`` holds no delivery with that id.
    """
    kept = _find_rejected(webhook_id, spool_dir)
    try:
        os.remove(kept.path)
    except FileNotFoundError:
        raise UnknownDelivery(f"no rejected delivery {webhook_id} in {rejected_dir(spool_dir)}", webhook_id=webhook_id) from None
    return kept


# --- sending --------------------------------------------------------------------------------------


class _RetriesSpent(Exception):
    def __init__(self, attempts: int, elapsed: float, last_error: str) -> None:
        super().__init__(last_error)
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_error = last_error


class _Refused(Exception):
    """A rejection found by :func:`_deliver`; the caller decides where the delivery is kept."""

    def __init__(self, status: int, answer: Any, reason: str, *, sent: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.answer = answer
        self.reason = reason
        self.sent = sent


def _check_bounds(max_attempts: int, max_elapsed: float, timeout: float) -> None:
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if not max_elapsed > 0:
        raise ValueError("max_elapsed must be more than 0 seconds")
    if not timeout > 0:
        raise ValueError("timeout must be more than 0 seconds")


def _resolve_url(url: Optional[str], fallback: Optional[str] = None) -> str:
    resolved = url or os.environ.get("WEBHOOK_URL") or fallback or DEFAULT_URL
    parts = urllib.parse.urlsplit(resolved)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url: not an http(s) URL: {resolved!r}")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"url: not a valid port: {resolved!r}") from None
    return resolved


def _resolve_secrets(secret: Optional[str]) -> str:
    return secret if secret is not None else os.environ.get("WEBHOOK_SECRET", "")


def _keys_of(secrets: str) -> List[bytes]:
    keys = secret_keys(secrets)
    if any(len(key) < MIN_KEY_BYTES for key in keys):
        log.warning("the secret is under %d bytes: the service refuses such a secret outside development", MIN_KEY_BYTES)
    if len(keys) > 1:
        log.info("WEBHOOK_SECRET holds %d secrets separated by whitespace: signing with each", len(keys))
    return keys


def _resolve_max_body_bytes(max_body_bytes: Optional[int]) -> int:
    if max_body_bytes is None:
        text = os.environ.get("WEBHOOK_MAX_BODY_BYTES", "").strip()
        if not text:
            return DEFAULT_MAX_BODY_BYTES
        if not re.fullmatch(r"\d{1,15}", text) or int(text) < 1:
            raise ValueError(f"WEBHOOK_MAX_BODY_BYTES: a whole number of bytes, at least 1 (got {text!r})")
        return int(text)
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValueError("max_body_bytes must be a whole number of bytes, at least 1")
    return max_body_bytes


@dataclass(frozen=True)
class _Sending:
    """What every attempt of every delivery of one call shares."""

    url: str
    secrets: str
    keys: Tuple[bytes, ...]
    max_attempts: int
    max_elapsed: float
    timeout: float
    max_body_bytes: int
    backoff: Backoff


def _sending(url: Optional[str], secret: Optional[str], max_attempts: int, max_elapsed: float, timeout: float,
             max_body_bytes: Optional[int], backoff: Backoff, fallback_url: Optional[str] = None) -> _Sending:
    _check_bounds(max_attempts, max_elapsed, timeout)
    secrets = _resolve_secrets(secret)
    return _Sending(_resolve_url(url, fallback_url), secrets, tuple(_keys_of(secrets)), max_attempts, max_elapsed,
                    timeout, _resolve_max_body_bytes(max_body_bytes), backoff)


def _deliver(body: bytes, webhook_id: str, how: _Sending) -> Any:
    """Attempts until a 2xx (returns its body); raises _Refused, or _RetriesSpent."""
    if len(body) > how.max_body_bytes:
        local = {"error": "payload_too_large",
                 "message": f"not sent: the body is {len(body)} bytes, over max_body_bytes {how.max_body_bytes}"}
        log.warning("%s: %s (no connection made)", webhook_id, describe_answer(Answer(413, local, None)))
        raise _Refused(413, local, f"{describe_answer(Answer(413, local, None))} "
                                   "(WEBHOOK_MAX_BODY_BYTES or --max-body-bytes; keep it at the service's BODY_LIMIT_BYTES)",
                       sent=False)
    rand = random.SystemRandom().random
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        elapsed = time.monotonic() - started
        # An attempt started late must not run far past max_elapsed.
        attempt_timeout = min(how.timeout, max(1.0, how.max_elapsed - elapsed))
        headers = request_headers(how.keys, webhook_id, int(time.time()), body)
        prefix = f"attempt {attempt}/{how.max_attempts} {webhook_id}:"
        retry_after: Optional[float] = None
        try:
            answer = post(how.url, body, headers, attempt_timeout)
        except (OSError, http.client.HTTPException) as err:
            outcome = describe_failure(err, attempt_timeout)
        else:
            outcome = describe_answer(answer)
            if 200 <= answer.status <= 299:
                log.info("%s %s; delivered", prefix, outcome)
                return answer.body
            if not is_retryable(answer.status):
                log.warning("%s %s; not retried (the same request would fail again)", prefix, outcome)
                hint = rejection_hint(answer.status, url=how.url, answer=answer, body_size=len(body), secrets=how.secrets)
                raise _Refused(answer.status, answer.body, f"{outcome}. {hint}" if hint else outcome)
            retry_after = parse_retry_after(answer.retry_after, time.time())

        elapsed = time.monotonic() - started
        wait = next_wait(attempt, retry_after=retry_after, elapsed=elapsed, max_attempts=how.max_attempts,
                         max_elapsed=how.max_elapsed, backoff=how.backoff, rand=rand)
        if wait is None:
            bound = (f"{how.max_attempts} attempt{'s' if how.max_attempts > 1 else ''} made" if attempt >= how.max_attempts
                     else f"the next attempt would start after max_elapsed {how.max_elapsed:g} s")
            log.warning("%s %s; giving up (%s; %.1f s elapsed)", prefix, outcome, bound, elapsed)
            raise _RetriesSpent(attempt, elapsed, outcome)
        asked = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
        log.warning("%s %s; retrying in %.1f s%s", prefix, outcome, wait, asked)
        time.sleep(wait)


def _spool_or_raise(directory: str, webhook_id: str, body: bytes, reason: str) -> str:
    try:
        path = spool_write(directory, webhook_id, body, reason)
    except (OSError, UnicodeDecodeError) as err:
        raise WebhookError(f"not delivered ({reason}) and NOT spooled: cannot write to {directory} ({err})",
                           webhook_id=webhook_id) from err
    return path


def _spent_reason(spent: _RetriesSpent) -> str:
    return f"{spent.attempts} attempts in {spent.elapsed:.1f} s, last: {spent.last_error}"


def _keep_rejected(refused: _Refused, webhook_id: str, body: bytes, url: str, spool_dir: Optional[str]) -> WebhookRejected:
    """Writes the rejection to ``rejected/`` and returns the error that says where (or that it could not)."""
    directory = rejected_dir(spool_dir)
    try:
        path: Optional[str] = rejected_write(directory, webhook_id, body, url=url, status=refused.status,
                                             answer=refused.answer, reason=refused.reason)
    except (OSError, UnicodeDecodeError) as err:
        path = None
        kept = f"NOT kept: cannot write to {directory} ({err})"
    else:
        kept = f"kept in {path}: fix the cause, then resend {webhook_id}"
    return WebhookRejected(f"{refused.reason} (webhook-id {webhook_id}; {'not retried' if refused.sent else 'not sent'}); {kept}",
                           webhook_id=webhook_id, status=refused.status, body=refused.answer, path=path)


def send(
    payload: Payload,
    *,
    url: Optional[str] = None,
    secret: Optional[str] = None,
    webhook_id: Optional[str] = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_elapsed: float = DEFAULT_MAX_ELAPSED_SECONDS,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_body_bytes: Optional[int] = None,
    spool_dir: Optional[str] = None,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> Any:
    """Delivers one book-completion payload and returns the service's parsed ``200`` body.

    ``payload`` is the delivery as a dict (or the JSON bytes of one, sent as they are).
    ``url`` defaults to ``WEBHOOK_URL``, ``secret`` to ``WEBHOOK_SECRET`` (none: unsigned, for a
    development service), ``webhook_id`` to a fresh ``msg_<uuid>``, ``spool_dir`` to
    ``WEBHOOK_SPOOL_DIR``, ``max_body_bytes`` to ``WEBHOOK_MAX_BODY_BYTES`` (else 10485760).
    Each attempt waits at most ``timeout`` seconds for its answer.

    Raises :class:`WebhookRejected` on a 4xx other than 429, a redirect, or a body over
    ``max_body_bytes`` (not sent: status 413); the delivery is kept in ``rejected/`` (``.path``).
    Raises :class:`WebhookSpooled` when the retries are spent (the delivery is in the named file),
    :class:`WebhookError` if it could not even be spooled, ValueError for bad arguments.
    An interrupt (Ctrl-C) during the retries spools the delivery before it propagates.
    """
    how = _sending(url, secret, max_attempts, max_elapsed, timeout, max_body_bytes, backoff)
    body = encode_payload(payload)
    webhook_id = check_webhook_id(webhook_id) if webhook_id is not None else new_webhook_id()
    if not how.keys:
        log.info("no WEBHOOK_SECRET: sending unsigned (accepted only by a service in development)")
    try:
        return _deliver(body, webhook_id, how)
    except _Refused as refused:
        raise _keep_rejected(refused, webhook_id, body, how.url, spool_dir) from None
    except _RetriesSpent as spent:
        reason = _spent_reason(spent)
        path = _spool_or_raise(spool_dir_from_env(spool_dir), webhook_id, body, reason)
        raise WebhookSpooled(f"not delivered to {how.url} ({reason}); spooled to {path}: run flush to send it again",
                             webhook_id=webhook_id, path=path, last_error=spent.last_error) from None
    except KeyboardInterrupt:
        path = _spool_or_raise(spool_dir_from_env(spool_dir), webhook_id, body, "interrupted")
        log.warning("interrupted: %s spooled to %s; run flush to send it", webhook_id, path)
        raise


@dataclass(frozen=True)
class FlushResult:
    """What :func:`flush` did. ``remaining`` deliveries are still in the spool."""

    delivered: int
    rejected: int
    kept: int
    responses: Tuple[Any, ...] = ()

    @property
    def remaining(self) -> int:
        return self.rejected + self.kept


def flush(
    url: Optional[str] = None,
    secret: Optional[str] = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_elapsed: float = DEFAULT_MAX_ELAPSED_SECONDS,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_body_bytes: Optional[int] = None,
    spool_dir: Optional[str] = None,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> FlushResult:
    """Re-sends every spooled delivery, oldest first, each with its own ``webhook-id``.

    Same retry rules and bounds as :func:`send`, per delivery. A delivery is removed after its
    2xx. One that is rejected (4xx) stays, counted in ``rejected``, and the flush goes on; when one
    spends its retries the service is still away, so the flush stops and keeps the rest (``kept``).
    ``rejected/`` is not read nor written: :func:`resend` is its command.
    """
    how = _sending(url, secret, max_attempts, max_elapsed, timeout, max_body_bytes, backoff)
    paths = spool_list(spool_dir_from_env(spool_dir))
    delivered = refused = 0
    responses: List[Any] = []
    for index, path in enumerate(paths):
        try:
            webhook_id, body = spool_read(path)
        except FileNotFoundError:
            continue  # sent and removed by a flush running at the same time
        except (OSError, ValueError) as err:
            log.warning("skipped %s: %s", path, err)
            refused += 1
            continue
        log.info("flushing %s (%s)", path, webhook_id)
        try:
            responses.append(_deliver(body, webhook_id, how))
        except _Refused as rejection:
            log.warning("kept %s: rejected (%s); fix the cause and flush again", path, rejection.reason)
            refused += 1
            continue
        except _RetriesSpent:
            kept = len(paths) - index
            log.warning("the service is still unavailable: stopped, %d kept in the spool", kept)
            return FlushResult(delivered, refused, kept, tuple(responses))
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        delivered += 1
        log.info("delivered and removed %s", path)
    return FlushResult(delivered, refused, 0, tuple(responses))


@dataclass(frozen=True)
class ResendResult:
    """What :func:`resend` did: ``delivered`` removed from ``rejected/``, ``rejected`` again (updated
    there), ``spooled`` (retries spent: moved to the spool for :func:`flush`)."""

    delivered: int
    rejected: int
    spooled: int
    responses: Tuple[Any, ...] = ()

    @property
    def all_delivered(self) -> bool:
        return self.rejected == 0 and self.spooled == 0


def resend(
    webhook_id: Optional[str] = None,
    *,
    url: Optional[str] = None,
    secret: Optional[str] = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_elapsed: float = DEFAULT_MAX_ELAPSED_SECONDS,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_body_bytes: Optional[int] = None,
    spool_dir: Optional[str] = None,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> ResendResult:
    """Re-sends one kept rejection (``webhook_id``) or all of them (None), each with its own ``webhook-id``.

    Run it once the cause is fixed. Same retry rules as :func:`send`. A 2xx removes the file; a new
    rejection updates it; retries spent move the delivery to the spool. The URL is ``url``, else
    ``WEBHOOK_URL``, else the one it was rejected at. Raises :class:`UnknownDelivery` for an id that
    is not kept, ValueError for bad arguments.
    """
    common = _sending(url, secret, max_attempts, max_elapsed, timeout, max_body_bytes, backoff)
    targets = [_find_rejected(webhook_id, spool_dir)] if webhook_id is not None else rejected(spool_dir)
    delivered = refused = spooled = 0
    responses: List[Any] = []
    for index, kept in enumerate(targets):
        how = dataclasses.replace(common, url=_resolve_url(url, kept.url or None))
        log.info("resending %s (%s, rejected %s with %d)", kept.webhook_id, kept.job_id or "no job_id", kept.rejected_at, kept.status)
        try:
            responses.append(_deliver(kept.body, kept.webhook_id, how))
        except _Refused as refusal:
            error = _keep_rejected(refusal, kept.webhook_id, kept.body, how.url, spool_dir)
            log.warning("rejected again: %s", error)
            refused += 1
            continue
        except _RetriesSpent as spent:
            path = _spool_or_raise(spool_dir_from_env(spool_dir), kept.webhook_id, kept.body, _spent_reason(spent))
            os.remove(kept.path)
            log.warning("the service is unavailable: %s moved to the spool (%s); run flush later", kept.webhook_id, path)
            spooled += 1
            continue
        except KeyboardInterrupt:
            log.warning("interrupted: %s is still kept in %s", kept.webhook_id, kept.path)
            raise
        try:
            os.remove(kept.path)
        except FileNotFoundError:
            pass
        delivered += 1
        log.info("delivered and removed %s (%d of %d)", kept.path, index + 1, len(targets))
    return ResendResult(delivered, refused, spooled, tuple(responses))


# --- command line ---------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"\d{1,15}", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1 (got {text!r})")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"seconds, more than 0 (got {text!r})")
    return value


PROG = "book_completion_webhook.py"


def _parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="Send the book-completion webhook with retries; spool what cannot be delivered (flush it later), "
                    "keep what is rejected (resend it once fixed).",
        epilog="Environment: WEBHOOK_URL (default %s), WEBHOOK_SECRET (whsec_<base64> or plain text; several separated "
               "by whitespace sign with each; unset: unsigned, development only), WEBHOOK_SPOOL_DIR (default %s; "
               "rejected deliveries in its rejected/), WEBHOOK_MAX_BODY_BYTES (default %d). Exit status: 0 done, "
               "1 not, 2 bad usage." % (DEFAULT_URL, DEFAULT_SPOOL_DIR, DEFAULT_MAX_BODY_BYTES),
    )
    commands = parser.add_subparsers(dest="command", metavar="{send,flush,rejected,resend,drop}")
    commands.required = True

    def options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--url", help="the endpoint (default: $WEBHOOK_URL, else %s)" % DEFAULT_URL)
        sub.add_argument("--max-attempts", type=_positive_int, default=DEFAULT_MAX_ATTEMPTS, metavar="N",
                         help="attempts per delivery (default %(default)s)")
        sub.add_argument("--max-elapsed", type=_positive_seconds, default=DEFAULT_MAX_ELAPSED_SECONDS, metavar="S",
                         help="no attempt starts later than this many seconds after the first (default %(default)g)")
        sub.add_argument("--timeout", type=_positive_seconds, default=DEFAULT_TIMEOUT_SECONDS, metavar="S",
                         help="seconds to wait for each answer (default %(default)g)")
        sub.add_argument("--max-body-bytes", type=_positive_int, default=None, metavar="N",
                         help="a larger body is not sent, and kept as rejected (default: $WEBHOOK_MAX_BODY_BYTES, "
                              "else %d, the service's default limit)" % DEFAULT_MAX_BODY_BYTES)

    send_command = commands.add_parser("send", help="send one payload (a JSON file, or - for stdin)",
                                       description="Send FILE.json byte for byte; print each attempt on stderr, the answer on stdout. "
                                                   "Exit 0 on a 2xx; 1 when rejected (kept in rejected/) or spooled.")
    send_command.add_argument("file", metavar="FILE.json")
    options(send_command)
    flush_command = commands.add_parser("flush", help="re-send every spooled delivery",
                                        description="Re-send every delivery in WEBHOOK_SPOOL_DIR with its own webhook-id "
                                                    "(rejected/ is left alone). Exit 0 when the spool is empty after it.")
    options(flush_command)
    list_command = commands.add_parser("rejected", help="list the rejected deliveries kept in rejected/",
                                       description="One line per rejected delivery: webhook-id, job_id, status, reason, time. Exit 0.")
    list_command.add_argument("--json", action="store_true", help="a JSON array of objects instead")
    resend_command = commands.add_parser("resend", help="re-send rejected deliveries once the cause is fixed",
                                         description="Re-send one rejected delivery (ID) or all of them (--all) with its own webhook-id; "
                                                     "a 2xx removes it from rejected/. The URL is --url, else $WEBHOOK_URL, else the one "
                                                     "it was rejected at. Exit 0 when every one named got a 2xx, 1 otherwise.")
    which = resend_command.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID", help="the webhook-id of one rejected delivery")
    which.add_argument("--all", action="store_true", help="every rejected delivery")
    options(resend_command)
    drop_command = commands.add_parser("drop", help="delete one rejected delivery (once handled otherwise)",
                                       description="Delete the rejected delivery ID from rejected/. Exit 1 when there is none.")
    drop_command.add_argument("id", metavar="ID", help="its webhook-id")
    return parser


def _read_payload_file(path: str) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as file:
                data = file.read()
    except OSError as err:
        raise _UsageError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        encode_payload(data)
    except ValueError as err:
        raise _UsageError(f"{path}: {err}") from None
    return data


def _raise_interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt


def _print_body(body: Any) -> None:
    print(body if isinstance(body, str) else json.dumps(body, ensure_ascii=False))


def _list_rejected(as_json: bool) -> int:
    kept = rejected()
    if as_json:
        print(json.dumps([{"webhook_id": one.webhook_id, "job_id": one.job_id, "status": one.status, "answer": one.answer,
                           "url": one.url, "reason": one.reason, "rejected_at": one.rejected_at} for one in kept],
                         ensure_ascii=False))
    else:
        for one in kept:
            reason = one.reason[4:] if one.reason.startswith(f"{one.status} ") else one.reason
            print(f"{one.webhook_id}  {one.job_id or '-'}  {one.status}  {reason}  {one.rejected_at}")
    log.info("%d rejected in %s%s", len(kept), rejected_dir(), "; after fixing the cause: resend --all" if kept else "")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "rejected":
        return _list_rejected(args.json)
    if args.command == "drop":
        kept = drop(args.id)
        log.info("dropped %s (job %s, %s, rejected %s): deleted %s", kept.webhook_id, kept.job_id or "-",
                 kept.reason, kept.rejected_at, kept.path)
        return 0
    bounds: Dict[str, Any] = {"url": args.url, "max_attempts": args.max_attempts, "max_elapsed": args.max_elapsed,
                              "timeout": args.timeout, "max_body_bytes": args.max_body_bytes}
    if args.command == "send":
        _print_body(send(_read_payload_file(args.file), **bounds))
        return 0
    if args.command == "resend":
        done = resend(None if args.all else args.id, **bounds)
        for body in done.responses:
            _print_body(body)
        log.info("resend: %d delivered, %d rejected again, %d moved to the spool; %d left in %s",
                 done.delivered, done.rejected, done.spooled, len(rejected()), rejected_dir())
        return 0 if done.all_delivered else 1
    result = flush(**bounds)
    for body in result.responses:
        _print_body(body)
    log.info("flush: %d delivered, %d rejected, %d kept; %d left in %s",
             result.delivered, result.rejected, result.kept, result.remaining, spool_dir_from_env())
    return 0 if not spool_list(spool_dir_from_env()) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status."""
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = (log.level, log.propagate, signal.getsignal(signal.SIGTERM))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    # A stop (docker stop, systemd) during the retries spools the delivery, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _run(args)
    except (_UsageError, ValueError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except WebhookRejected as err:
        _print_body(err.body)
        print(f"{PROG}: rejected: {err}", file=sys.stderr)
        return 1
    except WebhookError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
        signal.signal(signal.SIGTERM, saved[2] if saved[2] is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
