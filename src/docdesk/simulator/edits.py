"""The simulator's edits, written into real files, and the DS's records of them.

The simulated Document Server (DS) has a stand-in editor that lets a user
add a paragraph to a docx, a row to an xlsx or a slide to a pptx (a line to a
txt, md or csv). When the DS assembles the file, :func:`apply_changes` writes
every change of the session into the base file with python-docx, openpyxl or
python-pptx, so a save callback hands over a real Office file, one those
libraries and office applications open, holding every edit of every editor.
:func:`read_text` reads the visible text back, for the editor page and for
tests.

:func:`history` builds the callback's ``history`` object and
:func:`changes_archive` the zip the DS serves at ``changesurl``. Both follow
the DS: a new history entry each time the author of the changes switches,
times as UTC ``YYYY-MM-DD HH:MM:SS``.

Office files come out with fixed zip timestamps and with the last change's
author and time as their last-modified properties, so the same changes on the
same base make the same bytes.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import io
import itertools
import json
import logging
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Final, NamedTuple, TypeVar

from docdesk.errors import FormatMismatch, UnsupportedFormat
from docdesk.formats import check_bytes, format_for

if TYPE_CHECKING:
    from pptx.presentation import Presentation
    from pptx.shapes.autoshape import Shape
    from pptx.shapes.base import BaseShape
    from pptx.slide import Slide, SlideLayout

__all__ = ["Change", "apply_changes", "changes_archive", "history", "read_text"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class Change:
    """One edit by one user, as the simulator records it.

    ``created`` must be timezone-aware: the DS reports change times in UTC,
    and a naive time would silently be read as local time.
    """

    user_id: str
    user_name: str
    text: str
    created: datetime

    def __post_init__(self) -> None:
        if self.created.utcoffset() is None:
            raise ValueError("Change.created must be a timezone-aware datetime")


def apply_changes(file_type: str, base: bytes, changes: Sequence[Change]) -> bytes:
    """The base file with every change applied, in order.

    docx: one new paragraph per change, holding its text. xlsx: one new row
    per change at the end of the first worksheet, the text in column A and
    the author's name in B, both always text (never a formula). pptx: one new
    slide per change with the text as its title. txt and md: one new line per
    change (more if the text has line breaks); csv: one new record (text,
    author's name).

    Characters XML cannot hold (NUL and most other control characters) are
    dropped from the text, in every format alike. A cell holds at most
    32,767 characters, Excel's limit; longer text is cut there.

    ``file_type`` is an extension or a file name, as for
    :func:`docdesk.formats.format_for`. Raises :class:`UnsupportedFormat` for
    any other format and :class:`FormatMismatch` when ``base`` is not a
    readable file of the format.
    """
    extension = _editable(file_type)
    _check(extension, base)

    edited = _EDITORS[extension].apply(base, changes)

    logger.debug(
        "changes applied file_type=%s changes=%d bytes=%d",
        extension,
        len(changes),
        len(edited),
    )
    return edited


def read_text(file_type: str, data: bytes) -> list[str]:
    """The document's visible text, one string per paragraph, row or slide.

    docx: each paragraph of the body, empty ones included, and each table row
    with its cells joined by a tab. xlsx: each row of every worksheet that
    holds a value, cells joined by a tab. pptx: each slide, the text of all
    its shapes joined by a space. txt and md: each line; csv: each record,
    fields joined by a tab.

    Raises as :func:`apply_changes` does.
    """
    extension = _editable(file_type)
    _check(extension, data)

    return _EDITORS[extension].read(data)


def history(
    changes: Sequence[Change], *, server_version: str, base_sha256: str
) -> dict[str, Any]:
    """The callback's ``history`` object, as the DS builds it.

    ``{"serverVersion": ..., "changes": [{"documentSha256", "created",
    "user": {"id", "name"}}, ...]}``. Consecutive changes by one user make
    one entry, stamped with the time of the last of them; an entry starts
    each time the author switches. ``base_sha256`` is the hex SHA-256 of the
    file the session started from.
    """
    return {
        "serverVersion": server_version,
        "changes": [_history_entry(run, base_sha256) for run in _runs(changes)],
    }


def changes_archive(
    changes: Sequence[Change],
    *,
    server_version: str,
    base_sha256: str | None = None,
) -> bytes:
    """The zip the DS serves at ``changesurl``; consumers treat it as opaque.

    It holds ``changes.json``, a list of ``{"created", "user": {"id",
    "name"}, "change"}``, one per change, and ``changesHistory.json``, the
    :func:`history` object. Without ``base_sha256`` its entries carry no
    ``documentSha256``. The same input always makes the same bytes.
    """
    records = [
        {
            "created": _ds_time(change.created),
            "user": _user(change),
            "change": change.text,
        }
        for change in changes
    ]
    entries = [_history_entry(run, base_sha256) for run in _runs(changes)]
    changes_history = {"serverVersion": server_version, "changes": entries}

    return _zip(
        [
            ("changes.json", _json(records)),
            ("changesHistory.json", _json(changes_history)),
        ]
    )


# --- History -------------------------------------------------------------


def _runs(changes: Sequence[Change]) -> Iterator[Change]:
    """The last change of each run of consecutive changes by one user."""
    for _, run in itertools.groupby(changes, key=lambda change: change.user_id):
        *_, last = run
        yield last


def _history_entry(last: Change, base_sha256: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if base_sha256 is not None:
        entry["documentSha256"] = base_sha256
    entry["created"] = _ds_time(last.created)
    entry["user"] = _user(last)
    return entry


def _user(change: Change) -> dict[str, str]:
    return {"id": change.user_id, "name": change.user_name}


def _ds_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _json(value: object) -> bytes:
    # ASCII escapes let any Python string through, lone surrogates included.
    return json.dumps(value, separators=(",", ":")).encode("ascii")


# --- Bytes in, bytes out ---------------------------------------------------

_HEAD = 4096
_MB = 1024 * 1024
# The DS's defaults for FileConverter.converter.inputLimits: the uncompressed
# size of a package's *.xml entries, by the format that opens it.
INPUT_LIMITS: Final = {"docx": 50 * _MB, "xlsx": 300 * _MB, "pptx": 50 * _MB}
_TAIL = 65_557
# A fixed time makes the same entries the same zip on every call.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _editable(file_type: str) -> str:
    extension = format_for(file_type).extension
    if extension not in _EDITORS:
        raise UnsupportedFormat(f"the simulator cannot edit .{extension} files")
    return extension


def _check(extension: str, data: bytes) -> None:
    """Refuse bytes that are not a file of the format, before a library sees them."""
    fmt = format_for(extension)
    check_bytes(fmt, data[:_HEAD], data[-_TAIL:], len(data))


def _opened(extension: str, load: Callable[[IO[bytes]], _T], data: bytes) -> _T:
    """The file as the library loads it; its failures become FormatMismatch.

    A zip can pass :func:`check_bytes` and still hold a missing part or broken
    XML, and each library fails in its own way (KeyError, XMLSyntaxError,
    BadZipFile, ValueError...), so any failure here means a bad file.
    """
    _within_input_limits(extension, data)
    try:
        return load(io.BytesIO(data))
    except Exception as error:
        reason = next(iter(str(error).splitlines()), "")[:120]
        raise FormatMismatch(
            f"not a readable .{extension} file: {type(error).__name__}: {reason}"
        ) from error


def _within_input_limits(extension: str, data: bytes) -> None:
    """Refuse a package whose XML parts inflate past the DS's input limits.

    The DS's converter sums the uncompressed sizes of the ``*.xml`` entries
    before it opens a package (``FileConverter.converter.inputLimits``), so
    a zip bomb never reaches its parser; neither does it reach ours.
    """
    limit = INPUT_LIMITS.get(extension)
    if limit is None:
        return
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            inflated = sum(
                info.file_size
                for info in package.infolist()
                if fnmatch.fnmatchcase(info.filename, "*.xml")
            )
    except (zipfile.BadZipFile, ValueError) as error:
        raise FormatMismatch(f"not a readable .{extension} file: {error}") from error
    if inflated > limit:
        raise FormatMismatch(
            f"the .{extension} file's XML inflates to {inflated:,} bytes, over the"
            f" Document Server's input limit of {limit:,}"
        )


def _saved(save: Callable[[IO[bytes]], None]) -> bytes:
    """What ``save`` writes, as a zip with fixed entry timestamps."""
    buffer = io.BytesIO()
    save(buffer)

    with zipfile.ZipFile(buffer) as package:
        return _zip(
            [(info.filename, package.read(info)) for info in package.infolist()]
        )


def _zip(entries: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            # A ZipInfo brings its own compression (stored), not the archive's.
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


# --- Text as the formats can hold it -----------------------------------------

# Everything XML 1.0 cannot hold: the C0 controls but tab and line breaks,
# lone surrogates, U+FFFE and U+FFFF. lxml and openpyxl refuse them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Excel's limit for one cell.
_CELL_LIMIT = 32_767
# The limit python-docx and python-pptx set on a core property.
_PROPERTY_LIMIT = 255


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("", text)


def _cell_text(text: str) -> str:
    return _xml_text(text)[:_CELL_LIMIT]


def _property_text(text: str) -> str:
    return _xml_text(text)[:_PROPERTY_LIMIT]


def _modified(change: Change) -> datetime:
    """The change time as the libraries write core properties: naive UTC."""
    return change.created.astimezone(UTC).replace(tzinfo=None)


# --- docx ------------------------------------------------------------------


def _apply_docx(base: bytes, changes: Sequence[Change]) -> bytes:
    import docx

    document = _opened("docx", docx.Document, base)

    for change in changes:
        document.add_paragraph(_xml_text(change.text))

    if changes:
        properties = document.core_properties
        properties.last_modified_by = _property_text(changes[-1].user_name)
        properties.modified = _modified(changes[-1])
    return _saved(document.save)


def _read_docx(data: bytes) -> list[str]:
    import docx
    from docx.text.paragraph import Paragraph

    document = _opened("docx", docx.Document, data)

    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            lines.append(block.text)
        else:
            lines.extend(_row([cell.text for cell in row.cells]) for row in block.rows)
    return lines


def _row(values: Iterable[object]) -> str:
    """Cells joined by a tab, without the empty ones at the end."""
    cells = ["" if value is None else str(value) for value in values]
    while cells and not cells[-1]:
        cells.pop()
    return "\t".join(cells)


# --- xlsx ------------------------------------------------------------------


def _load_workbook(stream: IO[bytes]) -> Any:
    import openpyxl

    # Rich text kept as runs, or openpyxl would flatten it on saving.
    return openpyxl.load_workbook(stream, rich_text=True)


def _apply_xlsx(base: bytes, changes: Sequence[Change]) -> bytes:
    # XXX: openpyxl drops what it does not model (shapes, form controls, custom
    # XML parts...) from the base workbook when it saves it again; pinned by
    # test_openpyxl_drops_parts_it_does_not_model.
    from openpyxl.writer.excel import ExcelWriter

    workbook = _opened("xlsx", _load_workbook, base)
    sheets = workbook.worksheets
    sheet = sheets[0] if sheets else workbook.create_sheet()

    for change in changes:
        sheet.append([_cell_text(change.text), _cell_text(change.user_name)])
        # What a user types is text, even when it starts with "=".
        for column in (1, 2):
            sheet.cell(row=sheet.max_row, column=column).data_type = "s"

    if changes:
        workbook.properties.lastModifiedBy = _xml_text(changes[-1].user_name)
        workbook.properties.modified = _modified(changes[-1])

    def save(out: IO[bytes]) -> None:
        # Not workbook.save(): it stamps the wall clock as the modified time.
        archive = zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        ExcelWriter(workbook, archive).save()

    return _saved(save)


def _read_xlsx(data: bytes) -> list[str]:
    workbook = _opened("xlsx", _load_workbook, data)

    lines: list[str] = []
    for sheet in workbook.worksheets:
        rows = (_row(values) for values in sheet.iter_rows(values_only=True))
        lines.extend(row for row in rows if row)
    return lines


# --- pptx ------------------------------------------------------------------


def _apply_pptx(base: bytes, changes: Sequence[Change]) -> bytes:
    import pptx

    presentation = _opened("pptx", pptx.Presentation, base)
    layout = _title_layout(presentation) if changes else None

    for change in changes:
        slide = presentation.slides.add_slide(layout)
        title = slide.shapes.title or _textbox(presentation, slide)
        title.text_frame.text = _xml_text(change.text)

    if changes:
        properties = presentation.core_properties
        properties.last_modified_by = _property_text(changes[-1].user_name)
        properties.modified = _modified(changes[-1])
    return _saved(presentation.save)


def _title_layout(presentation: Presentation) -> SlideLayout:
    """The layout for a slide that holds a title and nothing else.

    "Title Only", told by its placeholders, not by its name, which is
    translated; else "Blank" (a textbox then holds the text); else the layout
    with the fewest placeholders.
    """
    from pptx.enum.shapes import PP_PLACEHOLDER

    def rank(layout: SlideLayout) -> tuple[bool, int]:
        kinds = [
            ph.placeholder_format.type for ph in layout.iter_cloneable_placeholders()
        ]
        title_only = len(kinds) == 1 and kinds[0] in {
            PP_PLACEHOLDER.TITLE,
            PP_PLACEHOLDER.CENTER_TITLE,
        }
        return not title_only, len(kinds)

    layouts = list(presentation.slide_layouts)
    if not layouts:
        raise FormatMismatch("not a usable .pptx file: it has no slide layout")
    return min(layouts, key=rank)


def _textbox(presentation: Presentation, slide: Slide) -> Shape:
    """A wrapping textbox across the top of the slide, where a title would be."""
    from pptx.util import Emu

    # The size python-pptx gives a new presentation, for a file that names none.
    width = presentation.slide_width or Emu(9_144_000)
    height = presentation.slide_height or Emu(6_858_000)
    margin = Emu(width // 12)

    box = slide.shapes.add_textbox(
        margin, margin, Emu(width - 2 * margin), Emu(height // 4)
    )
    box.text_frame.word_wrap = True
    return box


def _read_pptx(data: bytes) -> list[str]:
    import pptx

    presentation = _opened("pptx", pptx.Presentation, data)

    slides: list[str] = []
    for slide in presentation.slides:
        # python-pptx reads a line break inside a paragraph as a vertical tab.
        pieces = (piece.replace("\v", " ") for piece in _shape_text(slide.shapes))
        slides.append(" ".join(piece for piece in pieces if piece))
    return slides


def _shape_text(shapes: Iterable[BaseShape]) -> Iterator[str]:
    """The text of each paragraph and table cell, groups included, in order."""
    from pptx.shapes.autoshape import Shape
    from pptx.shapes.graphfrm import GraphicFrame
    from pptx.shapes.group import GroupShape

    for shape in shapes:
        if isinstance(shape, GroupShape):
            yield from _shape_text(shape.shapes)
        elif isinstance(shape, GraphicFrame) and shape.has_table:
            yield from (cell.text for row in shape.table.rows for cell in row.cells)
        elif isinstance(shape, Shape) and shape.has_text_frame:
            yield from (paragraph.text for paragraph in shape.text_frame.paragraphs)


# --- txt, md, csv ----------------------------------------------------------

# UTF-32 LE before UTF-16 LE: its BOM starts with the other's.
_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _decoded(data: bytes) -> tuple[str, str]:
    """The text and the encoding to write it back in.

    A file in a legacy 8-bit encoding is read as Windows-1252, the commonest,
    and written back as UTF-8, so that any text a user adds fits.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, "replace"), encoding
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace"), "utf-8"


