"""Office file formats, as the Document Server knows them.

The one place that knows, per file extension: the ``documentType`` the editor
opens it with, whether the Document Server (DS) edits it, views it or only
converts it, what the conversion service can turn it into, what its bytes
must look like, and how to make a blank one.

The table transcribes ONLYOFFICE's own list of formats (the
``ONLYOFFICE/document-formats`` repository, ``onlyoffice-docs-formats.json``)
and its changelog, with the ``documentType`` of every extension taken from the
editor config reference. Formats the DS does not open (images, ``pdfa``) are
not here: they only appear as conversion targets.
"""

from __future__ import annotations

import codecs
import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal

from docdesk.errors import FormatMismatch, UnsupportedFormat

__all__ = [
    "FORMATS",
    "DocumentType",
    "Format",
    "blank_document",
    "check_bytes",
    "default_format",
    "format_for",
]


class DocumentType(StrEnum):
    """The editor the DS opens a file in: ``documentType`` in the editor config."""

    WORD = "word"
    CELL = "cell"
    SLIDE = "slide"
    PDF = "pdf"
    DIAGRAM = "diagram"


Container = Literal["zip", "ole", "pdf", "text", "xml", "other"]


@dataclass(frozen=True)
class Format:
    """What docdesk knows about one file extension.

    ``editable`` formats are edited natively; ``lossy_edit`` ones are edited
    too, but saving may drop what the DS cannot represent, so a caller should
    say so to the user (or convert first). ``container`` says how the bytes
    are laid out and is what :func:`check_bytes` checks.
    """

    extension: str
    document_type: DocumentType
    mime_type: str
    editable: bool
    lossy_edit: bool
    viewable: bool
    convertible_to: frozenset[str]
    container: Container


# The actions in ONLYOFFICE's own words; every format here is viewable.
_Action = Literal["edit", "lossy-edit", "view"]
# The container, told more finely for zips. "opc": an Open Packaging
# Conventions package (OOXML, Visio, XPS) with its [Content_Types].xml. "odf":
# a zip whose first entry, stored, is "mimetype" holding the format's MIME
# type, as ODF, its StarOffice parent and EPUB have: that, not the name, tells
# an odt from an ods.
_Layout = Literal["opc", "odf", "zip", "ole", "pdf", "text", "xml", "other"]

_WORD = DocumentType.WORD
_CELL = DocumentType.CELL
_SLIDE = DocumentType.SLIDE
_PDF = DocumentType.PDF
_DIAGRAM = DocumentType.DIAGRAM

_MS = "application/vnd.ms-"
_OOXML = "application/vnd.openxmlformats-officedocument."
_ODF = "application/vnd.oasis.opendocument."
_SUN = "application/vnd.sun.xml."
# ONLYOFFICE lists no MIME type for the WPS Office formats and wpt.
_UNKNOWN_MIME = "application/octet-stream"

