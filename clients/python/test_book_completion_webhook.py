"""Unit tests of the kit: signing, backoff, Retry-After, the spool and rejected/ files, the hints,
the size check, and post() reading an answer sent before the upload broke (local sockets).

Run: ``python3 -m unittest discover -s clients/python`` (test/sender-kit.test.ts runs it in
``npm test``; the same file also tests the kit against the real service).
"""

from __future__ import annotations

import ast
import base64
import http.client
import json
import os
import random
import shutil
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
import unittest
from email.utils import formatdate
from pathlib import Path
from unittest import mock

import book_completion_webhook as kit

KIT_SOURCE = Path(kit.__file__).read_text(encoding="utf-8")


class SigningTest(unittest.TestCase):
    # The published Standard Webhooks test vector: libraries/python/tests/test_webhooks.py,
    # test_sign_function, in github.com/standard-webhooks/standard-webhooks.
    VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
    VECTOR_TIMESTAMP = 1614265330
    VECTOR_BODY = b'{"test": 2432232314}'
    VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    def test_the_standard_webhooks_vector(self) -> None:
        keys = kit.secret_keys(self.VECTOR_SECRET)
        self.assertEqual(kit.sign(keys, self.VECTOR_ID, self.VECTOR_TIMESTAMP, self.VECTOR_BODY), self.VECTOR_SIGNATURE)

    def test_one_changed_byte_changes_the_signature(self) -> None:
        keys = kit.secret_keys(self.VECTOR_SECRET)
        for body, webhook_id, timestamp in [
            (b'{"test": 2432232315}', self.VECTOR_ID, self.VECTOR_TIMESTAMP),
            (self.VECTOR_BODY, self.VECTOR_ID + "x", self.VECTOR_TIMESTAMP),
            (self.VECTOR_BODY, self.VECTOR_ID, self.VECTOR_TIMESTAMP + 1),
        ]:
            self.assertNotEqual(kit.sign(keys, webhook_id, timestamp, body), self.VECTOR_SIGNATURE)

    def test_whsec_secrets_are_base64_decoded(self) -> None:
        self.assertEqual(kit.secret_to_key(self.VECTOR_SECRET), base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        self.assertEqual(len(kit.secret_to_key(self.VECTOR_SECRET)), 24)

    def test_other_secrets_are_their_utf8_bytes(self) -> None:
        secret = "un secret en clair, assez long — ça signe"
        self.assertEqual(kit.secret_to_key(secret), secret.encode("utf-8"))
        # Not base64-decoded: "MfKQ…" without the prefix is a plain secret of 32 ASCII bytes.
        self.assertEqual(kit.secret_to_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

    def test_a_whsec_secret_that_is_not_base64_is_refused(self) -> None:
        for secret in ["whsec_", "whsec_not base64!", "whsec_abc", "whsec_v1,abcd"]:
            with self.assertRaises(ValueError, msg=secret) as caught:
                kit.secret_to_key(secret)
            self.assertIn("base64", str(caught.exception))
            if secret != "whsec_":
                self.assertNotIn(secret, str(caught.exception), "the error must not echo the secret")

    def test_several_secrets_sign_with_each_in_order(self) -> None:
        keys = kit.secret_keys(f"  {self.VECTOR_SECRET}\tsecond-secret-of-more-than-24-bytes \n")
        self.assertEqual(len(keys), 2)
        entries = kit.sign(keys, self.VECTOR_ID, self.VECTOR_TIMESTAMP, self.VECTOR_BODY).split(" ")
        self.assertEqual(entries[0], self.VECTOR_SIGNATURE)
        self.assertEqual(entries[1], kit.sign(keys[1:], self.VECTOR_ID, self.VECTOR_TIMESTAMP, self.VECTOR_BODY))
        self.assertEqual(kit.secret_keys(""), [])
        self.assertEqual(kit.secret_keys("  "), [])

    def test_headers_signed_or_not(self) -> None:
        keys = kit.secret_keys(self.VECTOR_SECRET)
        signed = kit.request_headers(keys, self.VECTOR_ID, self.VECTOR_TIMESTAMP, self.VECTOR_BODY)
        self.assertEqual(signed["webhook-id"], self.VECTOR_ID)
        self.assertEqual(signed["webhook-timestamp"], "1614265330")
        self.assertEqual(signed["webhook-signature"], self.VECTOR_SIGNATURE)
        self.assertEqual(signed["Content-Type"], "application/json")
        unsigned = kit.request_headers([], self.VECTOR_ID, self.VECTOR_TIMESTAMP, self.VECTOR_BODY)
        self.assertEqual({name for name in unsigned if name.startswith("webhook-")}, set())

    def test_webhook_ids(self) -> None:
        first, second = kit.new_webhook_id(), kit.new_webhook_id()
        self.assertRegex(first, r"^msg_[0-9a-f]{32}$")
        self.assertNotEqual(first, second)
        self.assertEqual(kit.check_webhook_id("msg_abc-1"), "msg_abc-1")
        for bad in ["", "has space", "line\r\nbreak", "é", "x" * 256]:
            with self.assertRaises(ValueError, msg=bad):
                kit.check_webhook_id(bad)


class BodyTest(unittest.TestCase):
    def test_a_dict_is_utf8_json_without_escapes(self) -> None:
        body = kit.encode_payload({"book_title": "Réussir l'entretien 😊", "n": 1})
        self.assertEqual(body, '{"book_title": "Réussir l\'entretien 😊", "n": 1}'.encode("utf-8"))
        self.assertNotIn(b"\\u", body)

    def test_bytes_are_sent_as_they_are(self) -> None:
        raw = '{\n  "job_id" : "é",\n  "x": [1,2]\n}\n'.encode("utf-8")
        self.assertIs(type(kit.encode_payload(raw)), bytes)
        self.assertEqual(kit.encode_payload(raw), raw)

    def test_what_is_not_a_json_object_is_refused(self) -> None:
        cases = [b"not json", b"[1, 2]", b'"text"', b'{"a": "\xff"}', float("nan")]
        for payload in cases:
            with self.assertRaises((ValueError, TypeError), msg=repr(payload)):
                kit.encode_payload(payload)  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            kit.encode_payload({"word_count": float("nan")})

    def test_answer_bodies(self) -> None:
        self.assertEqual(kit.parse_body(b'{"success": true}'), {"success": True})
        self.assertEqual(kit.parse_body(b"<html>Not Found</html>"), "<html>Not Found</html>")
        answer = kit.Answer(422, {"error": "unprocessable_delivery", "message": 'user "u" does not exist'}, None)
        self.assertEqual(kit.describe_answer(answer), '422 unprocessable_delivery: user "u" does not exist')
        self.assertEqual(kit.describe_answer(kit.Answer(502, "<html>", None)), "502")


class BackoffTest(unittest.TestCase):
    def test_default_ceilings_double_up_to_the_cap(self) -> None:
        ceilings = [kit.DEFAULT_BACKOFF.ceiling(n) for n in range(1, 10)]
        self.assertEqual(ceilings, [5, 10, 20, 40, 80, 160, 300, 300, 300])
        # The documented schedule (docs/SENDER.md): 8 attempts, at most 615 s of waiting.
        self.assertEqual(sum(kit.DEFAULT_BACKOFF.ceiling(n) for n in range(1, kit.DEFAULT_MAX_ATTEMPTS)), 615)

    def test_a_huge_retry_number_stays_at_the_cap(self) -> None:
        self.assertEqual(kit.Backoff(1, 60).ceiling(5000), 60)
        with self.assertRaises(ValueError):
            kit.Backoff().ceiling(0)

    def test_full_jitter_bounds(self) -> None:
        backoff = kit.Backoff(base_seconds=2, cap_seconds=50)
        self.assertEqual(backoff.delay(3, lambda: 0.0), 0.0)
        self.assertAlmostEqual(backoff.delay(3, lambda: 0.999999), 8.0, places=4)
        rng = random.Random(42)
        for retry in range(1, 12):
            draws = [backoff.delay(retry, rng.random) for _ in range(500)]
            self.assertGreaterEqual(min(draws), 0.0)
            self.assertLess(max(draws), backoff.ceiling(retry))
            # Spread over the whole range (full jitter), not clustered near the ceiling.
            self.assertLess(min(draws), backoff.ceiling(retry) * 0.1)
            self.assertGreater(max(draws), backoff.ceiling(retry) * 0.9)


class NextWaitTest(unittest.TestCase):
    def wait(self, attempt: int, retry_after: float | None = None, elapsed: float = 0.0, rand: float = 0.5,
             max_attempts: int = 8, max_elapsed: float = 3600.0) -> float | None:
        return kit.next_wait(attempt, retry_after=retry_after, elapsed=elapsed, max_attempts=max_attempts,
                             max_elapsed=max_elapsed, backoff=kit.DEFAULT_BACKOFF, rand=lambda: rand)

    def test_no_wait_after_the_last_attempt(self) -> None:
        self.assertIsNotNone(self.wait(7))
        self.assertIsNone(self.wait(8))
        self.assertIsNone(self.wait(1, max_attempts=1))

    def test_retry_after_is_a_floor(self) -> None:
        self.assertEqual(self.wait(1, retry_after=30), 30)  # backoff would be 2.5 s
        self.assertEqual(self.wait(5, retry_after=1), 40)  # backoff 0.5 * 80 s is longer
        self.assertEqual(self.wait(1, retry_after=0.0), 2.5)

    def test_no_attempt_starts_after_max_elapsed(self) -> None:
        self.assertEqual(self.wait(1, elapsed=7.5, max_elapsed=10), 2.5)
        self.assertIsNone(self.wait(1, elapsed=8, max_elapsed=10))
        self.assertIsNone(self.wait(1, retry_after=3600, max_elapsed=600))


class RetryAfterTest(unittest.TestCase):
    NOW = 1_800_000_000.0

    def test_seconds(self) -> None:
        self.assertEqual(kit.parse_retry_after("5", self.NOW), 5)
        self.assertEqual(kit.parse_retry_after(" 120 ", self.NOW), 120)
        self.assertEqual(kit.parse_retry_after("0", self.NOW), 0)

    def test_http_date(self) -> None:
        self.assertEqual(kit.parse_retry_after(formatdate(self.NOW + 30, usegmt=True), self.NOW), 30)
        # RFC 9110's own example, 2015-10-21 07:28:00 UTC = 1445412480.
        self.assertEqual(kit.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 10), 10)
        # A date already past: retry now.
        self.assertEqual(kit.parse_retry_after(formatdate(self.NOW - 90, usegmt=True), self.NOW), 0)

    def test_absent_or_malformed(self) -> None:
        for value in [None, "", "soon", "-5", "1.5", "5s", "Fri, 99 Foo 2027"]:
            self.assertIsNone(kit.parse_retry_after(value, self.NOW), repr(value))

    def test_which_statuses_are_retried(self) -> None:
        self.assertEqual([s for s in [200, 301, 400, 401, 404, 413, 415, 422, 429, 500, 502, 503, 504, 599] if kit.is_retryable(s)],
                         [429, 500, 502, 503, 504, 599])


class SpoolTest(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="kit-spool-")
        self.addCleanup(shutil.rmtree, self.directory)

    def test_written_whole_and_read_back_byte_for_byte(self) -> None:
        body = kit.encode_payload({"book_title": "Le potager 🍅", "content": "# Chapitre 1\n\nÇa pousse"})
        path = kit.spool_write(self.directory, "msg_1", body, "8 attempts")
        self.assertEqual(os.listdir(self.directory), [os.path.basename(path)], "one file, no temporary left")
        self.assertEqual(kit.spool_read(path), ("msg_1", body))
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        self.assertEqual(set(record), {"webhook_id", "body", "spooled_at", "reason"})
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode) & 0o077, 0, "book text is readable by its owner only")

    def test_a_directory_it_creates_is_private(self) -> None:
        directory = os.path.join(self.directory, "nested", "spool")
        kit.spool_write(directory, "msg_1", b"{}", "r")
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode) & 0o077, 0)

    def test_listed_oldest_first_without_temporary_files(self) -> None:
        first = kit.spool_write(self.directory, "msg_b", b"{}", "r")
        second = kit.spool_write(self.directory, "msg_a", b"{}", "r")
        Path(self.directory, ".spooling-abc.tmp").write_text("partial")
        Path(self.directory, "notes.txt").write_text("not a delivery")
        self.assertEqual(kit.spool_list(self.directory), [first, second])
        self.assertEqual(kit.spool_list(os.path.join(self.directory, "absent")), [])

    def test_a_failed_write_leaves_nothing(self) -> None:
        with mock.patch("os.fsync", side_effect=OSError(28, "No space left on device")):
            with self.assertRaises(OSError):
                kit.spool_write(self.directory, "msg_1", b"{}", "r")
        self.assertEqual(os.listdir(self.directory), [])

    def test_a_path_like_webhook_id_stays_in_the_directory(self) -> None:
        path = kit.spool_write(self.directory, "../../etc/passwd", b"{}", "r")
        self.assertEqual(os.path.dirname(path), self.directory)
        self.assertEqual(kit.spool_read(path)[0], "../../etc/passwd")

    def test_a_file_that_is_not_a_delivery(self) -> None:
        path = Path(self.directory, "20260101T000000.000000Z-x.json")
        for content in ["{", '{"webhook_id": "x"}', "[]"]:
            path.write_text(content)
            with self.assertRaises(ValueError):
                kit.spool_read(str(path))


