"""validate-request through a real subprocess, the report formats, and the privacy rules."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from tests.intake.conftest import AS_OF, ROOT
from welfare_exchange import insz
from welfare_exchange.intake import REPORT_HEADER, IntakeError, ValidationReport, read_request
from welfare_exchange.intake.failures import MESSAGES
from welfare_exchange.intake.validation import Validator, compact_ranges
from welfare_exchange.untrusted import shown


def _cli(*args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "include"))
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "welfare_exchange.cli", "validate-request", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )


@pytest.fixture(scope="module")
def request_file(tmp_path_factory, agile, numbers, password):
    folder = tmp_path_factory.mktemp("cli")
    rows = [["INSZ", "Naam"]] + [[n, "Kind"] for n in numbers[:10]] + [["123", "x"], [numbers[0], "dubbel"]]
    path = folder / "aanvraag.xlsx"
    path.write_bytes(agile({"Kinderen": rows}))
    secret = folder / "password.txt"
    secret.write_text(password + "\n", encoding="utf-8")  # as an editor saves it
    secret.chmod(0o600)
    return path, secret


def test_cli_json_object(request_file):
    path, secret = request_file
    done = _cli(path, "--password-file", secret, "--as-of", AS_OF.isoformat(), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "rows": 12, "valid": 10, "invalid": {"not_11_digits": 1}, "duplicates": 1,
        "encryption": "agile", "sheet": f"sheet 1 ({shown('Kinderen')})", "column": f"column A ({shown('INSZ')})",
    }
    assert done.stderr == ""


def test_cli_human_summary_and_password_env(request_file, password):
    path, _ = request_file
    done = _cli(path, "--password-env", "WE_TEST_PW", "--as-of", AS_OF.isoformat(), env_extra={"WE_TEST_PW": password})
    assert done.returncode == 0, done.stderr
    assert "valid: 10" in done.stdout and "(rows 13)" in done.stdout and "(rows 12)" in done.stdout


def test_cli_refusals_exit_2_with_one_line(request_file, tmp_path, corpus, numbers):
    path, _ = request_file
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not-the-password", encoding="utf-8")
    plain = tmp_path / "plain.xlsx"
    plain.write_bytes(corpus.xlsx({"Blad1": [["INSZ"]] + [[n] for n in numbers[:3]]}))
    text = tmp_path / "list.csv"
    text.write_text("INSZ\n", encoding="utf-8")
    cases = [
        ((path, "--password-file", wrong), MESSAGES["wrong_password"]),
        ((plain, "--password-file", wrong), MESSAGES["not_encrypted"]),
        ((text, "--password-file", wrong), MESSAGES["not_excel"]),
        ((tmp_path / "missing.xlsx", "--password-file", wrong), "cannot read the request file"),
        ((path,), MESSAGES["no_password"]),
    ]
    for args, expected in cases:
        done = _cli(*args, "--json")
        assert done.returncode == 2
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0]


def test_cli_allow_unencrypted(tmp_path, corpus, numbers):
    plain = tmp_path / "plain.xlsx"
    plain.write_bytes(corpus.xlsx({"Blad1": [["INSZ"]] + [[n] for n in numbers[:3]]}))
    done = _cli(plain, "--allow-unencrypted", "--as-of", AS_OF.isoformat(), "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["encryption"] == "none"


def test_cli_never_takes_a_password_argument(request_file, password):
    path, _ = request_file
    done = _cli(path, "--password", password)
    assert done.returncode == 2  # argparse refuses the unknown option


def test_no_insz_anywhere_in_messages_reports_or_cli_output(agile, password, numbers, request_file):
    # Every error message: fixed text, no number at all.
    for reason, message in MESSAGES.items():
        assert not insz.find_insz_shaped(message)
        assert not any(ch.isdigit() for ch in message), reason
    # Errors raised on real files carry only that text.
    rows = [["INSZ"]] + [[n] for n in numbers[:5]]
    with pytest.raises(IntakeError) as caught:
        read_request(agile({"Blad1": rows}), "wrong", as_of=AS_OF)
    assert not insz.find_insz_shaped(str(caught.value)) and not insz.find_insz_shaped(repr(caught.value))
    # Reports of a file full of numbers, valid and invalid, and the CLI's output.
    broken = [n[:9] + f"{(int(n[9:]) % 97) + 1:02d}" for n in numbers[5:10]]
    rows += [[n] for n in broken] + [[numbers[0]]]
    result = read_request(agile({"Blad1": rows}), password, as_of=AS_OF)
    texts = [json.dumps(result.report.summary()), repr(result.report), repr(result), str(result.report.to_rows())]
    path, secret = request_file
    for flag in ("--json", None):
        done = _cli(path, "--password-file", secret, "--as-of", AS_OF.isoformat(), *([flag] if flag else []))
        texts += [done.stdout, done.stderr]
    for text in texts:
        assert not insz.find_insz_shaped(text)


def test_sheet_and_column_names_appear_only_as_handles(agile, password, numbers):
    """A municipality names its sheet after a child's number and heads the column with a name."""
    sheet, header = numbers[7], "INSZ Janssens Marie"
    for rows in ([[header]] + [[n] for n in numbers[:5]], [["Janssens Marie"]] + [[n] for n in numbers[:5]]):
        report = read_request(agile({"Uitleg": [["lees mij"]], sheet: rows}), password, as_of=AS_OF).report
        text = json.dumps(report.summary())
        assert report.sheet == f"sheet 2 ({shown(sheet)})" and report.column == f"column A ({shown(rows[0][0])})"
        assert not insz.find_insz_shaped(text) and "Janssens" not in text and "Marie" not in text