# Transcribed from onlyoffice-docs-formats.json and its CHANGELOG. The newest
# JSON could not be read; where a format or a change arrived after the copy
# we read (hwp, hwpx, hml, pages, numbers, key, md, odg, the diagram types,
# editing xlsb and pdf), it follows the CHANGELOG and the repository README.
_ROWS: Final[tuple[tuple[str, DocumentType, _Action, _Layout, str], ...]] = (
    # XXX: a .doc that is really RTF or HTML, as some web apps export, is
    # refused though the DS opens it; pinned by test_rtf_bytes_under_doc_are_refused.
    ("doc", _WORD, "view", "ole", "application/msword"),
    ("docm", _WORD, "edit", "opc", _MS + "word.document.macroenabled.12"),
    ("docx", _WORD, "edit", "opc", _OOXML + "wordprocessingml.document"),
    ("dot", _WORD, "view", "ole", "application/msword"),
    ("dotm", _WORD, "edit", "opc", _MS + "word.template.macroenabled.12"),
    ("dotx", _WORD, "edit", "opc", _OOXML + "wordprocessingml.template"),
    ("epub", _WORD, "lossy-edit", "odf", "application/epub+zip"),
    ("fb2", _WORD, "lossy-edit", "xml", "text/fb2+xml"),
    ("fodt", _WORD, "view", "xml", _ODF + "text-flat-xml"),
    # XXX: hml, hwp and hwpx MIME types are the ones Hancom's files are
    # commonly served with; ONLYOFFICE's list that we could read predates them.
    ("hml", _WORD, "view", "xml", "application/x-hwml"),
    ("htm", _WORD, "view", "text", "text/html"),
    ("html", _WORD, "lossy-edit", "text", "text/html"),
    # XXX: HWP before 5.0 is not an OLE file and is refused; pinned by
    # test_hwp_accepts_ole_and_refuses_other_bytes.
    ("hwp", _WORD, "view", "ole", "application/x-hwp"),
    ("hwpx", _WORD, "view", "zip", "application/hwp+zip"),
    ("md", _WORD, "view", "text", "text/markdown"),
    ("mht", _WORD, "view", "text", "message/rfc822"),
    ("mhtml", _WORD, "view", "text", "message/rfc822"),
    ("odt", _WORD, "lossy-edit", "odf", _ODF + "text"),
    ("ott", _WORD, "lossy-edit", "odf", _ODF + "text-template"),
    ("pages", _WORD, "view", "zip", "application/vnd.apple.pages"),
    ("rtf", _WORD, "lossy-edit", "text", "application/rtf"),
    ("stw", _WORD, "view", "odf", _SUN + "writer.template"),
    ("sxw", _WORD, "view", "odf", _SUN + "writer"),
    ("txt", _WORD, "lossy-edit", "text", "text/plain"),
    ("wps", _WORD, "view", "ole", _MS + "works"),
    ("wpt", _WORD, "view", "ole", _UNKNOWN_MIME),
    # The DS lists xml under both word and cell: it reads Word 2003 XML and
    # SpreadsheetML 2003 alike. From the name alone we cannot tell which, and
    # ONLYOFFICE's own list files it under word, so word it is.
    ("xml", _WORD, "view", "xml", "application/xml"),
    ("csv", _CELL, "lossy-edit", "text", "text/csv"),
    ("et", _CELL, "view", "ole", _UNKNOWN_MIME),
    ("ett", _CELL, "view", "ole", _UNKNOWN_MIME),
    ("fods", _CELL, "view", "xml", _ODF + "spreadsheet-flat-xml"),
    ("numbers", _CELL, "view", "zip", "application/vnd.apple.numbers"),
    ("ods", _CELL, "lossy-edit", "odf", _ODF + "spreadsheet"),
    ("ots", _CELL, "lossy-edit", "odf", _ODF + "spreadsheet-template"),
    ("sxc", _CELL, "view", "odf", _SUN + "calc"),
    ("xls", _CELL, "view", "ole", _MS + "excel"),
    ("xlsb", _CELL, "edit", "opc", _MS + "excel.sheet.binary.macroenabled.12"),
    ("xlsm", _CELL, "edit", "opc", _MS + "excel.sheet.macroenabled.12"),
    ("xlsx", _CELL, "edit", "opc", _OOXML + "spreadsheetml.sheet"),
    ("xlt", _CELL, "view", "ole", _MS + "excel"),
    ("xltm", _CELL, "edit", "opc", _MS + "excel.template.macroenabled.12"),
    ("xltx", _CELL, "edit", "opc", _OOXML + "spreadsheetml.template"),
    ("dps", _SLIDE, "view", "ole", _UNKNOWN_MIME),
    ("dpt", _SLIDE, "view", "ole", _UNKNOWN_MIME),
    ("fodp", _SLIDE, "view", "xml", _ODF + "presentation-flat-xml"),
    ("key", _SLIDE, "view", "zip", "application/vnd.apple.keynote"),
    ("odg", _SLIDE, "view", "odf", _ODF + "graphics"),
    ("odp", _SLIDE, "lossy-edit", "odf", _ODF + "presentation"),
    ("otp", _SLIDE, "lossy-edit", "odf", _ODF + "presentation-template"),
    ("pot", _SLIDE, "view", "ole", _MS + "powerpoint"),
    ("potm", _SLIDE, "edit", "opc", _MS + "powerpoint.template.macroenabled.12"),
    ("potx", _SLIDE, "edit", "opc", _OOXML + "presentationml.template"),
    ("pps", _SLIDE, "view", "ole", _MS + "powerpoint"),
    ("ppsm", _SLIDE, "edit", "opc", _MS + "powerpoint.slideshow.macroenabled.12"),
    ("ppsx", _SLIDE, "edit", "opc", _OOXML + "presentationml.slideshow"),
    ("ppt", _SLIDE, "view", "ole", _MS + "powerpoint"),
    ("pptm", _SLIDE, "edit", "opc", _MS + "powerpoint.presentation.macroenabled.12"),
    ("pptx", _SLIDE, "edit", "opc", _OOXML + "presentationml.presentation"),
    ("sxi", _SLIDE, "view", "odf", _SUN + "impress"),
    ("djvu", _PDF, "view", "other", "image/vnd.djvu"),
    ("oxps", _PDF, "view", "opc", "application/oxps"),
    # Editing a PDF includes filling in a PDF form.
    ("pdf", _PDF, "edit", "pdf", "application/pdf"),
    ("xps", _PDF, "view", "opc", _MS + "xpsdocument"),
    ("vsdm", _DIAGRAM, "view", "opc", _MS + "visio.drawing.macroenabled.12"),
    ("vsdx", _DIAGRAM, "view", "opc", _MS + "visio.drawing"),
    ("vssm", _DIAGRAM, "view", "opc", _MS + "visio.stencil.macroenabled.12"),
    ("vssx", _DIAGRAM, "view", "opc", _MS + "visio.stencil"),
    ("vstm", _DIAGRAM, "view", "opc", _MS + "visio.template.macroenabled.12"),
    ("vstx", _DIAGRAM, "view", "opc", _MS + "visio.template"),
)

