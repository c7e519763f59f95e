"""The entitlement store: children (*rechtgevend kind*), beneficiaries (*begunstigde*) and their
Groeipakket supplements over time.

* :mod:`~welfare_exchange.entitlements.municipalities` — the 285 Flemish municipalities and
  their NIS codes;
* :mod:`~welfare_exchange.entitlements.store` — bulk replacement, the CSV import,
  :func:`sample_children` for building synthetic request files;
* :mod:`~welfare_exchange.entitlements.generator` — the deterministic synthetic data generator;
* :mod:`~welfare_exchange.entitlements.commands` — ``welfare-exchange entitlements import|generate``.
"""

from welfare_exchange.entitlements.generator import generate
from welfare_exchange.entitlements.municipalities import MUNICIPALITIES, Municipality, by_nis
from welfare_exchange.entitlements.store import SUPPLEMENTS, import_csv, sample_children

__all__ = ["MUNICIPALITIES", "SUPPLEMENTS", "Municipality", "by_nis", "generate", "import_csv", "sample_children"]
