"""The shell commands, run through click on a real data dir and real files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from docdesk.cli import main
from docdesk.formats import blank_document

UNKNOWN_ID = "0123456789abcdef"
# python-docx takes a while to make one; every upload may share it.
DOCX = blank_document("docx")


class Shell:
    """``docdesk`` with its environment, as a user would type it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str) -> Result:
        runner = CliRunner(env=self.env)
        return runner.invoke(main, list(args), catch_exceptions=False)

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    def upload(self, path: Path) -> str:
        result = self("upload", str(path))
        assert result.exit_code == 0, result.stderr
        return result.stdout.split("\t")[0]


@pytest.fixture(autouse=True)
def _no_docdesk_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own DOCDESK_* settings must not reach their database."""
    for name in list(os.environ):
        if name.startswith("DOCDESK_"):
            monkeypatch.delenv(name)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder, where exports land by default."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def shell(tmp_path: Path, workdir: Path) -> Shell:
    return Shell({"DOCDESK_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    return folder


@pytest.fixture
def report(files: Path) -> Path:
    path = files / "report.docx"
    path.write_bytes(DOCX)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class TestUpload:
    def test_an_uploaded_file_is_listed_with_its_bytes(
        self, shell: Shell, report: Path
    ) -> None:
        result = shell("upload", str(report))

        document_id, title, version = result.stdout.strip().split("\t")
        [listed] = shell.json("list")["documents"]
        assert result.exit_code == 0
        assert (title, version) == ("report.docx", "1")
        assert listed["id"] == document_id
        assert listed["title"] == "report.docx"
        assert listed["version"] == 1
        assert listed["size"] == report.stat().st_size
        assert listed["sha256"] == sha256(report.read_bytes())

    def test_a_bad_file_among_several_fails_but_the_good_ones_are_kept(
        self, shell: Shell, files: Path
    ) -> None:
        good = [files / "a.docx", files / "b.docx"]
        for path in good:
            path.write_bytes(DOCX)
        fake = files / "fake.docx"
        fake.write_bytes(b"not a zip package")
        missing = files / "missing.docx"

        result = shell("upload", str(good[0]), str(missing), str(fake), str(good[1]))

        titles = {d["title"] for d in shell.json("list")["documents"]}
        assert result.exit_code == 1
        assert f"docdesk: {missing}: " in result.stderr
        assert f"docdesk: {fake}: " in result.stderr
        assert len(result.stdout.splitlines()) == 2
        assert titles == {"a.docx", "b.docx"}


class TestList:
    def test_the_table_shows_each_document_whole(
        self, shell: Shell, files: Path
    ) -> None:
        path = files / "[bold]quarterly figures for the board.docx"
        path.write_bytes(DOCX)
        document_id = shell.upload(path)

        result = shell("list")

        assert result.exit_code == 0
        assert document_id in result.stdout
        assert "[bold]quarterly figures for the board.docx" in result.stdout

    def test_an_empty_library_gives_empty_json(self, shell: Shell) -> None:
        listed = shell.json("list")

        assert listed == {"documents": []}


class TestVersionsAndRestore:
    def test_restore_adds_a_copy_as_the_newest_version(
        self, shell: Shell, report: Path
    ) -> None:
        document_id = shell.upload(report)

        restored = shell("restore", document_id, "1")

        versions = shell.json("versions", document_id)["versions"]
        assert restored.exit_code == 0
        assert restored.stdout.strip() == "2"
        assert [v["version"] for v in versions] == [1, 2]
        assert [v["source"] for v in versions] == ["upload", "restore"]
        assert versions[1]["restored_from"] == 1
        assert versions[1]["sha256"] == versions[0]["sha256"]

    def test_the_table_names_the_source_of_each_version(
        self, shell: Shell, report: Path
    ) -> None:
        document_id = shell.upload(report)
        shell("restore", document_id, "1")

        result = shell("versions", document_id)

        assert result.exit_code == 0
        assert "restore of v1" in result.stdout
        assert sha256(report.read_bytes())[:12] in result.stdout

    def test_restoring_a_version_that_does_not_exist_fails(
        self, shell: Shell, report: Path
    ) -> None:
        document_id = shell.upload(report)

        result = shell("restore", document_id, "7")

        assert result.exit_code == 1
        assert result.stderr.startswith("docdesk: ")
        assert "no version 7" in result.stderr

    def test_versions_of_an_unknown_document_fail(self, shell: Shell) -> None:
        result = shell("versions", UNKNOWN_ID, "--json")

        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr.startswith("docdesk: ")


class TestExport:
    def test_the_file_has_the_same_bytes(
        self, shell: Shell, report: Path, workdir: Path
    ) -> None:
        document_id = shell.upload(report)

        result = shell("export", document_id, "-o", "copy.docx")

        assert result.exit_code == 0
        assert sha256((workdir / "copy.docx").read_bytes()) == sha256(
            report.read_bytes()
        )

    def test_without_output_it_is_named_for_the_title_here(
        self, shell: Shell, report: Path, workdir: Path
    ) -> None:
        document_id = shell.upload(report)

        result = shell("export", document_id)

        assert result.exit_code == 0
        assert (workdir / "report.docx").read_bytes() == report.read_bytes()

    def test_an_existing_file_is_kept_without_force(
        self, shell: Shell, report: Path, workdir: Path
    ) -> None:
        document_id = shell.upload(report)
        (workdir / "copy.docx").write_bytes(b"keep me")

        result = shell("export", document_id, "-o", "copy.docx")

        assert result.exit_code == 1
        assert "--force" in result.stderr
        assert (workdir / "copy.docx").read_bytes() == b"keep me"
        assert sorted(p.name for p in workdir.iterdir()) == ["copy.docx"]

    def test_force_overwrites_an_existing_file(
        self, shell: Shell, report: Path, workdir: Path
    ) -> None:
        document_id = shell.upload(report)
        (workdir / "copy.docx").write_bytes(b"replace me")

        result = shell("export", document_id, "-o", "copy.docx", "--force")

        assert result.exit_code == 0
        assert (workdir / "copy.docx").read_bytes() == report.read_bytes()

    def test_dash_writes_the_bytes_to_stdout(self, shell: Shell, report: Path) -> None:
        document_id = shell.upload(report)

        result = shell("export", document_id, "-o", "-")

        assert result.exit_code == 0
        assert result.stdout_bytes == report.read_bytes()

    def test_a_damaged_blob_fails_and_leaves_no_file(
        self, shell: Shell, report: Path, workdir: Path, tmp_path: Path
    ) -> None:
        document_id = shell.upload(report)
        [blob] = (tmp_path / "data" / "blobs").rglob("*.docx")
        blob.chmod(0o600)
        blob.write_bytes(bytes(blob.stat().st_size))

        result = shell("export", document_id, "-o", "copy.docx")

        assert result.exit_code == 1
        assert "damaged" in result.stderr
        assert list(workdir.iterdir()) == []

    def test_an_unknown_document_fails_with_a_message(
        self, shell: Shell, workdir: Path
    ) -> None:
        result = shell("export", UNKNOWN_ID)

        assert result.exit_code == 1
        assert result.stderr == f"docdesk: no document {UNKNOWN_ID}\n"
        assert list(workdir.iterdir()) == []


class TestMigrate:
    @pytest.fixture
    def database(self, tmp_path: Path) -> Shell:
        url = f"sqlite+aiosqlite:///{tmp_path / 'outside.sqlite3'}"
        return Shell(
            {"DOCDESK_DATA_DIR": str(tmp_path / "data"), "DOCDESK_DATABASE_URL": url}
        )

    def test_a_database_behind_is_refused_with_exit_status_2(
        self, database: Shell
    ) -> None:
        result = database("list")

        assert result.exit_code == 2
        assert "docdesk migrate" in result.stderr

    def test_it_reports_the_pending_revision_then_up_to_date(
        self, database: Shell
    ) -> None:
        first = database("migrate")
        second = database("migrate")

        assert first.exit_code == 0
        assert "pending revisions: 0001, 0002" in first.stdout
        assert first.stdout.rstrip().endswith("up to date")
        assert second.exit_code == 0
        assert "pending revisions" not in second.stdout
        assert second.stdout.rstrip().endswith("up to date")
        assert database.json("list") == {"documents": []}


def test_serve_help_still_works(shell: Shell) -> None:
    result = shell("serve", "--help")

    assert result.exit_code == 0
    assert "--port" in result.stdout
