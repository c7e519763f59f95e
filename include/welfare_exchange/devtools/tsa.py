"""A real RFC 3161 time-stamping authority on loopback, for tests and the demo: never for production.

OpenSSL's own TSA (``openssl ts -reply``) signs the time-stamps, behind a small HTTP endpoint
that speaks the RFC 3161 HTTP transport (POST ``application/timestamp-query``, answer
``application/timestamp-reply``) on ``127.0.0.1``. Its certificate chain is made on the spot
by a throw-away CA (:mod:`welfare_exchange.devtools.pki`): the TSA certificate carries the
critical ``timeStamping`` extended key usage RFC 3161 requires. The CA certificate is what the
project trusts (``WELFARE_EXCHANGE_AUDIT_TSA_CERT``). Nothing secret leaves ``directory``.

Usage::

    with TimeStampAuthority.start(tmp_path / "tsa") as tsa:
        os.environ.update(tsa.settings_env())
"""

from __future__ import annotations

import http.server
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from welfare_exchange.devtools.pki import TestCertificateAuthority

LOOPBACK = "127.0.0.1"
OPENSSL = "openssl"
MAX_QUERY_BYTES = 16 * 1024  # a time-stamp query is ~60 bytes
POLICY_OID = "1.3.6.1.4.1.99999.3161.1"  # a test arc: no real TSA policy

_CONFIG = """\
[ tsa ]
default_tsa = loopback_tsa

[ loopback_tsa ]
serial = {serial}
crypto_device = builtin
signer_cert = {cert}
signer_key = {key}
signer_digest = sha256
default_policy = {policy}
other_policies = {policy}
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


@dataclass
class TimeStampAuthority:
    """The running TSA: ``url`` to POST queries to, ``trusted_certificate`` to verify against."""

    directory: Path
    config: Path
    server: http.server.ThreadingHTTPServer
    trusted_certificate: Path
    thread: threading.Thread
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}/tsa"

    @classmethod
    def start(cls, directory: str | Path) -> TimeStampAuthority:
        """Make the TSA's certificate chain in ``directory`` and serve on a free loopback port."""
        directory = Path(directory)
        ca = TestCertificateAuthority.create(directory / "pki", common_name="Welfare Exchange TEST TSA CA")
        signer = ca.issue("Welfare Exchange TEST TSA", "tsa@agency.test", file_stem="tsa", time_stamping=True)
        (directory / "serial").write_text("01\n")
        config = directory / "tsa.cnf"
        config.write_text(
            _CONFIG.format(serial=directory / "serial", cert=signer.certificate_path, key=signer.key_path, policy=POLICY_OID)
        )
        authority: TimeStampAuthority | None = None

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Content-Type") != "application/timestamp-query" or not 0 < length <= MAX_QUERY_BYTES:
                    self.send_error(400, "expected an application/timestamp-query body")
                    return
                answer = authority.reply(self.rfile.read(length))
                if answer is None:
                    self.send_error(500, "the time-stamp could not be made")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:  # quiet: the tests' output stays readable
                pass

        server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        thread = threading.Thread(target=server.serve_forever, name="loopback-tsa", daemon=True)
        authority = cls(directory, config, server, ca.certificate_path, thread)
        thread.start()
        return authority

    def reply(self, query: bytes) -> bytes | None:
        """``openssl ts -reply`` for one query (one at a time: it keeps a serial-number file)."""
        with self.lock, tempfile.TemporaryDirectory(dir=self.directory) as work:
            query_file, reply_file = Path(work) / "query.tsq", Path(work) / "reply.tsr"
            query_file.write_bytes(query)
            done = subprocess.run(
                [OPENSSL, "ts", "-reply", "-config", str(self.config), "-queryfile", str(query_file), "-out", str(reply_file)],
                capture_output=True, check=False, timeout=30,
            )
            return reply_file.read_bytes() if done.returncode == 0 and reply_file.exists() else None

    def settings_env(self) -> dict[str, str]:
        """The project's settings that point at this TSA."""
        return {"WELFARE_EXCHANGE_AUDIT_TSA_URL": self.url, "WELFARE_EXCHANGE_AUDIT_TSA_CERT": str(self.trusted_certificate)}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> TimeStampAuthority:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
