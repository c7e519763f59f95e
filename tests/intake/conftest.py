"""The intake test corpus, generated once per test session by the project's own scripts.

Nothing here is real: every INSZ is made by ``welfare_exchange.insz.make`` at test time and
every password by ``secrets``. LibreOffice writes the Standard-encrypted xlsx and the RC4 xls
itself (headless, through UNO): it starts once for the whole session because that costs
seconds. When LibreOffice is missing these tests fail — CI installs it (``make system-deps``).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import pathlib
import random
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: The exchange date of every test: fixed, as a run's logical date is.
AS_OF = dt.date(2025, 6, 30)
BIG_ROWS = 200_000


def _load_corpus():
    name = "welfare_exchange_test_corpus"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "corpus" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def corpus():
    """The generator module ``scripts/corpus/make_corpus.py``."""
    return _load_corpus()


@pytest.fixture(scope="session")
def password(corpus):
    return corpus.new_password()


@pytest.fixture(scope="session")
def numbers(corpus):
    """Fifty distinct valid children's numbers, a tenth of them BIS."""
    return corpus.children(50, AS_OF, random.Random(3), bis_share=0.1)


@pytest.fixture(scope="session")
def early_2000s(corpus):
    """Numbers of children born 2000–2009: they start with 0, which number cells lose."""
    rng = random.Random(5)
    out = []
    while len(out) < 20:
        born = dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(3650))
        out.append(corpus.insz.make(born, rng.randrange(1, 999)))
    return sorted(set(out))


@pytest.fixture(scope="session")
def libreoffice_files(corpus, numbers, early_2000s, password, tmp_path_factory):
    """Files written by LibreOffice: Standard xlsx, RC4 xls, and an xls with number cells."""
    out = tmp_path_factory.mktemp("libreoffice")
    rows = corpus.request_rows(numbers)
    number_rows = [["INSZ", "Naam"]] + [[n, f"Kind {i}"] for i, n in enumerate(early_2000s)]
    jobs = [
        {"rows": rows, "out": str(out / "standard.xlsx"), "format": "xlsx", "password": password},
        {"rows": rows, "out": str(out / "rc4.xls"), "format": "xls", "password": password},
        # Column 1 imported as "standard": Calc turns the digits into numbers, dropping the 0.
        {"rows": number_rows, "out": str(out / "numbers.xls"), "format": "xls", "password": password,
         "text_columns": []},
        {"rows": number_rows, "out": str(out / "numbers.xlsx"), "format": "xlsx", "password": password,
         "text_columns": []},
    ]
    corpus.libreoffice_encrypt(jobs)
    return {path.name: path.read_bytes() for path in out.iterdir()}


@pytest.fixture(scope="session")
def big_request(corpus, password):
    """The 200,000-row Agile-encrypted request, generated once, and its numbers."""
    plain, numbers = corpus.big_request(BIG_ROWS, AS_OF)
    return corpus.encrypt_agile(plain, password), numbers


@pytest.fixture(scope="session")
def agile(corpus, password):
    """``agile(sheets)``: an Agile-encrypted xlsx of ``{sheet: rows}``."""

    def build(sheets: dict) -> bytes:
        return corpus.encrypt_agile(corpus.xlsx(sheets), password)

    return build
