from __future__ import annotations

import csv
import io
import itertools
import json
import random
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import IO, Protocol

import docx
import openpyxl
import pptx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from docdesk.errors import FormatMismatch, UnsupportedFormat
from docdesk.formats import blank_document, check_bytes, format_for
from docdesk.simulator.edits import (
    INPUT_LIMITS,
    Change,
    apply_changes,
    changes_archive,
    history,
    read_text,
)

OFFICE = ["docx", "xlsx", "pptx"]
EDITABLE = [*OFFICE, "txt", "md", "csv"]
# Formats whose read_text rows carry the author's name after a tab.
WITH_AUTHOR = {"xlsx", "csv"}

USERS = {
    "ann": ("u-ann", "Ann Lee"),
    "bob": ("u-bob", "Bob Ortiz"),
    "cyd": ("u-cyd", "Cyd Mårtensson"),
}
START = datetime(2026, 3, 29, 10, 15, 2, tzinfo=UTC)
SHA = "9f" * 32
LONG_TEXT = ("The quick brown fox jumps over the lazy dog. " * 2300)[:100_000]
XLSX_CELL_LIMIT = 32_767


def change(user: str, text: str, minute: int = 0) -> Change:
    user_id, user_name = USERS[user]
    return Change(user_id, user_name, text, START + timedelta(minutes=minute))


def interleaved() -> list[Change]:
    return [
        change("ann", "Ann opens", 0),
        change("bob", "Bob replies", 1),
        change("ann", "Ann again", 2),
        change("cyd", "Cyd closes", 3),
        change("bob", "Bob signs off", 4),
    ]


def expected(file_type: str, changes: Sequence[Change]) -> list[str]:
    """What read_text shows for changes written on a blank document."""
    if file_type in WITH_AUTHOR:
        return [f"{c.text}\t{c.user_name}" for c in changes]
    return [c.text for c in changes]


def check(file_type: str, data: bytes) -> None:
    """check_bytes, called the way the save path calls it."""
    check_bytes(format_for(file_type), data[:4096], data[-65_557:], len(data))


class Savable(Protocol):
    def save(self, file: IO[bytes]) -> None: ...


