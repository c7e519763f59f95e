"""The audit's subject keys for a 200,000-row exchange: ``subject_keys`` beside ``hmac.digest``.

``subject_keys`` keys one ``hmac`` object and copies it per number; the baseline re-keys with
``hmac.digest`` for every number. Both return the same sorted, distinct keys. Reported: the
ratio of the best of several runs (target: faster than the baseline, ratio < 1). The numbers are
11-digit counters, not INSZ numbers; the key is the checkout's (``var/secrets.env``).
"""

from __future__ import annotations

import hmac
import timeit

NUMBERS = 200_000
REPEAT = 7


def main() -> dict:
    from welfare_exchange.audit.trail import _hmac_key, subject_keys

    key = _hmac_key()
    numbers = [f"{n:011d}" for n in range(10**10, 10**10 + NUMBERS)]

    def baseline() -> list[bytes]:
        return sorted({hmac.digest(key, n.encode("ascii"), "sha256") for n in numbers})

    assert subject_keys(numbers) == baseline()
    ours = min(timeit.repeat(lambda: subject_keys(numbers), number=1, repeat=REPEAT))
    naive = min(timeit.repeat(baseline, number=1, repeat=REPEAT))
    ratio = ours / naive
    print(f"  subject_keys of {NUMBERS:,} numbers: {ours * 1000:.0f} ms vs hmac.digest per number {naive * 1000:.0f} ms "
          f"→ ratio {ratio:.2f} (target < 1)")
    return {"numbers": NUMBERS, "subject_keys_s": ours, "hmac_digest_s": naive, "ratio": ratio}