class HintTest(unittest.TestCase):
    URL = "http://backend-host:3001/api/webhooks/book-completion"
    NOW = 1_800_000_000.0

    def hint(self, status: int, body: object = None, date: str | None = None, url: str = URL, secrets: str = "whsec_abcd",
             size: int = 5000) -> str:
        answer = kit.Answer(status, body, None, date)
        return kit.rejection_hint(status, url=url, answer=answer, body_size=size, secrets=secrets, now=self.NOW)

    def test_401_names_the_secret_forms(self) -> None:
        self.assertIn("the same WEBHOOK_SECRET on both sides", self.hint(401))
        self.assertIn("whsec_<base64> is base64-decoded, any other value is plain text", self.hint(401))
        self.assertIn("this side's secret is a whsec_ one", self.hint(401))
        self.assertIn("this side's secret is plain text", self.hint(401, secrets="a-plain-text-secret-of-24-bytes"))
        self.assertIn("holds 3 secrets separated by whitespace", self.hint(401, secrets="my pass phrase"))
        self.assertIn("no WEBHOOK_SECRET", self.hint(401, secrets=""))
        self.assertNotIn("abcd", self.hint(401), "never the secret itself")

    def test_401_names_the_clock_only_past_a_minute(self) -> None:
        ahead = self.hint(401, date=formatdate(self.NOW + 7 * 60 + 3, usegmt=True))
        self.assertIn("the service's clock is 7 min 3 s ahead of this host's", ahead)
        behind = self.hint(401, date=formatdate(self.NOW - 3 * 3600 - 120, usegmt=True))
        self.assertIn("the service's clock is 3 h 2 min behind this host's", behind)
        self.assertIn("90 s ahead", self.hint(401, date=formatdate(self.NOW + 90, usegmt=True)))
        for date in [formatdate(self.NOW + 59, usegmt=True), formatdate(self.NOW - 60, usegmt=True), None, "not a date"]:
            self.assertNotIn("clock", self.hint(401, date=date), repr(date))

    def test_404_names_the_path_and_port(self) -> None:
        self.assertEqual(self.hint(404, url="http://h:8080/webhook"),
                         "Expected: POST /api/webhooks/book-completion on the service's port 3001; this went to port 8080, path /webhook")
        self.assertIn("(port 3000 is the web front end)", self.hint(404, url="http://localhost:3000/api/webhooks/book-completion"))
        self.assertIn("this went to port 80, path /", self.hint(404, url="http://h"))
        self.assertIn("this went to port 443,", self.hint(404, url="https://h/x"))

    def test_413_names_the_size_and_the_limit_when_given(self) -> None:
        self.assertEqual(self.hint(413, {"error": "payload_too_large", "limitBytes": 1048576}, size=2000000),
                         "The body is 2000000 bytes; the service's limit is 1048576 bytes")
        self.assertIn("the service's limit is 4096 bytes", self.hint(413, {"error": "payload_too_large", "message": "over 4096 bytes"}))
        service_413 = {"error": "payload_too_large", "message": "the body is larger than this service's limit of 10485760 bytes (BODY_LIMIT_BYTES)"}
        self.assertEqual(self.hint(413, service_413, size=12000820), "The body is 12000820 bytes; the service's limit is 10485760 bytes")
        self.assertEqual(self.hint(413, {"error": "payload_too_large", "message": "Request body is too large"}, size=2000000),
                         "The body is 2000000 bytes, over the service's BODY_LIMIT_BYTES (10485760 by default)")
        self.assertIsNone(kit.service_body_limit("<html>413</html>"))
        self.assertIsNone(kit.service_body_limit({"limit": True}))

    def test_others(self) -> None:
        self.assertIn("redirect", self.hint(301))
        self.assertEqual(self.hint(400), "")
        self.assertEqual(self.hint(422), "")