# What the conversion service turns each kind of document into; a format is
# never listed as a target of itself.
_IMAGES = frozenset({"bmp", "gif", "jpg", "pdf", "pdfa", "png"})
_TO_WORD = _IMAGES | {
    "docm",
    "docx",
    "docxf",
    "dotm",
    "dotx",
    "epub",
    "fb2",
    "html",
    "odt",
    "ott",
    "rtf",
    "txt",
}
_TO_CELL = _IMAGES | {"csv", "ods", "ots", "xlsm", "xlsx", "xltm", "xltx"}
_TO_SLIDE = _IMAGES | {"odp", "otp", "potm", "potx", "ppsm", "ppsx", "pptm", "pptx"}
# Slides convert to txt since formats release 3.1.0.
_TO_SLIDE |= {"txt"}
_TARGETS_BY_TYPE: Final[Mapping[DocumentType, frozenset[str]]] = {
    _WORD: _TO_WORD,
    _CELL: _TO_CELL,
    _SLIDE: _TO_SLIDE,
    _PDF: _TO_WORD,
    # XXX: the API docs keep their diagram conversion table commented out;
    # these are the targets it lists.
    _DIAGRAM: _IMAGES,
}
_TARGETS_BY_EXTENSION: Final[Mapping[str, frozenset[str]]] = {
    "djvu": _IMAGES,
    # ONLYOFFICE does not offer html from htm, nor from md.
    "htm": _TO_WORD - {"html"},
    "md": _TO_WORD - {"html"},
}


def _build(row: tuple[str, DocumentType, _Action, _Layout, str]) -> Format:
    extension, document_type, action, layout, mime_type = row
    targets = _TARGETS_BY_EXTENSION.get(extension, _TARGETS_BY_TYPE[document_type])
    return Format(
        extension=extension,
        document_type=document_type,
        mime_type=mime_type,
        editable=action == "edit",
        lossy_edit=action == "lossy-edit",
        viewable=True,
        convertible_to=targets - {extension},
        container=_container(layout),
    )


def _container(layout: _Layout) -> Container:
    if layout == "opc" or layout == "odf":
        return "zip"
    return layout


FORMATS: Final[Mapping[str, Format]] = MappingProxyType(
    {row[0]: _build(row) for row in _ROWS}
)
_OPC: Final = frozenset(row[0] for row in _ROWS if row[3] == "opc")
_MIMETYPE_FIRST: Final = frozenset(row[0] for row in _ROWS if row[3] == "odf")

_DEFAULTS: Final[Mapping[DocumentType, str]] = {
    _WORD: "docx",
    _CELL: "xlsx",
    _SLIDE: "pptx",
    _PDF: "pdf",
    _DIAGRAM: "vsdx",
}


