"""The loopback TSA is a real RFC 3161 time-stamping authority: OpenSSL's own verifier accepts
its tokens over the audit chain's head hash, and it refuses what is not a time-stamp query."""

from __future__ import annotations

import hashlib
import subprocess
import urllib.error
import urllib.request

import pytest

from welfare_exchange.audit import authentication


def test_openssl_verifies_a_token_over_the_head_hash(anchoring, tmp_path):
    head = b'{"id":1,"example":"canonical encoding of a head record"}'
    reply = tmp_path / "reply.tsr"
    reply.write_bytes(authentication.request_timestamp(head))
    done = subprocess.run(
        ["openssl", "ts", "-verify", "-digest", hashlib.sha256(head).hexdigest(), "-in", str(reply),
         "-CAfile", str(anchoring.trusted_certificate)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stderr


def test_anything_but_a_time_stamp_query_is_refused(tsa):
    request = urllib.request.Request(tsa.url, data=b"hello", headers={"Content-Type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