class EarlyAnswerTest(unittest.TestCase):
    """post() against a server that answers from the headers alone, then closes while the body comes."""

    BODY = b'{"content": "' + b"x" * (12 * 1024 * 1024) + b'"}'

    def serve(self, answer: bytes, *, reset: bool) -> str:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        self.addCleanup(server.close)

        def run() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536)
                if answer:
                    conn.sendall(answer)
                time.sleep(0.02)
                if reset:  # unread bytes: RST instead of FIN
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

        threading.Thread(target=run, daemon=True).start()
        return f"http://127.0.0.1:{server.getsockname()[1]}/api/webhooks/book-completion"

    def test_an_early_413_is_read_even_when_the_connection_is_reset(self) -> None:
        body = b'{"error": "payload_too_large", "message": "over 1048576 bytes"}'
        url = self.serve(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body), reset=True)
        for _ in range(5):
            answer = kit.post(url, self.BODY, {"Content-Type": "application/json"}, 10)
            self.assertEqual((answer.status, answer.body), (413, json.loads(body)))

    def test_an_early_503_keeps_its_retry_after(self) -> None:
        url = self.serve(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
                         reset=False)
        answer = kit.post(url, self.BODY, {}, 10)
        self.assertEqual((answer.status, answer.retry_after), (503, "7"))

    def test_no_answer_at_all_is_still_an_error(self) -> None:
        url = self.serve(b"", reset=True)
        with self.assertRaises((OSError, http.client.HTTPException)):
            kit.post(url, self.BODY, {}, 10)


