from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Callable
from typing import IO, Protocol

import docx
import openpyxl
import pptx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from docdesk.errors import FormatMismatch, UnsupportedFormat
from docdesk.formats import (
    FORMATS,
    DocumentType,
    Format,
    blank_document,
    check_bytes,
    default_format,
    format_for,
)

# A literal copy of the documentType mapping in the editor config reference
# (onlyoffice-protocol.md §6), so that a slip in the table shows up here.
SECTION_6 = {
    DocumentType.WORD: (
        "doc docm docx dot dotm dotx epub fb2 fodt hml htm html hwp hwpx md mht "
        "mhtml odt ott pages rtf stw sxw txt wps wpt xml"
    ),
    DocumentType.CELL: (
        "csv et ett fods numbers ods ots sxc xls xlsb xlsm xlsx xlt xltm xltx xml"
    ),
    DocumentType.SLIDE: (
        "dps dpt fodp key odg odp otp pot potm potx pps ppsm ppsx ppt pptm pptx sxi"
    ),
    DocumentType.PDF: "djvu oxps pdf xps",
    DocumentType.DIAGRAM: "vsdm vsdx vssm vssx vstm vstx",
}
SECTION_6_PAIRS = [
    (extension, document_type)
    for document_type, extensions in SECTION_6.items()
    for extension in extensions.split()
    # xml is listed twice; it is a word document here, tested on its own.
    if not (extension == "xml" and document_type is DocumentType.CELL)
]

HEAD = 4096
TAIL = 65_557
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
SMALL_PDF = (
    b"%PDF-1.4\n"
    b"1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
    b"trailer <</Root 1 0 R>>\n"
    b"%%EOF\n"
)
ODT_MIME = b"application/vnd.oasis.opendocument.text"


def check(extension: str, data: bytes) -> None:
    """Call check_bytes the way the save path does, with head and tail."""
    check_bytes(FORMATS[extension], data[:HEAD], data[-TAIL:], len(data))


class Savable(Protocol):
    def save(self, file: IO[bytes]) -> None: ...