def _appended(base: bytes, lines: Sequence[str]) -> bytes:
    """The text with the lines added at its end, in its own line breaks."""
    text, encoding = _decoded(base)
    newline = "\r\n" if "\r\n" in text else "\n"

    if text and not text.endswith(("\n", "\r")):
        text += newline
    text += "".join(line + newline for line in lines)
    return text.encode(encoding)


def _apply_lines(base: bytes, changes: Sequence[Change]) -> bytes:
    return _appended(base, [_xml_text(change.text) for change in changes])


def _read_lines(data: bytes) -> list[str]:
    text = _decoded(data)[0].replace("\r\n", "\n").replace("\r", "\n")
    return text.removesuffix("\n").split("\n") if text else []


def _apply_csv(base: bytes, changes: Sequence[Change]) -> bytes:
    # XXX: records are comma-separated even when the base file uses another
    # delimiter (";" from a European Excel); pinned by
    # test_csv_records_are_comma_separated_whatever_the_base_uses.
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    records: list[str] = []
    for change in changes:
        writer.writerow([_xml_text(change.text), _xml_text(change.user_name)])
        records.append(buffer.getvalue().removesuffix("\n"))
        buffer.seek(0)
        buffer.truncate()
    return _appended(base, records)


def _read_csv(data: bytes) -> list[str]:
    text = _decoded(data)[0]
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise FormatMismatch(f"not a readable .csv file: {error}") from error
    return [_row(record) for record in records if record]


class _Editor(NamedTuple):
    apply: Callable[[bytes, Sequence[Change]], bytes]
    read: Callable[[bytes], list[str]]


_EDITORS: Final[Mapping[str, _Editor]] = {
    "docx": _Editor(_apply_docx, _read_docx),
    "xlsx": _Editor(_apply_xlsx, _read_xlsx),
    "pptx": _Editor(_apply_pptx, _read_pptx),
    "txt": _Editor(_apply_lines, _read_lines),
    "md": _Editor(_apply_lines, _read_lines),
    "csv": _Editor(_apply_csv, _read_csv),
}