class RejectedStoreTest(unittest.TestCase):
    def setUp(self) -> None:
        self.spool = tempfile.mkdtemp(prefix="kit-rejected-")
        self.addCleanup(shutil.rmtree, self.spool)
        self.directory = kit.rejected_dir(self.spool)

    def keep(self, webhook_id: str, status: int = 401, body: bytes = b'{"job_id": "job-1"}') -> str:
        return kit.rejected_write(self.directory, webhook_id, body, url="http://h:3001/x", status=status,
                                  answer={"error": "invalid_signature"}, reason=f"{status} invalid_signature")

    def test_one_private_file_per_delivery_read_back_whole(self) -> None:
        body = kit.encode_payload({"job_id": "job-1", "content": "Ça pousse 🍅"})
        path = self.keep("msg_1", body=body)
        self.assertEqual(os.path.dirname(path), os.path.join(self.spool, "rejected"))
        self.assertEqual(os.listdir(self.directory), [os.path.basename(path)], "no temporary left")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode) & 0o077, 0)
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        self.assertEqual(set(record), {"webhook_id", "body", "url", "status", "answer", "reason", "rejected_at"})
        kept = kit.rejected_read(path)
        self.assertEqual((kept.webhook_id, kept.body, kept.status, kept.job_id, kept.url), ("msg_1", body, 401, "job-1", "http://h:3001/x"))

    def test_a_new_rejection_replaces_the_file(self) -> None:
        first = self.keep("msg_1", 401)
        second = self.keep("msg_1", 422)
        self.assertEqual(first, second)
        self.assertEqual([kept.status for kept in kit.rejected(self.spool)], [422])

    def test_ids_that_sanitise_alike_do_not_collide(self) -> None:
        paths = {self.keep("msg/1"), self.keep("msg:1"), self.keep("../msg_1")}
        self.assertEqual(len(paths), 3)
        self.assertTrue(all(os.path.dirname(path) == self.directory for path in paths))
        self.assertEqual(sorted(kept.webhook_id for kept in kit.rejected(self.spool)), ["../msg_1", "msg/1", "msg:1"])

    def test_listed_oldest_first_skipping_what_is_not_a_rejection(self) -> None:
        self.keep("msg_b")
        self.keep("msg_a")
        Path(self.directory, "junk.json").write_text("{")
        Path(self.directory, ".spooling-x.tmp").write_text("partial")
        with self.assertLogs(kit.log, "WARNING") as logged:
            self.assertEqual([kept.webhook_id for kept in kit.rejected(self.spool)], ["msg_b", "msg_a"])
        self.assertIn("junk.json is not a rejected delivery", logged.output[0])
        self.assertEqual(kit.rejected(os.path.join(self.spool, "absent")), [])
        self.assertEqual(kit.spool_list(self.spool), [], "rejected/ is not the spool")

    def test_drop_and_unknown_ids(self) -> None:
        self.keep("msg_1")
        self.assertEqual(kit.drop("msg_1", spool_dir=self.spool).webhook_id, "msg_1")
        self.assertEqual(kit.rejected(self.spool), [])
        with self.assertRaises(kit.UnknownDelivery):
            kit.drop("msg_1", spool_dir=self.spool)
        with self.assertRaises(LookupError):
            kit.resend("msg_1", spool_dir=self.spool)

    def test_a_failed_write_leaves_nothing(self) -> None:
        with mock.patch("os.fsync", side_effect=OSError(28, "No space left on device")):
            with self.assertRaises(OSError):
                self.keep("msg_1")
        self.assertEqual(os.listdir(self.directory), [])


