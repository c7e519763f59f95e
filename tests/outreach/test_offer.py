"""The offer's shape, checked when a method2 protocol is created (library and CLI)."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest

from tests.outreach.builders import OFFER, REFERENCE
from welfare_exchange import audit, cli, insz
from welfare_exchange.db import session_scope
from welfare_exchange.errors import InputError
from welfare_exchange.protocols.offer import validate_offer
from welfare_exchange.protocols import create, get


def _offer(**changes):
    offer = copy.deepcopy(OFFER)
    for key, value in changes.items():
        if value is None:
            offer.pop(key, None)
        else:
            offer[key] = value
    return offer


def test_a_good_offer_is_normalised():
    offer = validate_offer(_offer(title="  Gratis zwemmen  "))
    assert offer["title"] == "Gratis zwemmen"
    assert offer["reference_date"] == REFERENCE.isoformat()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"title": None}, "missing title"),
        ({"titel": "x"}, "unknown key(s) titel"),
        ({"link": "http://voorbeeld.example"}, "https://"),
        ({"what": ""}, "'what' must be a non-empty text"),
        ({"what": "x" * 2001}, "at most 2000"),
        ({"valid_until": "2026-01-01"}, "before 'valid_from'"),
        ({"reference_date": "2027-12-01"}, "after 'valid_until'"),
        ({"valid_from": "1 november"}, "YYYY-MM-DD"),
        ({"contact": {"organisation": "Sociaal Huis"}}, "at least one of email, phone or address"),
        ({"contact": {"email": "a@b.example"}}, "'organisation' is required"),
        ({"contact": {"organisation": "X", "email": "geen-adres"}}, "not an e-mail address"),
    ],
)
def test_bad_offers_are_refused_clearly(changes, fragment):
    with pytest.raises(InputError) as err:
        validate_offer(_offer(**changes))
    assert fragment in str(err.value)


def test_an_insz_in_the_offer_is_refused_without_echoing_it():
    number = insz.make(dt.date(2015, 6, 1), 12)
    with pytest.raises(InputError) as err:
        validate_offer(_offer(how_to_apply=f"Vermeld het nummer {number}"))
    assert number not in str(err.value) and "INSZ" in str(err.value)


def test_method2_protocol_takes_its_reference_date_from_the_offer(sqlite_db):
    with session_scope() as session:
        protocol = create(session, nis_code="99801", municipality="Testgemeente", kind="method2", channel="sftp",
                          key_connection="key_99801", offer=copy.deepcopy(OFFER), actor=audit.Actor.current_user())
        assert protocol.reference_date == REFERENCE
        with pytest.raises(InputError, match="needs an offer"):
            create(session, nis_code="99802", municipality="Testgemeente", kind="method2", channel="sftp",
                   key_connection="key_99802", actor=audit.Actor.current_user())


def test_cli_protocol_create_with_offer_file(sqlite_db, tmp_path, capsys):
    path = tmp_path / "offer.json"
    path.write_text(json.dumps(OFFER, ensure_ascii=False))
    args = ["protocol", "create", "--nis", "99803", "--municipality", "Testgemeente", "--kind", "method2",
            "--channel", "sftp", "--key-connection", "key_99803", "--offer-file", str(path)]
    assert cli.main(args) == 0
    protocol_id = int(capsys.readouterr().out.strip())
    with session_scope() as session:
        assert get(session, protocol_id).offer["title"] == OFFER["title"]
    path.write_text(json.dumps(_offer(link="ftp://x")))
    assert cli.main(args) == 2
    assert "https://" in capsys.readouterr().err
