"""The 285 Flemish municipalities (since the mergers of 1 January 2025) with their NIS codes.

A local authority (*lokaal bestuur*) is identified by its 5-digit NIS (REFNIS) code. The list is
read from ``municipalities.csv`` beside this module: ``nis_code, name, province,
inhabitants_2020, postcode``.

How the list was made (and where it approximates):

* **Source.** The 300 Flemish municipalities of 2019–2024 with their REFNIS codes and
  residents on 1 January 2020 (Statbel population figures as republished in the open dataset
  ``vandenbroucke/belgian_municipalities``, ``data/2020``; the total, 6,629,143, is the
  Flemish Region's population on that date).
* **The 2025 mergers** were applied on top, after Statbel's REFNIS 2025 code list: 13 merged
  municipalities replace 27 old ones (300 − 27 + 13 = 285). Antwerpen absorbed Borsbeek and
  kept 11002; the others got new codes — Pajottegem 23106 (Galmaarden, Gooik, Herne),
  Wingene 37021 (with Ruiselede), Tielt 37022 (with Meulebeke), Nazareth-De Pinte 44086,
  Lochristi 44087 (with Wachtebeke), Merelbeke-Melle 44088, Lokeren 46029 (with Moerbeke),
  Beveren-Kruibeke-Zwijndrecht 46030, Tessenderlo-Ham 71071, Hasselt 71072 (with Kortessem),
  Bilzen-Hoeselt 73110, Tongeren-Borgloon 73111. A merged municipality's residents are the
  sum of its parts in 2020.
* **Approximations.** Residents are 2020 figures, not 2025 ones; ``postcode`` is one
  representative postcode of the municipality (its main one), used only to make synthetic
  postal addresses look plausible. Names are the Dutch names (Statbel's NL labels without the
  province qualifier, e.g. ``Hove``, ``Kapellen``).

**Weights.** The data generator spreads children over municipalities by
:attr:`Municipality.weight`: residents times a *youth factor*, because the share of residents
aged 0–25 is not the same everywhere. Only Antwerpen is adjusted (×1.12: a younger city than
the Flemish average); with it, Antwerpen gets ~9 % of a store, i.e. ~180,000 children in a
2,000,000-child store, which is the order of magnitude the mission gives (about 180,000
residents aged 0–25). Everywhere else children follow residents; this is a rough model, good
enough for synthetic data and for sizing request files.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

#: Provinces by the first digit(s) of the NIS code (Vlaams-Brabant is 23/24; 21 is Brussels).
PROVINCES = {
    "1": "Antwerpen",
    "2": "Vlaams-Brabant",
    "3": "West-Vlaanderen",
    "4": "Oost-Vlaanderen",
    "7": "Limburg",
}

#: Residents aged 0–25 relative to the Flemish average (see the module docstring).
YOUTH_FACTOR = {"11002": 1.12}


@dataclass(frozen=True)
class Municipality:
    """A Flemish municipality (*gemeente/stad*) as the exchange knows it."""

    nis_code: str
    name: str
    province: str
    inhabitants: int = 0
    postcode: str = ""

    @property
    def weight(self) -> float:
        """Relative number of children aged 0–25 domiciled here (residents × youth factor)."""
        return self.inhabitants * YOUTH_FACTOR.get(self.nis_code, 1.0)


def _load() -> list[Municipality]:
    text = resources.files(__package__).joinpath("municipalities.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    return [
        Municipality(
            nis_code=row["nis_code"],
            name=row["name"],
            province=row["province"],
            inhabitants=int(row["inhabitants_2020"]),
            postcode=row["postcode"],
        )
        for row in rows
    ]


#: The 285 municipalities, sorted by NIS code.
MUNICIPALITIES: list[Municipality] = _load()

_BY_NIS = {m.nis_code: m for m in MUNICIPALITIES}


def by_nis(code: str) -> Municipality:
    """The municipality with NIS code ``code``; ``KeyError`` when Flanders has none."""
    return _BY_NIS[str(code).strip()]


def is_known(code: str) -> bool:
    """True when ``code`` is the NIS code of one of the 285 Flemish municipalities."""
    return str(code).strip() in _BY_NIS


@functools.cache
def weights() -> tuple[list[str], list[float]]:
    """NIS codes and cumulative weights, ready for ``random.choices(..., cum_weights=...)``."""
    codes, cumulative, total = [], [], 0.0
    for m in MUNICIPALITIES:
        total += m.weight
        codes.append(m.nis_code)
        cumulative.append(total)
    return codes, cumulative