class SizeCheckTest(unittest.TestCase):
    def setUp(self) -> None:
        self.spool = tempfile.mkdtemp(prefix="kit-size-")
        self.addCleanup(shutil.rmtree, self.spool)

    def test_over_the_limit_is_rejected_without_an_attempt(self) -> None:
        payload = {"job_id": "big", "content": "x" * 5000}
        with mock.patch.object(kit, "post", side_effect=AssertionError("no attempt may be made")), self.assertLogs(kit.log, "INFO"):
            with self.assertRaises(kit.WebhookRejected) as caught:
                kit.send(payload, url="http://127.0.0.1:9/x", secret="", spool_dir=self.spool, max_body_bytes=4096)
        error = caught.exception
        self.assertEqual(error.status, 413)
        size = len(kit.encode_payload(payload))
        self.assertIn(f"the body is {size} bytes, over max_body_bytes 4096", str(error))
        self.assertIsNotNone(error.path)
        self.assertIn(f"kept in {error.path}", str(error))
        self.assertEqual([kept.body for kept in kit.rejected(self.spool)], [kit.encode_payload(payload)])

    def test_the_limit_from_the_environment(self) -> None:
        with mock.patch.dict(os.environ, {"WEBHOOK_MAX_BODY_BYTES": "123"}):
            self.assertEqual(kit._resolve_max_body_bytes(None), 123)
            self.assertEqual(kit._resolve_max_body_bytes(50), 50)
        with mock.patch.dict(os.environ, {"WEBHOOK_MAX_BODY_BYTES": ""}):
            self.assertEqual(kit._resolve_max_body_bytes(None), kit.DEFAULT_MAX_BODY_BYTES)
        for bad in ["abc", "0", "-1", "1.5"]:
            with mock.patch.dict(os.environ, {"WEBHOOK_MAX_BODY_BYTES": bad}):
                with self.assertRaises(ValueError, msg=bad):
                    kit._resolve_max_body_bytes(None)
        for bad_argument in [0, -1, True]:
            with self.assertRaises(ValueError):
                kit._resolve_max_body_bytes(bad_argument)


class CompatibilityTest(unittest.TestCase):
    def test_python_3_9_syntax(self) -> None:
        ast.parse(KIT_SOURCE, feature_version=(3, 9))

    def test_standard_library_only(self) -> None:
        tree = ast.parse(KIT_SOURCE)
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported.discard("__future__")
        standard: frozenset[str] | None = getattr(sys, "stdlib_module_names", None)
        if standard is None:
            self.skipTest("sys.stdlib_module_names needs Python 3.10")
        self.assertEqual({name for name in imported if name not in standard}, set())


if __name__ == "__main__":
    unittest.main()
