#!/usr/bin/env python3
"""Send the book-completion webhook so that no finished book is lost on the way in.

One file, Python 3.9+ standard library only: copy it into the backend and call ``send(payload)``
at the end of a job. It serialises the payload once, signs it the Standard Webhooks way
(HMAC-SHA256 ``v1``), posts it, and returns the service's parsed ``200`` body.

- Connection errors, timeouts, ``429`` and ``5xx`` are retried with the same ``webhook-id`` and
  the same bytes (a fresh timestamp and signature each attempt), waiting at least the answer's
  ``Retry-After`` (seconds or an HTTP date) and otherwise an exponential backoff with full jitter.
- Any other ``4xx`` (or ``3xx``) raises :class:`WebhookRejected` at once: the same bytes would fail
  the same way. Nothing is spooled.
- When the retries are spent, the delivery (its ``webhook-id`` and exact bytes) is written
  atomically to ``WEBHOOK_SPOOL_DIR`` and :class:`WebhookSpooled` names the file; :func:`flush`
  re-sends it later with the same ``webhook-id`` (the service treats a repeat as a retry).

Environment (read at each call): ``WEBHOOK_URL`` (default
``http://localhost:3001/api/webhooks/book-completion``), ``WEBHOOK_SECRET`` (``whsec_<base64>`` or
plain text; several separated by spaces sign with each; unset: unsigned, for a development
service), ``WEBHOOK_SPOOL_DIR`` (default ``./webhook-spool``).

Command line::

    python3 book_completion_webhook.py send FILE.json [--url URL] [--max-attempts N]
                                       [--max-elapsed S] [--timeout S]
    python3 book_completion_webhook.py flush [same options]

Exit status: 0 when delivered (``flush``: when the spool is empty after it), 1 otherwise,
2 for bad usage.
"""

from __future__ import annotations

import argparse
import base64
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
import signal
import socket
import sys
import tempfile
import time
import urllib.error
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
# The service refuses keys under 24 bytes outside development (Standard Webhooks: 24 to 64 bytes).
MIN_KEY_BYTES = 24
# The service's answers are small JSON objects; anything longer is not worth keeping in memory.
MAX_RESPONSE_BYTES = 1024 * 1024
SPOOL_SUFFIX = ".json"
USER_AGENT = "book-completion-webhook-kit/1 (python)"
# The web front end's port, where the original incident sent the webhook; the service is on 3001.
FRONT_END_PORT = 3000

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
    """The service answered a ``4xx`` other than ``429`` (or a redirect): not retried, not spooled.

    ``status`` is the HTTP status; ``body`` the parsed JSON answer (the text when it is not JSON).
    Re-sending the same bytes would fail the same way: fix the cause, then send again.
    """

    def __init__(self, message: str, *, webhook_id: str, status: int, body: Any) -> None:
        super().__init__(message, webhook_id=webhook_id)
        self.status = status
        self.body = body


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
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


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
    """An HTTP answer: status, parsed body, ``Retry-After`` header."""

    status: int
    body: Any
    retry_after: Optional[str]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would follow a 301/302 as a GET without the body: surface the redirect instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
    """One POST. Returns any HTTP answer; raises OSError / HTTPException when there is none."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            return Answer(response.status, parse_body(response.read(MAX_RESPONSE_BYTES)), response.headers.get("Retry-After"))
    except urllib.error.HTTPError as err:
        with err:
            return Answer(err.code, parse_body(err.read(MAX_RESPONSE_BYTES)), err.headers.get("Retry-After"))


def describe_failure(err: BaseException, timeout: float) -> str:
    """A short line for a request that got no answer."""
    reason: BaseException = err
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException):
        reason = err.reason
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "connection closed without an answer"
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


def _rejection_hint(url: str, status: int) -> str:
    if status == 404 and urllib.parse.urlsplit(url).port == FRONT_END_PORT:
        return f" (port {FRONT_END_PORT} is the web front end; the webhook service listens on 3001)"
    if 300 <= status < 400:
        return " (a redirect: set WEBHOOK_URL to the endpoint itself)"
    return ""


# --- the spool ------------------------------------------------------------------------------------


def spool_dir_from_env(spool_dir: Optional[str] = None) -> str:
    """``spool_dir``, else ``WEBHOOK_SPOOL_DIR``, else ``./webhook-spool``."""
    return spool_dir or os.environ.get("WEBHOOK_SPOOL_DIR") or DEFAULT_SPOOL_DIR


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable (POSIX); directories cannot be opened this way on Windows.
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spool_write(directory: str, webhook_id: str, body: bytes, reason: str) -> str:
    """Writes one delivery to ``directory`` atomically (temp file, fsync, rename); returns its path.

    The file is JSON ``{"webhook_id", "body", "spooled_at", "reason"}``; ``body`` is the exact
    text that was signed and sent. Its name starts with the UTC time, so a listing is oldest first.
    """
    # Book text inside: a directory it creates is its owner's only (an existing one is left as it is).
    os.makedirs(directory, mode=0o700, exist_ok=True)
    now = datetime.now(tz=timezone.utc)
    safe_id = re.sub(r"[^A-Za-z0-9_-]", "_", webhook_id)[:100]
    path = os.path.join(directory, f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{safe_id}{SPOOL_SUFFIX}")
    record = {
        "webhook_id": webhook_id,
        "body": body.decode("utf-8"),
        "spooled_at": now.isoformat(),
        "reason": reason,
    }
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
    return path


def spool_list(directory: str) -> List[str]:
    """The spooled deliveries, oldest first (temporary files are not deliveries)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [os.path.join(directory, name) for name in sorted(names) if name.endswith(SPOOL_SUFFIX) and not name.startswith(".")]


