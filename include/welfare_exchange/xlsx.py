"""A small streaming xlsx writer for the files the agency sends: results and feeds.

Why not xlsxwriter (which the request corpus and the tests still use)? A result holds up to
~200,000 rows, and xlsxwriter spends ~5 µs of Python per cell on bookkeeping these files do not
need (shared strings, per-cell format lookup, escaping every attribute): 1.3 s for a 55,000-row
result, most of the Method 1 build step. The files we send need very little of SpreadsheetML:
text, numbers and dates, a bold header row, a text and a date format, column widths, a frozen
header, document properties. This module writes exactly that, one row as one string, in about a
tenth of the time (``make bench``), and deterministically: the same rows and properties give the
same bytes (zip entries carry the document's own date, never the wall clock).

The package layout follows ECMA-376 (the parts and relationships xlsxwriter and Excel write);
``tests/test_xlsx.py`` opens the output with calamine, openpyxl and LibreOffice.

Usage::

    book = Workbook(Properties(title=..., created=dt.datetime(2026, 11, 2)))
    book.add_sheet("Resultaat", [Column("INSZ kind", TEXT, 22), Column("Begin", DATE, 18)], rows)
    book.add_info_sheet("Info", [("Protocol", "12"), ...])
    data = book.to_bytes()
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

#: The MIME type of the files this module writes (an e-mail attachment says it).
CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

#: Cell kinds. TEXT is stored as text with the text format "@" (so Excel keeps the leading zero of
#: an INSZ and does not turn it into a number); LABEL is plain text; NUMBER an int or float;
#: DATE a :class:`datetime.date` shown as yyyy-mm-dd.
TEXT, LABEL, NUMBER, DATE = "text", "label", "number", "date"

# Style ids in styles.xml (cellXfs order below).
_PLAIN, _BOLD, _TEXT, _DATE = 0, 1, 2, 3
_EXCEL_EPOCH = dt.date(1899, 12, 30).toordinal()
# Characters XML 1.0 does not allow, even escaped.
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

_NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_NS_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


@dataclass(frozen=True)
class Column:
    """One column: its heading, the kind of its cells, its width in characters."""

    heading: str
    kind: str = LABEL
    width: float | None = None


@dataclass(frozen=True)
class Properties:
    """Document properties (File > Info in Excel); ``created`` fixes the file's date."""

    created: dt.datetime
    title: str = ""
    subject: str = ""
    author: str = ""
    company: str = ""
    comments: str = ""


def _text(value: str) -> str:
    value = escape(_ILLEGAL.sub("", value))
    if value[:1].isspace() or value[-1:].isspace():
        return f'<is><t xml:space="preserve">{value}</t></is>'
    return f"<is><t>{value}</t></is>"


def _column_letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _cell_writer(kind: str, letter: str) -> Callable[[object, int], str]:
    """A function (value, row number) -> the cell's XML; empty for ``None``."""
    if kind in (TEXT, LABEL):
        style = f' s="{_TEXT}"' if kind == TEXT else ""

        def cell(value, r, letter=letter, style=style):
            if value is None or value == "":
                return ""
            value = str(value)
            if value.isalnum() and value.isascii():  # INSZ numbers and plain words: nothing to escape
                return f'<c r="{letter}{r}"{style} t="inlineStr"><is><t>{value}</t></is></c>'
            return f'<c r="{letter}{r}"{style} t="inlineStr">{_text(value)}</c>'

        return cell
    if kind == NUMBER:
        return lambda value, r: "" if value is None else f'<c r="{letter}{r}"><v>{value!r}</v></c>'
    if kind == DATE:
        return lambda value, r: "" if value is None else f'<c r="{letter}{r}" s="{_DATE}"><v>{value.toordinal() - _EXCEL_EPOCH}</v></c>'
    raise ValueError(f"unknown cell kind {kind!r}")


class _Sheet:
    def __init__(self, name: str, xml: bytes) -> None:
        self.name, self.xml = name, xml


