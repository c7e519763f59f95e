"""The entitlement store: children (*rechtgevend kind*), beneficiaries (*begunstigde*) and their
Groeipakket supplements over time — valid periods, and when the agency recorded each version.

* :mod:`~welfare_exchange.municipalities` (reference data at the ground floor, shared with the
  protocol registry and referrals) — the 285 Flemish municipalities and their NIS codes;
* :mod:`~welfare_exchange.entitlements.periods` — the one rule "entitled on a day / over a
  range", and continuous periods;
* :mod:`~welfare_exchange.entitlements.history` — what the agency knew at a moment (bitemporal);
* :mod:`~welfare_exchange.entitlements.store` — the tables, the import file's format, bulk
  replacement, :func:`sample_children` for building synthetic request files;
* :mod:`~welfare_exchange.entitlements.importer` — the streamed CSV import (full extract or delta);
* :mod:`~welfare_exchange.entitlements.generator` — the deterministic synthetic data generator;
* :mod:`~welfare_exchange.entitlements.commands` — ``welfare-exchange entitlements import|generate``.
"""

from welfare_exchange.entitlements.generator import generate
from welfare_exchange.entitlements.importer import import_csv
from welfare_exchange.municipalities import MUNICIPALITIES, Municipality, by_nis
from welfare_exchange.db.models import SUPPLEMENTS
from welfare_exchange.entitlements.store import sample_children

__all__ = ["MUNICIPALITIES", "SUPPLEMENTS", "Municipality", "by_nis", "generate", "import_csv", "sample_children"]