def format_for(name: str) -> Format:
    """The format of a file name (``"Report.DOCX"``) or a bare extension.

    ``"docx"`` and ``".docx"`` both name the extension itself. Case does not
    matter. Raises :class:`UnsupportedFormat` for an unknown extension and for
    a name without one.
    """
    extension = name.strip().rpartition(".")[2].lower()

    found = FORMATS.get(extension)
    if found is None:
        raise UnsupportedFormat(f"unsupported file type: {extension[:32]!r}")
    return found


def default_format(document_type: DocumentType) -> Format:
    """The format a new document of this type is made in."""
    return FORMATS[_DEFAULTS[document_type]]


# --- What the bytes must look like ---------------------------------------

_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"
_ZIP_ENTRY = b"PK\x01\x02"
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_PDF_MAGIC = b"%PDF-"
_BINARY_MAGIC = (_ZIP_LOCAL, _ZIP_END, _OLE, _PDF_MAGIC)

# sig, disk, cd disk, entries here, entries, cd size, cd offset, comment size
_EOCD = struct.Struct("<4s4H2LH")
# sig, version, flags, method, time, date, crc, sizes, name size, extra size
_LOCAL = struct.Struct("<4s5H3L2H")
# A central directory entry is 46 bytes and its name; of those, only the
# name, extra and comment sizes (at offset 28) matter for listing names.
_ENTRY_SIZE = 46
_ENTRY_SIZES_AT = 28
_ENTRY_SIZES = struct.Struct("<3H")
_ZIP64_MARK = 0xFFFFFFFF

# The folder the main part of an OOXML package lives in, per editor.
_OPC_FOLDER: Final[Mapping[DocumentType, str]] = {
    _WORD: "word/",
    _CELL: "xl/",
    _SLIDE: "ppt/",
    _DIAGRAM: "visio/",
}

