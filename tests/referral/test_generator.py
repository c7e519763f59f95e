"""Synthetic candidates agree with the entitlement store they are generated from, and import cleanly."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random

import sqlalchemy as sa

from tests.referral.builders import TODAY, USER
from welfare_exchange import insz
from welfare_exchange.cli import main
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Beneficiary, Child, Entitlement, ReferralCandidate
from welfare_exchange.referral import candidates, generator
from welfare_exchange.referral.criteria import in_kansarmoede


def _store(children: int = 2000, seed: int = 5) -> dict[str, tuple]:
    """Young children in two municipalities; 40 % with a sociale toeslag, some with another supplement.

    Returns child INSZ → (birth date, NIS, beneficiary INSZ or None, sociale toeslag?, beneficiary e-mail).
    """
    rng = random.Random(seed)
    truth, kids, parents, rights, serials = {}, [], [], [], {}
    for i in range(children):
        born = dt.date(2024, 11, 1) + dt.timedelta(days=rng.randrange(700))
        serials[born] = serials.get(born, 0) + 1
        number = insz.make(born, serials[born])
        nis = "44021" if i % 3 else "11002"
        kids.append({"id": i + 1, "insz": number, "birth_date": born, "nis_code": nis})
        roll = rng.random()
        if roll < 0.7:
            parent = insz.make(dt.date(1990, 1, 1) + dt.timedelta(days=i // 900), 1 + i % 900)
            email = f"ouder{i}@example.org" if i % 2 else None
            parents.append({"id": i + 1, "insz": parent, "email": email, "address_line": None if email else "Brem 1",
                            "postcode": None if email else "9000", "city": None if email else "Gent"})
            sociale = roll < 0.4
            rights.append({"child_id": i + 1, "beneficiary_id": i + 1,
                           "supplement": "sociale_toeslag" if sociale else "zorgtoeslag", "start_date": born, "end_date": None})
            truth[number] = (born, nis, parent, sociale, email)
        else:
            truth[number] = (born, nis, None, False, None)
    with session_scope() as session:
        session.execute(sa.insert(Child), kids)
        session.execute(sa.insert(Beneficiary), parents)
        session.execute(sa.insert(Entitlement), rights)
    return truth


def test_candidates_follow_the_store_and_import_cleanly(project_db):
    truth = _store()
    with session_scope() as session:
        data, stats = generator.generate_candidates(session, seed=11)
        again, _ = generator.generate_candidates(session, seed=11)
    assert data == again  # same store, same seed: same file
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert stats["candidates"] == len(rows) and stats["children"] == 2000
    poor = [r for r in rows if in_kansarmoede(c for c in ("income", "education", "stimulation", "work", "housing", "health")
                                              if r[f"criterion_{c}"] == "1")]
    assert len(poor) == stats["kansarmoede"]
    with_sociale = sum(truth[r["child_insz"]][3] for r in poor)
    assert 0.8 * len(poor) < with_sociale < len(poor)  # most, not all, have a sociale toeslag
    assert 0.06 * 2000 < len(poor) < 0.18 * 2000
    for r in rows:
        born, nis, parent, _, email = truth[r["child_insz"]]
        assert (r["child_birth_date"], r["child_nis"]) == (born.isoformat(), nis)
        assert r["parent_insz"] == (parent or "")
        if email:
            assert r["parent_email"] == email
        assert r["parent_name"] and (r["parent_email"] or r["parent_address_line"])
        assert r["consent_given_on"] <= "2026-10-31" or not r["consent_given_on"]
    with session_scope() as session:
        summary = candidates.import_candidates(session, data, today=TODAY, actor=USER)
        assert summary.new == len(rows) and summary.kansarmoede == len(poor)
        assert session.scalar(sa.select(sa.func.count()).select_from(ReferralCandidate)) == len(rows)


def test_cli_generate_writes_the_file_and_prints_counts_only(sqlite_db, tmp_path, capsys):
    _store(300)
    out = tmp_path / "kandidaten.csv"
    assert main(["referral", "generate", "--out", str(out), "--seed", "2", "--nis", "44021"]) == 0
    printed = capsys.readouterr().out
    assert "candidates" in printed and not insz.find_insz_shaped(printed)
    assert {r["child_nis"] for r in csv.DictReader(io.StringIO(out.read_text()))} == {"44021"}
    assert main(["referral", "import", str(out), "--today", TODAY.isoformat()]) == 0
