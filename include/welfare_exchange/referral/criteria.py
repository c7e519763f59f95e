"""The six Kind en Gezin criteria of *kansarmoede* (a child born into poverty).

Kind en Gezin nurses and family workers score each family on six criteria; a family that scores
weak on at least three of them lives in *kansarmoede* — about 10 % of births in Flanders. A
referral carries which criteria were flagged, never the scores' notes behind them.
"""

from __future__ import annotations

from collections.abc import Iterable

#: criterion → its Dutch label, in Kind en Gezin's order.
CRITERIA = {
    "income": "maandinkomen",
    "education": "opleiding van de ouders",
    "stimulation": "stimulatie van de kinderen",
    "work": "arbeidssituatie van de ouders",
    "housing": "huisvesting",
    "health": "gezondheid",
}
#: A family flagged on this many criteria or more lives in kansarmoede.
KANSARMOEDE_THRESHOLD = 3


def ordered(criteria: Iterable[str]) -> list[str]:
    """The criteria in Kind en Gezin's order (how they are stored and shown)."""
    flagged = set(criteria)
    return [name for name in CRITERIA if name in flagged]


def in_kansarmoede(criteria: Iterable[str]) -> bool:
    return len(set(criteria) & set(CRITERIA)) >= KANSARMOEDE_THRESHOLD


def labels(criteria: Iterable[str]) -> str:
    """The flagged criteria as the Sociaal Huis reads them, e.g. ``maandinkomen, huisvesting``."""
    return ", ".join(CRITERIA[name] for name in ordered(criteria))