class Workbook:
    """Sheets are rendered as they are added (each one string); :meth:`to_bytes` packs the zip."""

    def __init__(self, properties: Properties) -> None:
        self.properties = properties
        self._sheets: list[_Sheet] = []

    def add_sheet(
        self, name: str, columns: Sequence[Column], rows: Iterable[Sequence], *, freeze_header: bool = True
    ) -> int:
        """A sheet with a bold header row and one row per item of ``rows``; returns the row count.

        Each row holds one value per column (``None`` leaves the cell empty).
        """
        if not 0 < len(name) <= 31 or any(c in name for c in "[]:*?/\\"):
            raise ValueError(f"invalid sheet name {name!r}")
        letters = [_column_letters(i) for i in range(len(columns))]
        header = "".join(
            f'<c r="{letter}1" s="{_BOLD}" t="inlineStr">{_text(column.heading)}</c>'
            for letter, column in zip(letters, columns)
        )
        parts = [f'<row r="1">{header}</row>']
        writers = [_cell_writer(column.kind, letter) for column, letter in zip(columns, letters)]
        # The hot loop of a build (up to ~200,000 rows): a list, not a generator, for join.
        for r, row in enumerate(rows, start=2):
            parts.append(f'<row r="{r}">{"".join([w(v, r) for w, v in zip(writers, row)])}</row>')
        count = len(parts) - 1
        last = f"{letters[-1]}{count + 1}" if columns else "A1"
        cols = "".join(
            f'<col min="{i}" max="{i}" width="{column.width}" customWidth="1"/>'
            for i, column in enumerate(columns, start=1)
            if column.width
        )
        selected = ' tabSelected="1"' if not self._sheets else ""
        pane = (
            '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/><selection pane="bottomLeft"/>'
            if freeze_header
            else ""
        )
        xml = (
            f'{_HEAD}<worksheet xmlns="{_NS_MAIN}" xmlns:r="{_NS_REL}"><dimension ref="A1:{last}"/>'
            f'<sheetViews><sheetView{selected} workbookViewId="0">{pane}</sheetView></sheetViews>'
            f'<sheetFormatPr defaultRowHeight="15"/>{f"<cols>{cols}</cols>" if cols else ""}'
            f'<sheetData>{"".join(parts)}</sheetData>'
            '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/></worksheet>'
        )
        self._sheets.append(_Sheet(name, xml.encode("utf-8")))
        return count

    def add_info_sheet(self, name: str, lines: Sequence[tuple[str, str]]) -> None:
        """Label / value lines, labels bold, no header row (the ``Info`` sheet of every file)."""
        rows = "".join(
            f'<row r="{r}"><c r="A{r}" s="{_BOLD}" t="inlineStr">{_text(label)}</c>'
            f'<c r="B{r}" t="inlineStr">{_text(value)}</c></row>'
            for r, (label, value) in enumerate(lines, start=1)
        )
        xml = (
            f'{_HEAD}<worksheet xmlns="{_NS_MAIN}" xmlns:r="{_NS_REL}"><dimension ref="A1:B{max(len(lines), 1)}"/>'
            '<sheetViews><sheetView workbookViewId="0"/></sheetViews><sheetFormatPr defaultRowHeight="15"/>'
            '<cols><col min="1" max="1" width="28" customWidth="1"/><col min="2" max="2" width="90" customWidth="1"/></cols>'
            f"<sheetData>{rows}</sheetData>"
            '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/></worksheet>'
        )
        self._sheets.append(_Sheet(name, xml.encode("utf-8")))

    # ------------------------------------------------------------------------ the package

    def _parts(self) -> list[tuple[str, bytes]]:
        n = len(self._sheets)
        sheets = "".join(
            f'<Override PartName="/xl/worksheets/sheet{i}.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            for i in range(1, n + 1)
        )
        content_types = (
            f'{_HEAD}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/docProps/app.xml" ContentType="application/vnd.openxmlformats-officedocument.extended-properties+xml"/>'
            '<Override PartName="/docProps/core.xml" ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
            '<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            f"{sheets}</Types>"
        )
        root_rels = (
            f'{_HEAD}<Relationships xmlns="{_NS_PKG_REL}">'
            f'<Relationship Id="rId1" Type="{_NS_REL}/officeDocument" Target="xl/workbook.xml"/>'
            f'<Relationship Id="rId2" Type="{_NS_PKG_REL}/metadata/core-properties" Target="docProps/core.xml"/>'
            f'<Relationship Id="rId3" Type="{_NS_REL}/extended-properties" Target="docProps/app.xml"/>'
            "</Relationships>"
        )
        workbook = (
            f'{_HEAD}<workbook xmlns="{_NS_MAIN}" xmlns:r="{_NS_REL}"><bookViews><workbookView/></bookViews><sheets>'
            + "".join(
                f'<sheet name="{escape(s.name, {chr(34): "&quot;"})}" sheetId="{i}" r:id="rId{i}"/>'
                for i, s in enumerate(self._sheets, start=1)
            )
            + "</sheets></workbook>"
        )
        workbook_rels = (
            f'{_HEAD}<Relationships xmlns="{_NS_PKG_REL}">'
            + "".join(
                f'<Relationship Id="rId{i}" Type="{_NS_REL}/worksheet" Target="worksheets/sheet{i}.xml"/>'
                for i in range(1, n + 1)
            )
            + f'<Relationship Id="rId{n + 1}" Type="{_NS_REL}/styles" Target="styles.xml"/></Relationships>'
        )
        styles = (
            f'{_HEAD}<styleSheet xmlns="{_NS_MAIN}">'
            '<numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy\\-mm\\-dd"/></numFmts>'
            '<fonts count="2"><font><sz val="11"/><color theme="1"/><name val="Calibri"/><family val="2"/><scheme val="minor"/></font>'
            '<font><b/><sz val="11"/><color theme="1"/><name val="Calibri"/><family val="2"/><scheme val="minor"/></font></fonts>'
            '<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>'
            '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
            '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
            '<cellXfs count="4"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
            '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/>'
            '<xf numFmtId="49" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
            '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>'
            '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
            '<dxfs count="0"/><tableStyles count="0" defaultTableStyle="TableStyleMedium9" defaultPivotStyle="PivotStyleLight16"/>'
            "</styleSheet>"
        )
        p = self.properties
        when = p.created.strftime("%Y-%m-%dT%H:%M:%SZ")
        core = (
            f'{_HEAD}<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
            'xmlns:dcmitype="http://purl.org/dc/dcmitype/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f"<dc:title>{escape(p.title)}</dc:title><dc:subject>{escape(p.subject)}</dc:subject>"
            f"<dc:creator>{escape(p.author)}</dc:creator><dc:description>{escape(p.comments)}</dc:description>"
            f"<cp:lastModifiedBy>{escape(p.author)}</cp:lastModifiedBy>"
            f'<dcterms:created xsi:type="dcterms:W3CDTF">{when}</dcterms:created>'
            f'<dcterms:modified xsi:type="dcterms:W3CDTF">{when}</dcterms:modified></cp:coreProperties>'
        )
        titles = "".join(f"<vt:lpstr>{escape(s.name)}</vt:lpstr>" for s in self._sheets)
        app = (
            f'{_HEAD}<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties" '
            'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">'
            "<Application>Microsoft Excel</Application><DocSecurity>0</DocSecurity><ScaleCrop>false</ScaleCrop>"
            '<HeadingPairs><vt:vector size="2" baseType="variant"><vt:variant><vt:lpstr>Worksheets</vt:lpstr></vt:variant>'
            f'<vt:variant><vt:i4>{n}</vt:i4></vt:variant></vt:vector></HeadingPairs>'
            f'<TitlesOfParts><vt:vector size="{n}" baseType="lpstr">{titles}</vt:vector></TitlesOfParts>'
            f"<Company>{escape(p.company)}</Company><LinksUpToDate>false</LinksUpToDate>"
            "<SharedDoc>false</SharedDoc><HyperlinksChanged>false</HyperlinksChanged><AppVersion>12.0000</AppVersion></Properties>"
        )
        parts = [
            ("[Content_Types].xml", content_types),
            ("_rels/.rels", root_rels),
            ("docProps/app.xml", app),
            ("docProps/core.xml", core),
            ("xl/workbook.xml", workbook),
            ("xl/_rels/workbook.xml.rels", workbook_rels),
            ("xl/styles.xml", styles),
        ]
        return [(name, text.encode("utf-8")) for name, text in parts] + [
            (f"xl/worksheets/sheet{i}.xml", s.xml) for i, s in enumerate(self._sheets, start=1)
        ]

    def to_bytes(self) -> bytes:
        """The xlsx package. Deflate level 1: a 55,000-row sheet packs in ~0.07 s (level 6: ~0.17 s)
        for a file about a fifth larger, still ~2 MB."""
        if not self._sheets:
            raise ValueError("a workbook needs at least one sheet")
        stamp = self.properties.created.timetuple()[:6]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as package:
            for name, data in self._parts():
                info = zipfile.ZipInfo(name, date_time=max(stamp, (1980, 1, 1, 0, 0, 0)))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o600 << 16
                package.writestr(info, data, compresslevel=1)
        return buffer.getvalue()
