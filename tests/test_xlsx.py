"""The streaming xlsx writer: what calamine, openpyxl and LibreOffice read back from it."""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import subprocess
import zipfile

import openpyxl
import pytest
import python_calamine

from welfare_exchange import xlsx

CREATED = dt.datetime(2026, 11, 2)
COLUMNS = [
    xlsx.Column("Code", xlsx.TEXT, 22),
    xlsx.Column("Naam & <soort>", xlsx.LABEL, 18),
    xlsx.Column("Aantal", xlsx.NUMBER),
    xlsx.Column("Begin", xlsx.DATE, 18),
    xlsx.Column("Einde", xlsx.DATE, 18),
]
# Synthetic codes with a leading zero (no INSZ: the writer does not care what the text is).
ROWS = [
    ("0123", "a & b < c", 3, dt.date(2020, 3, 1), None),
    ("0999", "  spaties  ", 2.5, dt.date(2024, 2, 29), dt.date(2026, 1, 31)),
    ("1000", "Beëindigd\x01", None, dt.date(1999, 12, 31), dt.date(2000, 1, 1)),
]


def _book() -> bytes:
    book = xlsx.Workbook(xlsx.Properties(created=CREATED, title="Titel", author="Opgroeien", comments="Vertrouwelijk"))
    assert book.add_sheet("Resultaat", COLUMNS, ROWS) == 3
    book.add_sheet("Leeg", [xlsx.Column("Reden"), xlsx.Column("Aantal", xlsx.NUMBER)], [], freeze_header=False)
    book.add_info_sheet("Info", [("Protocol", "12"), ("Gebruik", "Enkel voor het doel in het protocol.")])
    return book.to_bytes()


def test_calamine_reads_text_numbers_and_dates():
    book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(_book()))
    assert book.sheet_names == ["Resultaat", "Leeg", "Info"]
    rows = book.get_sheet_by_name("Resultaat").to_python()
    assert rows[0] == ["Code", "Naam & <soort>", "Aantal", "Begin", "Einde"]
    assert rows[1] == ["0123", "a & b < c", 3.0, dt.date(2020, 3, 1), ""]
    assert rows[2] == ["0999", "  spaties  ", 2.5, dt.date(2024, 2, 29), dt.date(2026, 1, 31)]
    assert rows[3] == ["1000", "Beëindigd", "", dt.date(1999, 12, 31), dt.date(2000, 1, 1)]
    assert book.get_sheet_by_name("Leeg").to_python() == [["Reden", "Aantal"]]
    assert book.get_sheet_by_name("Info").to_python() == [["Protocol", "12"], ["Gebruik", "Enkel voor het doel in het protocol."]]


def test_openpyxl_sees_formats_layout_and_properties():
    book = openpyxl.load_workbook(io.BytesIO(_book()))
    sheet = book["Resultaat"]
    assert sheet.freeze_panes == "A2"
    assert sheet["A1"].font.b and not sheet["A2"].font.b
    assert sheet["A2"].number_format == "@" and sheet["A2"].value == "0123"
    assert sheet["D2"].is_date and sheet["D2"].value == dt.datetime(2020, 3, 1)
    assert sheet.column_dimensions["A"].width == 22
    assert sheet.max_row == 4 and sheet.max_column == 5
    assert book["Info"]["A1"].font.b
    props = book.properties
    assert (props.title, props.creator, props.description, props.created) == ("Titel", "Opgroeien", "Vertrouwelijk", CREATED)


def test_same_input_same_bytes_and_no_wall_clock():
    data = _book()
    assert data == _book()
    for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
        assert info.date_time == (2026, 11, 2, 0, 0, 0)


@pytest.mark.libreoffice
def test_libreoffice_opens_it(tmp_path):
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        pytest.fail("LibreOffice is not installed: `make install` installs libreoffice-calc-nogui")
    (tmp_path / "book.xlsx").write_bytes(_book())
    subprocess.run(
        [soffice, f"-env:UserInstallation=file://{tmp_path}/profile", "--headless", "--convert-to", "csv:Text - txt - csv (StarCalc):44,34,76",
         "--outdir", str(tmp_path), str(tmp_path / "book.xlsx")],
        check=True, capture_output=True, timeout=180,
    )
    rows = list(csv.reader((tmp_path / "book.csv").read_text(encoding="utf-8").splitlines()))
    assert rows[0] == ["Code", "Naam & <soort>", "Aantal", "Begin", "Einde"]
    assert rows[1][:3] == ["0123", "a & b < c", "3"] and rows[1][3] == "2020-03-01"
    assert rows[3][0] == "1000" and rows[3][4] == "2000-01-01"


def test_refuses_what_excel_would_reject():
    book = xlsx.Workbook(xlsx.Properties(created=CREATED))
    with pytest.raises(ValueError, match="sheet name"):
        book.add_sheet("a/b", COLUMNS, [])
    with pytest.raises(ValueError, match="at least one sheet"):
        book.to_bytes()