def test_to_rows_for_the_validatierapport_sheet():
    report = ValidationReport(
        rows=9, valid=3, invalid={"checksum": [4, 7, 8, 9, 12], "empty": [2]}, duplicates=[20],
    )
    rows = report.to_rows()
    assert len(REPORT_HEADER) == 3 and all(len(row) == 3 for row in rows)
    assert rows[0] == ("INSZ-cel leeg / INSZ cell empty (empty)", 1, "2")
    assert rows[1] == ("controlecijfers kloppen niet / check digits wrong (checksum)", 5, "4, 7-9, 12")
    assert rows[2][0].endswith("(duplicate)") and rows[2][1:] == (1, "20")
    assert report.summary() == {
        "rows": 9, "valid": 3, "invalid": {"checksum": 5, "empty": 1}, "duplicates": 1,
        "encryption": "none", "sheet": None, "column": None,
    }


def test_compact_ranges_cut_long_lists():
    text = compact_ranges(list(range(1, 100_000, 2)), limit=100)
    assert len(text) < 130 and text.endswith(")") and "…" in text


def test_fast_path_agrees_with_stdnum():
    """The fast arithmetic must decide exactly as python-stdnum on every kind of number."""
    rng = random.Random(11)
    validator = Validator(AS_OF)
    candidates = []
    for _ in range(30_000):  # random 11 digits: mostly checksum failures
        candidates.append(f"{rng.randrange(10**11):011d}")
    for _ in range(30_000):  # right check digits, any date fields (month 00-99, day 00-99)
        first_nine = f"{rng.randrange(10**9):09d}"
        candidates.append(first_nine + insz.check_digits(first_nine, rng.random() < 0.5))
    for _ in range(20_000):  # real synthetic numbers, NN and BIS, 1900-2025
        from datetime import date, timedelta

        born = date(1900, 1, 1) + timedelta(days=rng.randrange(45_000))
        candidates.append(insz.make(born, rng.randrange(1, 999), bis=rng.random() < 0.3, sex_known=rng.random() < 0.5))
    disagreements = sum(1 for n in candidates if validator.classify(n) != validator.stdnum_reference(n))
    assert disagreements == 0
    outcomes = {validator.classify(n) for n in candidates}
    assert {None, "checksum", "outside_age_window", "invalid_birth_date"} <= outcomes