def spool_read(path: str) -> Tuple[str, bytes]:
    """``(webhook_id, body bytes)`` of one spooled delivery; ValueError when the file is not one."""
    with open(path, "rb") as file:
        try:
            record = json.loads(file.read().decode("utf-8"))
        except ValueError as err:
            raise ValueError(f"{path} is not a spooled delivery ({err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("webhook_id"), str) or not isinstance(record.get("body"), str):
        raise ValueError(f"{path} is not a spooled delivery (webhook_id and body are required)")
    return record["webhook_id"], record["body"].encode("utf-8")


# --- sending --------------------------------------------------------------------------------------


class _RetriesSpent(Exception):
    def __init__(self, attempts: int, elapsed: float, last_error: str) -> None:
        super().__init__(last_error)
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_error = last_error


def _check_bounds(max_attempts: int, max_elapsed: float, timeout: float) -> None:
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if not max_elapsed > 0:
        raise ValueError("max_elapsed must be more than 0 seconds")
    if not timeout > 0:
        raise ValueError("timeout must be more than 0 seconds")


def _resolve_url(url: Optional[str]) -> str:
    resolved = url or os.environ.get("WEBHOOK_URL") or DEFAULT_URL
    parts = urllib.parse.urlsplit(resolved)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url: not an http(s) URL: {resolved!r}")
    return resolved


def _resolve_keys(secret: Optional[str]) -> List[bytes]:
    keys = secret_keys(secret if secret is not None else os.environ.get("WEBHOOK_SECRET", ""))
    if any(len(key) < MIN_KEY_BYTES for key in keys):
        log.warning("the secret is under %d bytes: the service refuses such a secret outside development", MIN_KEY_BYTES)
    return keys


def _deliver(
    body: bytes,
    webhook_id: str,
    *,
    url: str,
    keys: Sequence[bytes],
    max_attempts: int,
    max_elapsed: float,
    timeout: float,
    backoff: Backoff,
) -> Any:
    """Attempts until a 2xx (returns its body); raises WebhookRejected, or _RetriesSpent."""
    rand = random.SystemRandom().random
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        elapsed = time.monotonic() - started
        # An attempt started late must not run far past max_elapsed.
        attempt_timeout = min(timeout, max(1.0, max_elapsed - elapsed))
        headers = request_headers(keys, webhook_id, int(time.time()), body)
        prefix = f"attempt {attempt}/{max_attempts} {webhook_id}:"
        retry_after: Optional[float] = None
        try:
            answer = post(url, body, headers, attempt_timeout)
        except (OSError, http.client.HTTPException) as err:
            outcome = describe_failure(err, attempt_timeout)
        else:
            outcome = describe_answer(answer)
            if 200 <= answer.status <= 299:
                log.info("%s %s; delivered", prefix, outcome)
                return answer.body
            if not is_retryable(answer.status):
                log.warning("%s %s; not retried (the same request would fail again)", prefix, outcome)
                raise WebhookRejected(
                    f"{describe_answer(answer)}{_rejection_hint(url, answer.status)} (webhook-id {webhook_id}; not retried)",
                    webhook_id=webhook_id, status=answer.status, body=answer.body)
            retry_after = parse_retry_after(answer.retry_after, time.time())

        elapsed = time.monotonic() - started
        wait = next_wait(attempt, retry_after=retry_after, elapsed=elapsed, max_attempts=max_attempts,
                         max_elapsed=max_elapsed, backoff=backoff, rand=rand)
        if wait is None:
            bound = (f"{max_attempts} attempt{'s' if max_attempts > 1 else ''} made" if attempt >= max_attempts
                     else f"the next attempt would start after max_elapsed {max_elapsed:g} s")
            log.warning("%s %s; giving up (%s; %.1f s elapsed)", prefix, outcome, bound, elapsed)
            raise _RetriesSpent(attempt, elapsed, outcome)
        asked = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
        log.warning("%s %s; retrying in %.1f s%s", prefix, outcome, wait, asked)
        time.sleep(wait)


def send(
    payload: Payload,
    *,
    url: Optional[str] = None,
    secret: Optional[str] = None,
    webhook_id: Optional[str] = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_elapsed: float = DEFAULT_MAX_ELAPSED_SECONDS,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    spool_dir: Optional[str] = None,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> Any:
    """Delivers one book-completion payload and returns the service's parsed ``200`` body.

    ``payload`` is the delivery as a dict (or the JSON bytes of one, sent as they are).
    ``url`` defaults to ``WEBHOOK_URL``, ``secret`` to ``WEBHOOK_SECRET`` (none: unsigned, for a
    development service), ``webhook_id`` to a fresh ``msg_<uuid>``, ``spool_dir`` to
    ``WEBHOOK_SPOOL_DIR``. Each attempt waits at most ``timeout`` seconds for its answer.

    Raises :class:`WebhookRejected` on a 4xx other than 429 (nothing spooled),
    :class:`WebhookSpooled` when the retries are spent (the delivery is in the named file),
    :class:`WebhookError` if it could not even be spooled, ValueError for bad arguments.
    An interrupt (Ctrl-C) during the retries spools the delivery before it propagates.
    """
    _check_bounds(max_attempts, max_elapsed, timeout)
    body = encode_payload(payload)
    resolved_url = _resolve_url(url)
    keys = _resolve_keys(secret)
    webhook_id = check_webhook_id(webhook_id) if webhook_id is not None else new_webhook_id()
    if not keys:
        log.info("no WEBHOOK_SECRET: sending unsigned (accepted only by a service in development)")
    try:
        return _deliver(body, webhook_id, url=resolved_url, keys=keys, max_attempts=max_attempts,
                        max_elapsed=max_elapsed, timeout=timeout, backoff=backoff)
    except _RetriesSpent as spent:
        reason = f"{spent.attempts} attempts in {spent.elapsed:.1f} s, last: {spent.last_error}"
        path = _spool_or_raise(spool_dir_from_env(spool_dir), webhook_id, body, reason)
        raise WebhookSpooled(f"not delivered to {resolved_url} ({reason}); spooled to {path}: run flush to send it again",
                             webhook_id=webhook_id, path=path, last_error=spent.last_error) from None
    except KeyboardInterrupt:
        path = _spool_or_raise(spool_dir_from_env(spool_dir), webhook_id, body, "interrupted")
        log.warning("interrupted: %s spooled to %s; run flush to send it", webhook_id, path)
        raise


def _spool_or_raise(directory: str, webhook_id: str, body: bytes, reason: str) -> str:
    try:
        path = spool_write(directory, webhook_id, body, reason)
    except (OSError, UnicodeDecodeError) as err:
        raise WebhookError(f"not delivered ({reason}) and NOT spooled: cannot write to {directory} ({err})",
                           webhook_id=webhook_id) from err
    return path


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
    spool_dir: Optional[str] = None,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> FlushResult:
    """Re-sends every spooled delivery, oldest first, each with its own ``webhook-id``.

    Same retry rules and bounds as :func:`send`, per delivery. A delivery is removed after its
    2xx. One that is rejected (4xx) stays, counted in ``rejected``, and the flush goes on; when one
    spends its retries the service is still away, so the flush stops and keeps the rest (``kept``).
    """
    _check_bounds(max_attempts, max_elapsed, timeout)
    resolved_url = _resolve_url(url)
    keys = _resolve_keys(secret)
    paths = spool_list(spool_dir_from_env(spool_dir))
    delivered = rejected = 0
    responses: List[Any] = []
    for index, path in enumerate(paths):
        try:
            webhook_id, body = spool_read(path)
        except FileNotFoundError:
            continue  # sent and removed by a flush running at the same time
        except (OSError, ValueError) as err:
            log.warning("skipped %s: %s", path, err)
            rejected += 1
            continue
        log.info("flushing %s (%s)", path, webhook_id)
        try:
            responses.append(_deliver(body, webhook_id, url=resolved_url, keys=keys, max_attempts=max_attempts,
                                      max_elapsed=max_elapsed, timeout=timeout, backoff=backoff))
        except WebhookRejected:
            log.warning("kept %s: rejected, fix the cause and flush again", path)
            rejected += 1
            continue
        except _RetriesSpent:
            kept = len(paths) - index
            log.warning("the service is still unavailable: stopped, %d kept in the spool", kept)
            return FlushResult(delivered, rejected, kept, tuple(responses))
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        delivered += 1
        log.info("delivered and removed %s", path)
    return FlushResult(delivered, rejected, 0, tuple(responses))


# --- command line ---------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
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


def _parser() -> _Parser:
    parser = _Parser(
        prog="book_completion_webhook.py",
        description="Send the book-completion webhook with retries; spool what cannot be delivered, flush it later.",
        epilog="Environment: WEBHOOK_URL (default %s), WEBHOOK_SECRET (whsec_<base64> or plain text; unset: unsigned, "
               "development only), WEBHOOK_SPOOL_DIR (default %s). Exit status: 0 delivered (flush: the spool is empty), "
               "1 not, 2 bad usage." % (DEFAULT_URL, DEFAULT_SPOOL_DIR),
    )
    commands = parser.add_subparsers(dest="command", metavar="{send,flush}")
    commands.required = True

    def options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--url", help="the endpoint (default: $WEBHOOK_URL, else %s)" % DEFAULT_URL)
        sub.add_argument("--max-attempts", type=_positive_int, default=DEFAULT_MAX_ATTEMPTS, metavar="N",
                         help="attempts per delivery (default %(default)s)")
        sub.add_argument("--max-elapsed", type=_positive_seconds, default=DEFAULT_MAX_ELAPSED_SECONDS, metavar="S",
                         help="no attempt starts later than this many seconds after the first (default %(default)g)")
        sub.add_argument("--timeout", type=_positive_seconds, default=DEFAULT_TIMEOUT_SECONDS, metavar="S",
                         help="seconds to wait for each answer (default %(default)g)")

    send_command = commands.add_parser("send", help="send one payload (a JSON file, or - for stdin)",
                                       description="Send FILE.json byte for byte; print each attempt on stderr, the answer on stdout.")
    send_command.add_argument("file", metavar="FILE.json")
    options(send_command)
    flush_command = commands.add_parser("flush", help="re-send every spooled delivery",
                                        description="Re-send every delivery in WEBHOOK_SPOOL_DIR with its own webhook-id.")
    options(flush_command)
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
    prog = "book_completion_webhook.py"
    try:
        bounds: Dict[str, Any] = {"url": args.url, "max_attempts": args.max_attempts,
                                  "max_elapsed": args.max_elapsed, "timeout": args.timeout}
        if args.command == "send":
            _print_body(send(_read_payload_file(args.file), **bounds))
            return 0
        result = flush(**bounds)
        for body in result.responses:
            _print_body(body)
        log.info("flush: %d delivered, %d rejected, %d kept; %d left in %s",
                 result.delivered, result.rejected, result.kept, result.remaining, spool_dir_from_env())
        return 0 if not spool_list(spool_dir_from_env()) else 1
    except _UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except WebhookRejected as err:
        _print_body(err.body)
        print(f"{prog}: rejected: {err}", file=sys.stderr)
        return 1
    except WebhookError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
        signal.signal(signal.SIGTERM, saved[2] if saved[2] is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
