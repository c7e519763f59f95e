"""Referral of families with a child born in *kansarmoede* to their Sociaal Huis (*structurele toeleiding*).

Under a ``referral`` protocol — the *samenwerkingsovereenkomst* (cooperation agreement) with a
Sociaal Huis, which sets the professional-secrecy conditions — Kind en Gezin refers families that
agreed to it, so that they are supported early and as fully as possible. A referral is an offer
of help, not a transfer of a file. The modules, in the order of the flow:

* :mod:`.candidates` — the agency's source: Kind en Gezin's candidates (CSV import), stored minimal;
  :mod:`.generator` makes synthetic ones consistent with the entitlement store;
* :mod:`.selection` — consent recorded and not withdrawn, domiciled in the municipality, in
  kansarmoede (:mod:`.criteria`), not referred before under this agreement;
* :mod:`.listing` — the encrypted referral list, exactly once per family per agreement;
* :mod:`.feedback` — the Sociaal Huis's encrypted feedback, validated and recorded;
* :mod:`.evaluation` — the agency's evaluation report (suppressed counts) and referrals awaiting feedback;
* :mod:`.withdrawal` — consent withdrawn after delivery: the withdrawal notice, once per family;
* :mod:`.access` — what subject access answers about referrals.

These are plain functions of a session; the referral DAG that runs them on the agreement's
channel is wired in the orchestration layer.
"""
