"""Real office files for the integration tests, each with its own content."""

from __future__ import annotations

import functools
import io
import zipfile
from xml.sax.saxutils import escape

import docx
import openpyxl

__all__ = ["PDF", "make_docx", "make_odt", "make_xlsx", "padded_docx"]

_PLACEHOLDER = "@@TEXT@@"
# A whole, tiny PDF: header, one empty page, trailer.
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def make_docx(text: str) -> bytes:
    """A docx saying ``text``: python-docx's file with the words swapped in.

    python-docx takes 80 ms a document; swapping one part of a package it
    made once takes a millisecond and gives the same kind of file.
    """
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(_docx_template())) as template,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package,
    ):
        for entry in template.infolist():
            data = template.read(entry)
            if entry.filename == "word/document.xml":
                data = data.replace(_PLACEHOLDER.encode(), escape(text).encode())
            package.writestr(entry, data)
    return out.getvalue()


@functools.cache
def _docx_template() -> bytes:
    document = docx.Document()
    document.add_paragraph(_PLACEHOLDER)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def padded_docx(text: str, size: int) -> bytes:
    """A valid docx of at least ``size`` bytes: the padding is a stored part."""
    out = io.BytesIO(make_docx(text))
    with zipfile.ZipFile(out, "a") as package:
        package.writestr(
            zipfile.ZipInfo("word/media/padding.bin"), b"\0" * size, zipfile.ZIP_STORED
        )
    return out.getvalue()


def make_xlsx(value: str) -> bytes:
    workbook = openpyxl.Workbook()
    workbook.active["A1"] = value
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def make_odt(text: str) -> bytes:
    """An OpenDocument text: ``mimetype`` first and stored, as ODF requires."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr(
            zipfile.ZipInfo("mimetype"),
            "application/vnd.oasis.opendocument.text",
            zipfile.ZIP_STORED,
        )
        package.writestr(
            "META-INF/manifest.xml",
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:'
            'xmlns:manifest:1.0" manifest:version="1.2">'
            '<manifest:file-entry manifest:full-path="/" manifest:media-type='
            '"application/vnd.oasis.opendocument.text"/>'
            '<manifest:file-entry manifest:full-path="content.xml" '
            'manifest:media-type="text/xml"/></manifest:manifest>',
        )
        package.writestr(
            "content.xml",
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<office:document-content xmlns:office="urn:oasis:names:tc:'
            'opendocument:xmlns:office:1.0" xmlns:text="urn:oasis:names:tc:'
            'opendocument:xmlns:text:1.0" office:version="1.2"><office:body>'
            f"<office:text><text:p>{text}</text:p></office:text>"
            "</office:body></office:document-content>",
        )
    return out.getvalue()