_SIGNATURES: Final[Mapping[str, bytes]] = {"djvu": b"AT&TFORM", "rtf": b"{\\rtf"}
_EMPTY_IS_VALID: Final = frozenset({"csv", "md", "txt"})
# UTF-32 LE before UTF-16 LE: its BOM starts with the other's.
_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control bytes no text file has (tab, line breaks, form feed, DOS end of
# file and escape are fine); text in a legacy 8-bit encoding has none either.
_BINARY_BYTES: Final = frozenset([*range(0x09), *range(0x0E, 0x1A), *range(0x1C, 0x20)])
_PDF_HEADER_WINDOW = 1024
_OLE_HEADER_SIZE = 512


def check_bytes(fmt: Format, head: bytes, tail: bytes, size: int) -> None:
    """Refuse bytes that are not a file of ``fmt``, before they are committed.

    Args:
        head: the first 4096 bytes (all of them if the file is smaller).
        tail: the last 65,557 bytes, enough to hold a zip's end record with
            the longest comment.
        size: the size of the whole file.

    It checks the layout, not the content: a zip has its end record (so a
    truncated download fails), an OOXML package has ``[Content_Types].xml``,
    an ODF one starts with its own ``mimetype``, a PDF has its header and its
    ``%%EOF``, text has no binary bytes. Raises :class:`FormatMismatch`.
    """
    if size == 0:
        if fmt.extension in _EMPTY_IS_VALID:
            return
        raise FormatMismatch(f"an empty file is not a valid .{fmt.extension}")

    _CHECKS[fmt.container](fmt, head, tail, size)

    signature = _SIGNATURES.get(fmt.extension)
    if signature is not None and not head.lstrip().startswith(signature):
        raise FormatMismatch(f"not a .{fmt.extension} file: its signature is missing")


def _check_zip(fmt: Format, head: bytes, tail: bytes, size: int) -> None:
    if not head.startswith((_ZIP_LOCAL, _ZIP_END)):
        raise FormatMismatch(f"not a .{fmt.extension} file: not a zip package")
    names = _zip_names(fmt, tail, size)

    if fmt.extension in _OPC:
        _check_opc(fmt, head, tail, names)
    elif fmt.extension in _MIMETYPE_FIRST:
        _check_mimetype_entry(fmt, head)


def _zip_names(fmt: Format, tail: bytes, size: int) -> list[str] | None:
    """The names in the central directory, or None if the tail does not hold it.

    Raises if the tail has no end-of-central-directory record: the file was
    cut short, or is not a zip at all.
    """
    base = size - len(tail)
    directory = _central_directory(tail, base)
    if directory is None:
        raise FormatMismatch(f"not a complete .{fmt.extension} file: zip end missing")

    cd_offset, cd_size = directory
    if cd_offset == _ZIP64_MARK or cd_offset < base:
        return None
    return _entry_names(tail[cd_offset - base : cd_offset - base + cd_size])


def _central_directory(tail: bytes, base: int) -> tuple[int, int] | None:
    """Offset and size of the central directory, from the last valid end record.

    ``base`` is the offset of the tail in the file.
    """
    end = len(tail) - _EOCD.size + len(_ZIP_END)
    while (at := tail.rfind(_ZIP_END, 0, max(end, 0))) != -1:
        *_, cd_size, cd_offset, comment_size = _EOCD.unpack_from(tail, at)

        # A stray signature inside compressed data would not point back at a
        # central directory that ends before it.
        fits = at + _EOCD.size + comment_size <= len(tail)
        if fits and (cd_offset == _ZIP64_MARK or cd_offset + cd_size <= base + at):
            return cd_offset, cd_size
        end = at + len(_ZIP_END) - 1
    return None


def _entry_names(directory: bytes) -> list[str] | None:
    """The names in a central directory, or None if it is damaged."""
    names: list[str] = []
    at = 0
    while at < len(directory):
        if directory[at : at + 4] != _ZIP_ENTRY or at + _ENTRY_SIZE > len(directory):
            return None
        sizes = _ENTRY_SIZES.unpack_from(directory, at + _ENTRY_SIZES_AT)
        if at + _ENTRY_SIZE + sum(sizes) > len(directory):
            return None

        name = directory[at + _ENTRY_SIZE : at + _ENTRY_SIZE + sizes[0]]
        names.append(name.decode("utf-8", "replace"))
        at += _ENTRY_SIZE + sum(sizes)
    return names


def _check_opc(fmt: Format, head: bytes, tail: bytes, names: list[str] | None) -> None:
    if names is None:
        # The directory is too big for the tail: search the raw bytes instead.
        if b"[Content_Types].xml" not in head and b"[Content_Types].xml" not in tail:
            raise FormatMismatch(f"not a .{fmt.extension} file: no [Content_Types].xml")
        return

    lowered = [name.lower() for name in names]
    if "[content_types].xml" not in lowered:
        raise FormatMismatch(f"not a .{fmt.extension} file: no [Content_Types].xml")

    folder = _OPC_FOLDER.get(fmt.document_type)
    if folder is not None and not any(name.startswith(folder) for name in lowered):
        raise FormatMismatch(f"not a .{fmt.extension} file: no {folder} part")


def _check_mimetype_entry(fmt: Format, head: bytes) -> None:
    if len(head) < _LOCAL.size or not head.startswith(_ZIP_LOCAL):
        raise FormatMismatch(f"not a .{fmt.extension} file: no mimetype entry")
    _, _, _, method, _, _, _, packed_size, _, name_size, extra_size = (
        _LOCAL.unpack_from(head)
    )

    start = _LOCAL.size + name_size + extra_size
    name = head[_LOCAL.size : _LOCAL.size + name_size]
    expected = fmt.mime_type.encode("ascii")
    if method == zipfile.ZIP_DEFLATED:
        # Against the spec, but some writers compress it.
        stored = _inflate(head[start:], len(expected) + 1)
    else:
        stored = head[start : start + (packed_size or len(expected))]

    if name != b"mimetype" or stored != expected:
        raise FormatMismatch(f"not a .{fmt.extension} file: wrong or missing mimetype")


def _inflate(data: bytes, limit: int) -> bytes:
    try:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, limit)
    except zlib.error:
        return b""


def _check_ole(fmt: Format, head: bytes, tail: bytes, size: int) -> None:
    if not head.startswith(_OLE) or size < _OLE_HEADER_SIZE:
        raise FormatMismatch(f"not a .{fmt.extension} file: not an OLE compound file")


def _check_pdf(fmt: Format, head: bytes, tail: bytes, size: int) -> None:
    # Readers accept junk before the header, within the first kilobyte.
    if _PDF_MAGIC not in head[:_PDF_HEADER_WINDOW]:
        raise FormatMismatch(f"not a .{fmt.extension} file: no %PDF- header")
    if b"%%EOF" not in tail:
        raise FormatMismatch(f"not a complete .{fmt.extension} file: no %%EOF")