def saved(document: Savable) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def replaced(package: bytes, name: str, data: bytes) -> bytes:
    """The zip with one entry's bytes swapped for others."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(package)) as source,
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            swapped = data if info.filename == name else source.read(info)
            target.writestr(info.filename, swapped)
    return buffer.getvalue()


def with_custom_part(package: bytes) -> bytes:
    """The package with a custom XML part the libraries do not model."""
    with zipfile.ZipFile(io.BytesIO(package)) as source:
        rels = source.read("_rels/.rels")
    relationship = (
        b'<Relationship Id="rIdCustom" Target="customXml/item9.xml" Type="'
        b"http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
        b'customXml"/></Relationships>'
    )
    linked = replaced(
        package, "_rels/.rels", rels.replace(b"</Relationships>", relationship)
    )

    buffer = io.BytesIO(linked)
    with zipfile.ZipFile(buffer, "a") as target:
        target.writestr("customXml/item9.xml", b"<data>kept?</data>")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def blanks() -> dict[str, bytes]:
    return {file_type: blank_document(file_type) for file_type in EDITABLE}


@pytest.fixture(scope="module")
def report_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Sales went up.")
    table = document.add_table(rows=2, cols=2)
    for (row, column), text in {(0, 0): "a", (0, 1): "b", (1, 0): "c"}.items():
        table.cell(row, column).text = text
    return saved(document)


@pytest.fixture(scope="module")
def stock_xlsx() -> bytes:
    workbook = openpyxl.Workbook()
    data = workbook.active
    data.title = "Stock"
    data.append(["item", "count"])
    data.append(["pen", 3])
    notes = workbook.create_sheet("Notes")
    notes["A1"] = "keep dry"
    workbook.active = notes
    return saved(workbook)


@pytest.fixture(scope="module")
def talk_pptx() -> bytes:
    presentation = pptx.Presentation()
    opening = presentation.slides.add_slide(presentation.slide_layouts[0])
    opening.shapes.title.text = "Welcome"
    opening.placeholders[1].text = "to docdesk"
    agenda = presentation.slides.add_slide(presentation.slide_layouts[1])
    agenda.shapes.title.text = "Agenda"
    agenda.placeholders[1].text = "Edits\nSaves"
    return saved(presentation)


class TestDocx:
    def test_each_change_becomes_a_paragraph_in_order(
        self, blanks: dict[str, bytes]
    ) -> None:
        changes = interleaved()

        edited = apply_changes("docx", blanks["docx"], changes)

        document = docx.Document(io.BytesIO(edited))
        assert [p.text for p in document.paragraphs] == [c.text for c in changes]

    def test_existing_paragraphs_and_tables_are_kept_before_the_changes(
        self, report_docx: bytes
    ) -> None:
        changes = [change("ann", "Costs went down.")]

        edited = apply_changes("docx", report_docx, changes)

        document = docx.Document(io.BytesIO(edited))
        assert [p.text for p in document.paragraphs] == [
            "Quarterly report",
            "Sales went up.",
            "Costs went down.",
        ]
        assert document.tables[0].cell(1, 0).text == "c"
        assert read_text("docx", edited) == [
            "Quarterly report",
            "Sales went up.",
            "a\tb",
            "c",
            "Costs went down.",
        ]

    def test_last_author_and_time_become_the_last_modified_properties(
        self, blanks: dict[str, bytes]
    ) -> None:
        changes = interleaved()

        edited = apply_changes("docx", blanks["docx"], changes)

        properties = docx.Document(io.BytesIO(edited)).core_properties
        assert properties.last_modified_by == "Bob Ortiz"
        assert properties.modified == datetime(2026, 3, 29, 10, 19, 2, tzinfo=UTC)

    def test_tabs_and_line_breaks_survive_inside_a_paragraph(
        self, blanks: dict[str, bytes]
    ) -> None:
        text = "name:\tAnn\nrole:\tauthor"

        edited = apply_changes("docx", blanks["docx"], [change("ann", text)])

        assert read_text("docx", edited) == [text]


class TestXlsx:
    def test_each_change_becomes_a_row_of_text_and_author(
        self, blanks: dict[str, bytes]
    ) -> None:
        changes = interleaved()

        edited = apply_changes("xlsx", blanks["xlsx"], changes)

        sheet = openpyxl.load_workbook(io.BytesIO(edited)).worksheets[0]
        rows = [list(row) for row in sheet.iter_rows(values_only=True)]
        assert rows == [[c.text, c.user_name] for c in changes]

    def test_rows_go_under_the_data_of_the_first_sheet_even_if_another_is_active(
        self, stock_xlsx: bytes
    ) -> None:
        changes = [change("bob", "ink")]

        edited = apply_changes("xlsx", stock_xlsx, changes)

        workbook = openpyxl.load_workbook(io.BytesIO(edited))
        stock, notes = workbook.worksheets
        assert [list(row) for row in stock.iter_rows(values_only=True)] == [
            ["item", "count"],
            ["pen", 3],
            ["ink", "Bob Ortiz"],
        ]
        assert [list(row) for row in notes.iter_rows(values_only=True)] == [
            ["keep dry"]
        ]
        assert read_text("xlsx", edited) == [
            "item\tcount",
            "pen\t3",
            "ink\tBob Ortiz",
            "keep dry",
        ]

    def test_text_that_looks_like_a_formula_stays_text_across_sessions(
        self, blanks: dict[str, bytes]
    ) -> None:
        first = apply_changes("xlsx", blanks["xlsx"], [change("ann", "=SUM(A1:A3)")])

        second = apply_changes("xlsx", first, [change("bob", "=1/0")])

        cells = [row[0] for row in openpyxl.load_workbook(io.BytesIO(second)).active]
        assert [(c.value, c.data_type) for c in cells] == [
            ("=SUM(A1:A3)", "s"),
            ("=1/0", "s"),
        ]

    def test_last_author_and_time_become_the_last_modified_properties(
        self, blanks: dict[str, bytes]
    ) -> None:
        changes = interleaved()

        edited = apply_changes("xlsx", blanks["xlsx"], changes)

        properties = openpyxl.load_workbook(io.BytesIO(edited)).properties
        assert properties.lastModifiedBy == "Bob Ortiz"
        assert properties.modified == datetime(2026, 3, 29, 10, 19, 2)

    def test_text_longer_than_a_cell_holds_is_cut_at_excels_limit(
        self, blanks: dict[str, bytes]
    ) -> None:
        edited = apply_changes("xlsx", blanks["xlsx"], [change("ann", LONG_TEXT)])

        cell = openpyxl.load_workbook(io.BytesIO(edited)).active["A1"]
        assert cell.value == LONG_TEXT[:XLSX_CELL_LIMIT]


class TestPptx:
    def test_each_change_becomes_a_title_only_slide(
        self, blanks: dict[str, bytes]
    ) -> None:
        changes = interleaved()

        edited = apply_changes("pptx", blanks["pptx"], changes)

        slides = list(pptx.Presentation(io.BytesIO(edited)).slides)
        assert [s.shapes.title.text for s in slides] == [c.text for c in changes]
        assert {s.slide_layout.name for s in slides} == {"Title Only"}
        assert all(len(s.shapes) == 1 for s in slides)

    def test_existing_slides_are_kept_before_the_new_ones(
        self, talk_pptx: bytes
    ) -> None:
        changes = [change("cyd", "Questions")]

        edited = apply_changes("pptx", talk_pptx, changes)

        assert read_text("pptx", edited) == [
            "Welcome to docdesk",
            "Agenda Edits Saves",
            "Questions",
        ]

    def test_a_textbox_holds_the_text_when_no_layout_has_only_a_title(
        self, blanks: dict[str, bytes]
    ) -> None:
        presentation = pptx.Presentation(io.BytesIO(blanks["pptx"]))
        layouts = presentation.slide_layouts
        layouts.remove(layouts.get_by_name("Title Only"))
        base = saved(presentation)

        edited = apply_changes("pptx", base, [change("ann", "Boxed")])

        slide = pptx.Presentation(io.BytesIO(edited)).slides[0]
        assert slide.slide_layout.name == "Blank"
        assert slide.shapes.title is None
        assert [shape.text_frame.text for shape in slide.shapes] == ["Boxed"]

    def test_last_author_and_time_become_the_last_modified_properties(
        self, blanks: dict[str, bytes]
    ) -> None:
        changes = interleaved()

        edited = apply_changes("pptx", blanks["pptx"], changes)

        properties = pptx.Presentation(io.BytesIO(edited)).core_properties
        assert properties.last_modified_by == "Bob Ortiz"
        assert properties.modified == datetime(2026, 3, 29, 10, 19, 2)


class TestPartsTheLibrariesDoNotModel:
    @pytest.mark.parametrize("file_type", ["docx", "pptx"])
    def test_parts_the_library_does_not_model_are_kept(
        self, file_type: str, blanks: dict[str, bytes]
    ) -> None:
        base = with_custom_part(blanks[file_type])

        edited = apply_changes(file_type, base, [change("ann", "x")])

        with zipfile.ZipFile(io.BytesIO(edited)) as package:
            assert package.read("customXml/item9.xml") == b"<data>kept?</data>"

    def test_openpyxl_drops_parts_it_does_not_model(
        self, blanks: dict[str, bytes]
    ) -> None:
        base = with_custom_part(blanks["xlsx"])

        edited = apply_changes("xlsx", base, [change("ann", "x")])

        # Pins the XXX in _apply_xlsx: python-docx and python-pptx keep them.
        with zipfile.ZipFile(io.BytesIO(edited)) as package:
            assert "customXml/item9.xml" not in package.namelist()


class TestTextFiles:
    def test_a_line_is_added_after_a_last_line_without_a_line_break(self) -> None:
        base = b"first line"

        edited = apply_changes("txt", base, [change("ann", "second line")])

        assert edited == b"first line\nsecond line\n"

    def test_windows_line_breaks_are_kept(self) -> None:
        base = b"one\r\ntwo\r\n"

        edited = apply_changes("md", base, [change("ann", "# three")])

        assert edited == b"one\r\ntwo\r\n# three\r\n"
        assert read_text("md", edited) == ["one", "two", "# three"]

    def test_a_legacy_8_bit_file_is_written_back_as_utf8(self) -> None:
        base = "café crème\n".encode("cp1252")

        edited = apply_changes("txt", base, [change("cyd", "smörgåsbord ✓")])

        assert edited.decode("utf-8") == "café crème\nsmörgåsbord ✓\n"

    def test_a_utf16_file_stays_utf16(self) -> None:
        base = "first\n".encode("utf-16")

        edited = apply_changes("txt", base, [change("ann", "second")])

        assert edited.decode("utf-16") == "first\nsecond\n"
        assert edited.startswith((b"\xff\xfe", b"\xfe\xff"))

    def test_csv_text_with_commas_quotes_and_line_breaks_stays_one_field(
        self, blanks: dict[str, bytes]
    ) -> None:
        text = 'a, "quoted"\nvalue'

        edited = apply_changes("csv", blanks["csv"], [change("ann", text)])

        records = list(csv.reader(io.StringIO(edited.decode(), newline="")))
        assert records == [[text, "Ann Lee"]]

    def test_csv_records_are_comma_separated_whatever_the_base_uses(self) -> None:
        base = b"item;count\npen;3\n"

        edited = apply_changes("csv", base, [change("bob", "ink")])

        assert edited == b"item;count\npen;3\nink,Bob Ortiz\n"


class TestEveryFormat:
    @pytest.mark.parametrize("file_type", EDITABLE)
    def test_interleaved_changes_of_several_users_all_appear_in_order(
        self, file_type: str, blanks: dict[str, bytes]
    ) -> None:
        changes = interleaved()

        edited = apply_changes(file_type, blanks[file_type], changes)

        assert read_text(file_type, edited) == expected(file_type, changes)

    @pytest.mark.parametrize("file_type", EDITABLE)
    def test_a_second_session_keeps_the_first_sessions_edits(
        self, file_type: str, blanks: dict[str, bytes]
    ) -> None:
        first = [change("ann", "from session one"), change("bob", "also one")]
        second = [change("cyd", "from session two", 60)]
        after_first = apply_changes(file_type, blanks[file_type], first)

        after_second = apply_changes(file_type, after_first, second)

        assert read_text(file_type, after_second) == expected(file_type, first + second)

    @pytest.mark.parametrize("file_type", EDITABLE)
    def test_the_output_passes_the_save_paths_format_check(
        self, file_type: str, blanks: dict[str, bytes]
    ) -> None:
        edited = apply_changes(file_type, blanks[file_type], interleaved())

        check(file_type, edited)

    @pytest.mark.parametrize("file_type", EDITABLE)
    def test_the_same_changes_on_the_same_base_make_the_same_bytes(
        self, file_type: str, blanks: dict[str, bytes]
    ) -> None:
        first = apply_changes(file_type, blanks[file_type], interleaved())

        again = apply_changes(file_type, blanks[file_type], interleaved())

        assert first == again

    @pytest.mark.parametrize("file_type", EDITABLE)
    def test_no_changes_leave_the_text_as_it_was(
        self, file_type: str, blanks: dict[str, bytes]
    ) -> None:
        base = apply_changes(file_type, blanks[file_type], interleaved())

        edited = apply_changes(file_type, base, [])

        assert read_text(file_type, edited) == read_text(file_type, base)

    @pytest.mark.parametrize("file_type", EDITABLE)
    def test_unicode_and_xml_special_characters_come_back_unchanged(
        self, file_type: str, blanks: dict[str, bytes]
    ) -> None:
        changes = [change("cyd", "<b>&amp; \"Zoë\" & 'Łódź' 東京 🚀</b>")]

        edited = apply_changes(file_type, blanks[file_type], changes)

        assert read_text(file_type, edited) == expected(file_type, changes)

    @pytest.mark.parametrize("file_type", EDITABLE)
    def test_control_characters_xml_cannot_hold_are_dropped(
        self, file_type: str, blanks: dict[str, bytes]
    ) -> None:
        changes = [change("ann", "before\x00\x07\x1b\ufffeafter")]

        edited = apply_changes(file_type, blanks[file_type], changes)

        assert read_text(file_type, edited) == expected(
            file_type, [change("ann", "beforeafter")]
        )
        check(file_type, edited)

    @pytest.mark.parametrize("file_type", ["docx", "pptx", "txt", "md", "csv"])
    def test_100_kb_of_text_comes_back_whole(
        self, file_type: str, blanks: dict[str, bytes]
    ) -> None:
        changes = [change("bob", LONG_TEXT)]

        edited = apply_changes(file_type, blanks[file_type], changes)

        assert read_text(file_type, edited) == expected(file_type, changes)

    @pytest.mark.parametrize("file_name", ["Report.DOCX", ".docx", "docx"])
    def test_the_file_type_may_be_a_file_name_or_an_extension(
        self, file_name: str, blanks: dict[str, bytes]
    ) -> None:
        edited = apply_changes(file_name, blanks["docx"], [change("ann", "hi")])

        assert read_text(file_name, edited) == ["hi"]

    @pytest.mark.parametrize("file_type", ["odt", "pdf", "xlsm", "doc"])
    def test_formats_the_simulator_cannot_edit_are_refused(
        self, file_type: str
    ) -> None:
        with pytest.raises(UnsupportedFormat, match=file_type):
            apply_changes(file_type, b"whatever", [change("ann", "x")])
        with pytest.raises(UnsupportedFormat, match=file_type):
            read_text(file_type, b"whatever")

    def test_an_unknown_extension_is_refused(self) -> None:
        with pytest.raises(UnsupportedFormat):
            apply_changes("exe", b"MZ", [])


class TestCorruptBases:
    @pytest.mark.parametrize("file_type", OFFICE)
    def test_random_bytes_are_refused_as_a_format_mismatch(
        self, file_type: str
    ) -> None:
        noise = random.Random(7).randbytes(5000)

        with pytest.raises(FormatMismatch, match=file_type):
            apply_changes(file_type, noise, [change("ann", "x")])

    @pytest.mark.parametrize("file_type", OFFICE)
    def test_a_truncated_file_is_refused_as_a_format_mismatch(
        self, file_type: str, blanks: dict[str, bytes]
    ) -> None:
        truncated = blanks[file_type][: len(blanks[file_type]) // 2]

        with pytest.raises(FormatMismatch, match="complete"):
            apply_changes(file_type, truncated, [change("ann", "x")])
        with pytest.raises(FormatMismatch, match="complete"):
            read_text(file_type, truncated)

    @pytest.mark.parametrize(
        ("file_type", "part"),
        [
            ("docx", "word/document.xml"),
            ("xlsx", "xl/workbook.xml"),
            ("pptx", "ppt/presentation.xml"),
        ],
    )
    def test_a_package_with_broken_xml_is_refused_as_a_format_mismatch(
        self, file_type: str, part: str, blanks: dict[str, bytes]
    ) -> None:
        broken = replaced(blanks[file_type], part, b"<unclosed")
        check(file_type, broken)

        with pytest.raises(FormatMismatch, match=f"not a readable .{file_type}"):
            apply_changes(file_type, broken, [change("ann", "x")])
        with pytest.raises(FormatMismatch, match=f"not a readable .{file_type}"):
            read_text(file_type, broken)

    @pytest.mark.parametrize(
        ("file_type", "part"),
        [
            ("docx", "word/document.xml"),
            ("xlsx", "xl/workbook.xml"),
            ("pptx", "ppt/presentation.xml"),
        ],
    )
    def test_a_package_inflating_past_the_input_limit_is_never_parsed(
        self, file_type: str, part: str, blanks: dict[str, bytes]
    ) -> None:
        # Blank spaces compress about a thousandfold: a bomb of a few hundred KiB.
        bomb = replaced(blanks[file_type], part, b" " * (INPUT_LIMITS[file_type] + 1))

        with pytest.raises(FormatMismatch, match="input limit"):
            apply_changes(file_type, bomb, [change("ann", "x")])
        with pytest.raises(FormatMismatch, match="input limit"):
            read_text(file_type, bomb)

    @pytest.mark.parametrize(
        ("file_type", "other"), [("docx", "xlsx"), ("pptx", "docx")]
    )
    def test_another_office_format_under_the_extension_is_refused(
        self, file_type: str, other: str, blanks: dict[str, bytes]
    ) -> None:
        with pytest.raises(FormatMismatch):
            apply_changes(file_type, blanks[other], [change("ann", "x")])

    def test_a_binary_file_as_text_is_refused(self) -> None:
        with pytest.raises(FormatMismatch, match="binary"):
            apply_changes("txt", b"\x00\x01\x02binary", [change("ann", "x")])


class TestHistory:
    def test_runs_of_one_author_collapse_into_one_entry(self) -> None:
        changes = [
            change("ann", "1", 0),
            change("ann", "2", 1),
            change("bob", "3", 2),
            change("ann", "4", 3),
        ]

        built = history(changes, server_version="9.3.0", base_sha256=SHA)

        assert built == {
            "serverVersion": "9.3.0",
            "changes": [
                {
                    "documentSha256": SHA,
                    "created": "2026-03-29 10:16:02",
                    "user": {"id": "u-ann", "name": "Ann Lee"},
                },
                {
                    "documentSha256": SHA,
                    "created": "2026-03-29 10:17:02",
                    "user": {"id": "u-bob", "name": "Bob Ortiz"},
                },
                {
                    "documentSha256": SHA,
                    "created": "2026-03-29 10:18:02",
                    "user": {"id": "u-ann", "name": "Ann Lee"},
                },
            ],
        }

    def test_times_are_given_in_utc_whatever_the_changes_zone(self) -> None:
        paris = timezone(timedelta(hours=2))
        moment = datetime(2026, 3, 29, 0, 30, 0, tzinfo=paris)
        changes = [Change("u-ann", "Ann Lee", "x", moment)]

        built = history(changes, server_version="9.3.0", base_sha256=SHA)

        assert built["changes"][0]["created"] == "2026-03-28 22:30:00"

    def test_no_changes_make_an_empty_list(self) -> None:
        built = history([], server_version="9.3.0", base_sha256=SHA)

        assert built == {"serverVersion": "9.3.0", "changes": []}

    @given(st.lists(st.sampled_from(sorted(USERS)), max_size=30))
    def test_there_is_one_entry_per_switch_of_author(self, authors: list[str]) -> None:
        changes = [change(user, "x", minute) for minute, user in enumerate(authors)]
        switches = sum(1 for a, b in itertools.pairwise(authors) if a != b)

        built = history(changes, server_version="1", base_sha256=SHA)

        assert len(built["changes"]) == (switches + 1 if authors else 0)
        ids = [entry["user"]["id"] for entry in built["changes"]]
        assert all(a != b for a, b in itertools.pairwise(ids))

    def test_a_naive_change_time_is_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            Change("u-ann", "Ann Lee", "x", datetime(2026, 3, 29, 10, 0))


class TestChangesArchive:
    def test_the_archive_holds_the_changes_and_their_history(self) -> None:
        changes = interleaved()

        archive = changes_archive(changes, server_version="9.3.0", base_sha256=SHA)

        with zipfile.ZipFile(io.BytesIO(archive)) as package:
            assert package.testzip() is None
            assert package.namelist() == ["changes.json", "changesHistory.json"]
            records = json.loads(package.read("changes.json"))
            stored_history = json.loads(package.read("changesHistory.json"))
        assert records[1] == {
            "created": "2026-03-29 10:16:02",
            "user": {"id": "u-bob", "name": "Bob Ortiz"},
            "change": "Bob replies",
        }
        assert [record["change"] for record in records] == [c.text for c in changes]
        assert stored_history == history(
            changes, server_version="9.3.0", base_sha256=SHA
        )

    def test_without_the_base_hash_history_entries_carry_none(self) -> None:
        archive = changes_archive(interleaved(), server_version="9.3.0")

        with zipfile.ZipFile(io.BytesIO(archive)) as package:
            stored_history = json.loads(package.read("changesHistory.json"))
        assert len(stored_history["changes"]) == 5
        assert not any("documentSha256" in entry for entry in stored_history["changes"])

    def test_identical_input_makes_identical_bytes(self) -> None:
        first = changes_archive(interleaved(), server_version="9.3.0", base_sha256=SHA)

        again = changes_archive(interleaved(), server_version="9.3.0", base_sha256=SHA)

        assert first == again
        with zipfile.ZipFile(io.BytesIO(first)) as package:
            assert {info.date_time for info in package.infolist()} == {
                (1980, 1, 1, 0, 0, 0)
            }

    def test_any_text_makes_valid_json(self) -> None:
        changes = [change("ann", "nul\x00 lone\ud800 surrogate 東京")]

        archive = changes_archive(changes, server_version="9.3.0")

        with zipfile.ZipFile(io.BytesIO(archive)) as package:
            records = json.loads(package.read("changes.json"))
        assert records[0]["change"] == "nul\x00 lone\ud800 surrogate 東京"