def saved(document: Savable) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_zip(
    entries: list[tuple[str, bytes]],
    *,
    first_compression: int = zipfile.ZIP_STORED,
    comment: bytes = b"",
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        for index, (name, data) in enumerate(entries):
            compression = first_compression if index == 0 else zipfile.ZIP_DEFLATED
            package.writestr(name, data, compress_type=compression)
        package.comment = comment
    return buffer.getvalue()


def make_odt(
    mimetype: bytes = ODT_MIME, first_compression: int = zipfile.ZIP_STORED
) -> bytes:
    entries = [
        ("mimetype", mimetype),
        ("content.xml", b"<office:document-content/>"),
        ("META-INF/manifest.xml", b"<manifest:manifest/>"),
    ]
    return make_zip(entries, first_compression=first_compression)


def make_ole(size: int = 1536) -> bytes:
    return OLE_MAGIC + bytes(size - len(OLE_MAGIC))


@pytest.fixture(scope="module")
def docx_bytes() -> bytes:
    return saved(docx.Document())


@pytest.fixture(scope="module")
def xlsx_bytes() -> bytes:
    return saved(openpyxl.Workbook())


@pytest.fixture(scope="module")
def pptx_bytes() -> bytes:
    return saved(pptx.Presentation())


class TestTable:
    @pytest.mark.parametrize(("extension", "document_type"), SECTION_6_PAIRS)
    def test_every_section_6_extension_opens_in_its_editor(
        self, extension: str, document_type: DocumentType
    ) -> None:
        fmt = FORMATS[extension]

        assert fmt.document_type is document_type
        assert fmt.extension == extension

    def test_the_table_holds_exactly_the_section_6_extensions(self) -> None:
        listed = {extension for extension, _ in SECTION_6_PAIRS}

        assert set(FORMATS) == listed

    def test_xml_opens_in_the_word_editor(self) -> None:
        assert FORMATS["xml"].document_type is DocumentType.WORD

    def test_editable_formats_are_those_onlyoffice_edits_natively(self) -> None:
        editable = {ext for ext, fmt in FORMATS.items() if fmt.editable}

        assert editable == {
            *("docm", "docx", "dotm", "dotx", "pdf"),
            *("xlsb", "xlsm", "xlsx", "xltm", "xltx"),
            *("potm", "potx", "ppsm", "ppsx", "pptm", "pptx"),
        }

    def test_lossy_formats_are_those_onlyoffice_edits_with_loss(self) -> None:
        lossy = {ext for ext, fmt in FORMATS.items() if fmt.lossy_edit}

        assert lossy == {
            *("epub", "fb2", "html", "odt", "ott", "rtf", "txt"),
            *("csv", "ods", "ots", "odp", "otp"),
        }

    def test_every_format_is_viewable_and_never_both_editable_and_lossy(
        self,
    ) -> None:
        formats = list(FORMATS.values())

        assert all(fmt.viewable for fmt in formats)
        assert not [fmt for fmt in formats if fmt.editable and fmt.lossy_edit]

    def test_no_format_converts_to_itself(self) -> None:
        offenders = [ext for ext, fmt in FORMATS.items() if ext in fmt.convertible_to]

        assert offenders == []

    @pytest.mark.parametrize(
        ("extension", "present", "absent"),
        [
            ("docx", {"pdf", "odt", "txt", "docxf"}, {"xlsx", "pptx"}),
            ("doc", {"docx", "pdf"}, {"doc"}),
            ("xlsx", {"csv", "ods", "pdf"}, {"docx", "xlsx"}),
            ("csv", {"xlsx", "pdf"}, {"csv", "docx"}),
            ("pptx", {"odp", "pdf", "png", "txt"}, {"pptx", "docx"}),
            ("pdf", {"docx", "pdfa"}, {"pdf", "xlsx"}),
            ("htm", {"docx"}, {"html"}),
            ("djvu", {"pdf", "png"}, {"docx"}),
            ("vsdx", {"pdf", "png"}, {"vsdx", "docx"}),
        ],
    )
    def test_conversion_targets_follow_onlyoffice(
        self, extension: str, present: set[str], absent: set[str]
    ) -> None:
        targets = FORMATS[extension].convertible_to

        assert present <= targets
        assert not absent & targets

    @pytest.mark.parametrize(
        ("extension", "mime_type"),
        [
            (
                "docx",
                "application/vnd.openxmlformats-officedocument"
                ".wordprocessingml.document",
            ),
            ("xls", "application/vnd.ms-excel"),
            ("odt", "application/vnd.oasis.opendocument.text"),
            ("pdf", "application/pdf"),
            ("csv", "text/csv"),
        ],
    )
    def test_mime_types_are_the_registered_ones(
        self, extension: str, mime_type: str
    ) -> None:
        assert FORMATS[extension].mime_type == mime_type

    def test_the_table_cannot_be_changed(self) -> None:
        with pytest.raises(TypeError):
            FORMATS["exe"] = FORMATS["docx"]  # type: ignore[index]


class TestFormatFor:
    @pytest.mark.parametrize(
        "name",
        ["Report.docx", "Report.DOCX", "docx", ".docx", "DOCX", "a.b/Report.Docx"],
    )
    def test_names_and_bare_extensions_in_any_case_are_found(self, name: str) -> None:
        assert format_for(name) is FORMATS["docx"]

    def test_only_the_last_extension_counts(self) -> None:
        assert format_for("report.pdf.xlsx") is FORMATS["xlsx"]

    @pytest.mark.parametrize(
        "name",
        ["", "README", "Report.", "archive.tar.gz", "payload.exe", "a.docx/README"],
    )
    def test_unknown_and_missing_extensions_are_unsupported(self, name: str) -> None:
        with pytest.raises(UnsupportedFormat):
            format_for(name)

    @pytest.mark.parametrize(
        ("document_type", "extension"),
        [
            (DocumentType.WORD, "docx"),
            (DocumentType.CELL, "xlsx"),
            (DocumentType.SLIDE, "pptx"),
            (DocumentType.PDF, "pdf"),
            (DocumentType.DIAGRAM, "vsdx"),
        ],
    )
    def test_default_format_of_each_editor(
        self, document_type: DocumentType, extension: str
    ) -> None:
        fmt = default_format(document_type)

        assert fmt.extension == extension
        assert fmt.document_type is document_type


class TestCheckBytesAccepts:
    def test_office_files_made_by_their_libraries(
        self, docx_bytes: bytes, xlsx_bytes: bytes, pptx_bytes: bytes
    ) -> None:
        check("docx", docx_bytes)
        check("xlsx", xlsx_bytes)
        check("pptx", pptx_bytes)

    def test_an_odt_with_its_mimetype_first(self) -> None:
        check("odt", make_odt())

    def test_an_odt_whose_mimetype_entry_is_compressed(self) -> None:
        check("odt", make_odt(first_compression=zipfile.ZIP_DEFLATED))

    def test_a_corrupt_compressed_mimetype_is_a_mismatch(self) -> None:
        odt = bytearray(make_odt(first_compression=zipfile.ZIP_DEFLATED))
        odt[38:48] = b"\xff" * 10

        with pytest.raises(FormatMismatch, match="mimetype"):
            check("odt", bytes(odt))

    def test_a_zip_with_a_comment_after_its_central_directory(
        self, docx_bytes: bytes
    ) -> None:
        entries = read_entries(docx_bytes)

        check("docx", make_zip(entries, comment=b"c" * 1000))

    def test_a_small_pdf_and_one_with_junk_before_its_header(self) -> None:
        check("pdf", SMALL_PDF)
        check("pdf", b"\r\n" * 100 + SMALL_PDF)

    def test_an_ole_file_under_each_ole_extension(self) -> None:
        for extension in ("doc", "xls", "ppt", "wps", "et", "dps", "hwp"):
            check(extension, make_ole())

    @pytest.mark.parametrize(
        ("extension", "data"),
        [
            ("txt", "Grüße, 世界\n".encode()),
            ("txt", "utf-16 text".encode("utf-16")),
            ("txt", b"\xef\xbb\xbfwith a UTF-8 BOM"),
            ("csv", "Name;Stadt\nJürgen;Köln\n".encode("cp1252")),
            ("md", b"# Title\n\nSome *text*.\n"),
            ("html", b"<!doctype html><p>hi</p>"),
            ("xml", b'\n  <?xml version="1.0"?><w:document/>'),
            ("fodt", '<?xml version="1.0"?><office:document/>'.encode("utf-16")),
            ("rtf", b"{\\rtf1\\ansi hello}"),
            ("djvu", b"AT&TFORM\x00\x00\x00\x10DJVU"),
        ],
    )
    def test_text_and_signed_formats(self, extension: str, data: bytes) -> None:
        check(extension, data)

    def test_utf8_cut_inside_a_character_at_the_end_of_the_head(self) -> None:
        data = b"a" * (HEAD - 1) + "é".encode() + b"more text"

        check("txt", data)

    @pytest.mark.parametrize("extension", ["txt", "csv", "md"])
    def test_an_empty_text_file(self, extension: str) -> None:
        check(extension, b"")

    def test_an_empty_zip_for_a_plain_zip_format(self) -> None:
        check("pages", make_zip([]))

    def test_an_ooxml_package_whose_directory_does_not_fit_in_the_tail(
        self,
    ) -> None:
        entries = [("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"")]
        entries += [(f"word/media/{'n' * 60}{i:05}.xml", b"") for i in range(700)]
        data = make_zip(entries)

        check("docx", data)


def read_entries(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        return [(name, package.read(name)) for name in package.namelist()]


class TestCheckBytesRefuses:
    def test_pdf_bytes_under_docx(self) -> None:
        with pytest.raises(FormatMismatch):
            check("docx", SMALL_PDF)

    def test_docx_bytes_under_odt(self, docx_bytes: bytes) -> None:
        with pytest.raises(FormatMismatch, match="mimetype"):
            check("odt", docx_bytes)

    def test_odt_bytes_under_docx(self) -> None:
        with pytest.raises(FormatMismatch, match="Content_Types"):
            check("docx", make_odt())

    def test_ods_bytes_under_odt(self) -> None:
        ods = make_odt(mimetype=b"application/vnd.oasis.opendocument.spreadsheet")

        with pytest.raises(FormatMismatch, match="mimetype"):
            check("odt", ods)

    def test_an_odt_whose_mimetype_is_not_the_first_entry(self) -> None:
        reordered = make_zip([("content.xml", b"<x/>"), ("mimetype", ODT_MIME)])

        with pytest.raises(FormatMismatch, match="mimetype"):
            check("odt", reordered)

    def test_xlsx_bytes_under_docx(self, xlsx_bytes: bytes) -> None:
        with pytest.raises(FormatMismatch, match="word/"):
            check("docx", xlsx_bytes)

    def test_pptx_bytes_under_xlsx(self, pptx_bytes: bytes) -> None:
        with pytest.raises(FormatMismatch, match="xl/"):
            check("xlsx", pptx_bytes)

    def test_text_under_docx(self) -> None:
        with pytest.raises(FormatMismatch):
            check("docx", b"just some text, not a document\n" * 10)

    def test_a_docx_cut_short_before_its_central_directory(
        self, docx_bytes: bytes
    ) -> None:
        truncated = docx_bytes[: len(docx_bytes) // 2]

        with pytest.raises(FormatMismatch, match="complete"):
            check("docx", truncated)

    def test_a_docx_missing_only_its_last_bytes(self, docx_bytes: bytes) -> None:
        with pytest.raises(FormatMismatch, match="complete"):
            check("docx", docx_bytes[:-10])

    def test_a_large_zip_without_content_types_when_the_directory_is_unseen(
        self,
    ) -> None:
        entries = [(f"word/{'n' * 60}{i:05}.xml", b"") for i in range(700)]

        with pytest.raises(FormatMismatch, match="Content_Types"):
            check("docx", make_zip(entries))

    @pytest.mark.parametrize("extension", ["docx", "pdf", "doc", "odt", "xml", "rtf"])
    def test_an_empty_file(self, extension: str) -> None:
        with pytest.raises(FormatMismatch, match="empty"):
            check(extension, b"")

    def test_an_empty_zip_under_docx(self) -> None:
        with pytest.raises(FormatMismatch):
            check("docx", make_zip([]))

    def test_a_pdf_without_its_end_marker(self) -> None:
        with pytest.raises(FormatMismatch, match="EOF"):
            check("pdf", SMALL_PDF.replace(b"%%EOF", b""))

    def test_a_pdf_header_after_the_first_kilobyte(self) -> None:
        with pytest.raises(FormatMismatch, match="PDF"):
            check("pdf", b" " * 1024 + SMALL_PDF)

    def test_docx_bytes_under_doc(self, docx_bytes: bytes) -> None:
        with pytest.raises(FormatMismatch, match="OLE"):
            check("doc", docx_bytes)

    def test_an_ole_header_too_short_to_be_a_file(self) -> None:
        with pytest.raises(FormatMismatch, match="OLE"):
            check("xls", OLE_MAGIC + bytes(100))

    def test_ole_bytes_under_docx(self) -> None:
        with pytest.raises(FormatMismatch):
            check("docx", make_ole())

    def test_rtf_bytes_under_doc_are_refused(self) -> None:
        # Pins today's behaviour: the DS would open this, we refuse it.
        with pytest.raises(FormatMismatch):
            check("doc", b"{\\rtf1\\ansi saved as .doc by a web app}")

    def test_hwp_accepts_ole_and_refuses_other_bytes(self) -> None:
        check("hwp", make_ole())

        # Pins today's behaviour: HWP 3 files are not OLE and are refused.
        with pytest.raises(FormatMismatch):
            check("hwp", b"HWP Document File V3.00 \x1a\x01\x02\x03\x04\x05")

    @pytest.mark.parametrize(
        ("extension", "data"),
        [
            ("txt", b"PK\x03\x04rest of a zip"),
            ("txt", SMALL_PDF),
            ("csv", OLE_MAGIC + b"abc"),
            ("txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
            ("md", b"text with a NUL\x00 inside"),
            ("txt", b"\xfd\xfe\x01\x02\x03 bytes that are no text"),
            ("html", bytes(range(256))),
        ],
    )
    def test_binary_bytes_under_a_text_format(
        self, extension: str, data: bytes
    ) -> None:
        with pytest.raises(FormatMismatch, match="binary"):
            check(extension, data)

    def test_xml_that_does_not_start_with_a_tag(self) -> None:
        with pytest.raises(FormatMismatch, match="<"):
            check("xml", b"name,value\nspreadsheet,1\n")

    def test_rtf_without_its_signature(self) -> None:
        with pytest.raises(FormatMismatch, match="signature"):
            check("rtf", b"plain text named .rtf")

    def test_djvu_without_its_signature(self) -> None:
        with pytest.raises(FormatMismatch, match="signature"):
            check("djvu", SMALL_PDF)

    @given(st.binary(min_size=1, max_size=8192))
    def test_random_bytes_without_the_zip_magic_are_no_docx(self, data: bytes) -> None:
        assume(not data.startswith((b"PK\x03\x04", b"PK\x05\x06")))

        with pytest.raises(FormatMismatch):
            check("docx", data)

    @given(st.binary(min_size=1, max_size=8192))
    def test_random_bytes_without_the_pdf_header_are_no_pdf(self, data: bytes) -> None:
        assume(b"%PDF-" not in data[:1024])

        with pytest.raises(FormatMismatch):
            check("pdf", data)


@given(
    st.sampled_from(sorted(FORMATS)),
    st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", OLE_MAGIC, b"%PDF-"]),
    st.binary(max_size=2048),
    st.sampled_from([b"", b"PK\x05\x06", b"PK\x01\x02", b"%%EOF"]),
    st.binary(max_size=64),
)
def test_any_bytes_are_accepted_or_refused_as_a_mismatch_never_a_crash(
    extension: str, magic: bytes, body: bytes, marker: bytes, end: bytes
) -> None:
    data = magic + body + marker + end

    with contextlib.suppress(FormatMismatch):
        check(extension, data)


def test_a_damaged_central_directory_falls_back_to_the_byte_search() -> None:
    entries = [("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"")]
    data = bytearray(make_zip(entries))
    directory = data.index(b"PK\x01\x02")
    # The first entry's name now runs far past the directory.
    data[directory + 28 : directory + 30] = b"\xff\xff"

    check("docx", bytes(data))


class TestBlankDocument:
    @pytest.mark.parametrize(
        ("extension", "opener"),
        [
            ("docx", docx.Document),
            ("xlsx", openpyxl.load_workbook),
            ("pptx", pptx.Presentation),
        ],
    )
    def test_office_blanks_pass_the_check_and_reopen_in_their_library(
        self, extension: str, opener: Callable[[IO[bytes]], object]
    ) -> None:
        data = blank_document(extension)

        check(extension, data)
        assert opener(io.BytesIO(data)) is not None

    def test_a_blank_word_document_has_no_paragraph_text(self) -> None:
        document = docx.Document(io.BytesIO(blank_document("docx")))

        assert "".join(p.text for p in document.paragraphs) == ""
        assert document.core_properties.author == ""

    def test_a_blank_workbook_has_one_empty_sheet(self) -> None:
        workbook = openpyxl.load_workbook(io.BytesIO(blank_document("xlsx")))

        assert len(workbook.worksheets) == 1
        assert workbook.active is not None
        assert workbook.active.max_row == 1
        assert workbook.active["A1"].value is None

    def test_a_blank_presentation_has_no_slides(self) -> None:
        presentation = pptx.Presentation(io.BytesIO(blank_document("pptx")))

        assert len(presentation.slides) == 0

    @pytest.mark.parametrize("extension", ["docx", "xlsx", "pptx"])
    def test_blank_documents_are_the_same_bytes_every_time(
        self, extension: str
    ) -> None:
        first = blank_document(extension)

        assert blank_document(extension) == first

    @pytest.mark.parametrize("extension", ["txt", "csv", "md"])
    def test_blank_text_documents_are_empty_and_pass_the_check(
        self, extension: str
    ) -> None:
        data = blank_document(extension)

        assert data == b""
        check(extension, data)

    def test_extensions_are_read_like_file_names(self) -> None:
        assert blank_document(".DOCX") == blank_document("docx")

    @pytest.mark.parametrize("extension", ["pdf", "vsdx", "odt", "doc", "exe", ""])
    def test_formats_without_a_faithful_blank_are_unsupported(
        self, extension: str
    ) -> None:
        with pytest.raises(UnsupportedFormat):
            blank_document(extension)


def test_format_is_frozen() -> None:
    fmt: Format = FORMATS["docx"]

    with pytest.raises(AttributeError):
        fmt.editable = False  # type: ignore[misc]