def _check_text(fmt: Format, head: bytes, tail: bytes, size: int) -> None:
    _text_of(fmt, head, size)


def _check_xml(fmt: Format, head: bytes, tail: bytes, size: int) -> None:
    if not _text_of(fmt, head, size).lstrip().startswith("<"):
        raise FormatMismatch(f"not a .{fmt.extension} file: it does not start with <")


def _check_other(fmt: Format, head: bytes, tail: bytes, size: int) -> None:
    """Nothing to check beyond the signature, if the format has one."""


def _text_of(fmt: Format, head: bytes, size: int) -> str:
    """Decode the head as text, or refuse it as binary."""
    if head.startswith(_BINARY_MAGIC):
        raise FormatMismatch(f"not a .{fmt.extension} file: binary content")
    for bom, encoding in _BOMS:
        # UTF-16 and UTF-32 are full of NULs; the BOM is proof enough.
        if head.startswith(bom):
            return codecs.getincrementaldecoder(encoding)("replace").decode(head)

    if 0 in head:
        raise FormatMismatch(f"not a .{fmt.extension} file: binary content")
    try:
        # The head may end inside a character, unless it is the whole file.
        decoder = codecs.getincrementaldecoder("utf-8")()
        return decoder.decode(head, final=len(head) >= size)
    except UnicodeDecodeError:
        pass

    # Text in a legacy 8-bit encoding (a CSV from Excel, say) is common and
    # the DS reads it given a code page; only control bytes betray a binary.
    if not _BINARY_BYTES.isdisjoint(head):
        raise FormatMismatch(f"not a .{fmt.extension} file: binary content")
    return head.decode("latin-1")


_CHECKS: Final[Mapping[Container, Callable[[Format, bytes, bytes, int], None]]] = {
    "zip": _check_zip,
    "ole": _check_ole,
    "pdf": _check_pdf,
    "text": _check_text,
    "xml": _check_xml,
    "other": _check_other,
}


# --- Blank documents ------------------------------------------------------

# Fixed times make a blank document the same bytes on every call.
_EPOCH = datetime(2000, 1, 1)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def blank_document(extension: str) -> bytes:
    """The bytes of a new, empty document: docx, xlsx, pptx, txt, csv or md.

    The office files are made by python-docx, openpyxl and python-pptx, so
    they are real files the DS opens; ``extension`` may be given as for
    :func:`format_for`. Raises :class:`UnsupportedFormat` for any other.
    """
    fmt = format_for(extension)

    maker = _BLANK_MAKERS.get(fmt.extension)
    if maker is None:
        raise UnsupportedFormat(f"cannot make a blank .{fmt.extension} document")

    buffer = io.BytesIO()
    maker(buffer)
    data = buffer.getvalue()
    return _rezip(data) if data else data


# The libraries are imported on first use: they are slow to import, and most
# processes never make a blank document.
def _blank_docx(out: io.BytesIO) -> None:
    import docx

    document = docx.Document()
    # The template names python-docx as author; a user's document should not.
    document.core_properties.author = ""
    document.core_properties.comments = ""
    document.save(out)


def _blank_xlsx(out: io.BytesIO) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.properties.creator = ""
    workbook.properties.created = _EPOCH
    workbook.properties.modified = _EPOCH
    workbook.save(out)


def _blank_pptx(out: io.BytesIO) -> None:
    import pptx

    presentation = pptx.Presentation()
    presentation.core_properties.comments = ""
    presentation.core_properties.last_modified_by = ""
    presentation.save(out)


def _blank_text(out: io.BytesIO) -> None:
    """An empty file is a valid text, CSV or Markdown document."""


_BLANK_MAKERS: Final[Mapping[str, Callable[[io.BytesIO], None]]] = {
    "docx": _blank_docx,
    "xlsx": _blank_xlsx,
    "pptx": _blank_pptx,
    "txt": _blank_text,
    "csv": _blank_text,
    "md": _blank_text,
}


def _rezip(data: bytes) -> bytes:
    """The same package with every entry's timestamp fixed, entries in order."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for entry in source.infolist():
            fixed = zipfile.ZipInfo(entry.filename, date_time=_ZIP_EPOCH)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(fixed, source.read(entry))
    return out.getvalue()
