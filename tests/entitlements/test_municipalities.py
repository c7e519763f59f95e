"""The 285 Flemish municipalities and their NIS codes."""

from __future__ import annotations

from welfare_exchange import municipalities
from welfare_exchange.municipalities import MUNICIPALITIES, by_nis


def test_285_unique_flemish_codes():
    codes = [m.nis_code for m in MUNICIPALITIES]
    assert len(codes) == 285
    assert len(set(codes)) == 285
    assert all(len(c) == 5 and c.isdigit() for c in codes)
    # Flemish provinces only: 1x Antwerpen, 23/24 Vlaams-Brabant, 3x, 4x, 7x (21 is Brussels).
    assert all(c[0] in "1347" or c[:2] in ("23", "24") for c in codes)
    assert {m.province for m in MUNICIPALITIES} == set(municipalities.PROVINCES.values())
    assert len({m.name for m in MUNICIPALITIES}) == 285


def test_2025_mergers():
    assert by_nis("11002").name == "Antwerpen"
    assert by_nis("44021").name == "Gent"
    merged = {
        "23106": "Pajottegem",
        "37021": "Wingene",
        "37022": "Tielt",
        "44086": "Nazareth-De Pinte",
        "44087": "Lochristi",
        "44088": "Merelbeke-Melle",
        "46029": "Lokeren",
        "46030": "Beveren-Kruibeke-Zwijndrecht",
        "71071": "Tessenderlo-Ham",
        "71072": "Hasselt",
        "73110": "Bilzen-Hoeselt",
        "73111": "Tongeren-Borgloon",
    }
    for code, name in merged.items():
        assert by_nis(code).name == name
    # The old codes of merged municipalities are gone.
    for old in ("11007", "11056", "23023", "37015", "44012", "44045", "46003", "71022", "73083"):
        assert not municipalities.is_known(old)


def test_weights_make_antwerpen_about_nine_percent():
    total = sum(m.weight for m in MUNICIPALITIES)
    share = by_nis("11002").weight / total
    # ~180,000 of a 2,000,000-child store.
    assert 0.08 < share < 0.10
    assert all(m.weight > 0 and m.postcode.isdigit() and len(m.postcode) == 4 for m in MUNICIPALITIES)


def test_by_nis_unknown_raises_key_error():
    try:
        by_nis("21004")  # Brussel is not Flemish
    except KeyError:
        pass
    else:
        raise AssertionError("a Brussels NIS code was accepted")
