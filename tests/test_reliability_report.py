"""How scripts/reliability_report.py judges the suites' counts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "reliability_report.py"
PASSED = {"tests": 10, "failed": 0, "errors": 0, "skipped": 0, "seconds": 60.0}


@pytest.fixture(scope="module")
def report() -> ModuleType:
    """The script as a module: it is not on the path, and not a package."""
    spec = importlib.util.spec_from_file_location("reliability_report", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _tally(folder: Path, *entries: dict[str, Any]) -> Path:
    folder.mkdir(exist_ok=True)
    with (folder / "suites.jsonl").open("a") as out:
        for entry in entries:
            out.write(json.dumps({"detail": "", "at": 0.0, **entry}) + "\n")
    return folder


def _kills(tried: int, in_path: int) -> list[dict[str, Any]]:
    """What the crash suite records: a row per check, and the counted row."""
    checks = [
        {"suite": "crash", "check": f"check {n}", "tried": tried, "held": tried}
        for n in range(5)
    ]
    counted = {
        "suite": "crash",
        "check": "every check held after a kill inside the save path",
        "tried": in_path,
        "held": in_path,
        "unit": "kill in the save path",
    }
    return [*({**check, "unit": "kill"} for check in checks), counted]


def _target(report: ModuleType, folder: Path, name: str) -> Any:
    checks = report.read_tallies(folder)
    return next(t for t in report.judge(checks, []) if t.name == name)


class TestKills:
    def test_each_kill_counts_once_toward_the_target(
        self, report: ModuleType, tmp_path: Path
    ) -> None:
        folder = _tally(tmp_path / "tally", *_kills(tried=120, in_path=110))

        target = _target(report, folder, "saves kept across kills")

        assert target.met is False
        assert target.measured == "110 of 110 held"
        assert target.shortfall == "390 tries short of 500"

    def test_five_hundred_kills_in_the_save_path_meet_it(
        self, report: ModuleType, tmp_path: Path
    ) -> None:
        folder = _tally(tmp_path / "tally", *_kills(tried=540, in_path=500))

        target = _target(report, folder, "saves kept across kills")

        assert target.met is True

    def test_the_report_still_shows_every_check(
        self, report: ModuleType, tmp_path: Path
    ) -> None:
        folder = _tally(tmp_path / "tally", *_kills(tried=540, in_path=500))
        checks = report.read_tallies(folder)

        text = report.render(PASSED, checks, [], report.judge(checks, []), quick=True)

        assert all(f"| check {n} | 540 | 540 | kill |" in text for n in range(5))


class TestHostileCallbacks:
    def test_genuine_saves_mixed_in_do_not_count(
        self, report: ModuleType, tmp_path: Path
    ) -> None:
        hostile = {"suite": "fuzz", "check": "hostile", "unit": "callback"}
        genuine = {"suite": "fuzz", "check": "genuine", "unit": "genuine save"}
        folder = _tally(
            tmp_path / "tally",
            {**hostile, "tried": 9_000, "held": 9_000},
            {**genuine, "tried": 2_000, "held": 2_000},
        )

        target = _target(
            report, folder, "hostile callbacks without a write or an off-origin fetch"
        )

        assert target.met is False
        assert target.measured == "9,000 of 9,000 held"


class TestExitStatus:
    def test_a_target_not_measured_fails_the_full_run(self, report: ModuleType) -> None:
        targets = report.judge([], [])

        status = report.exit_status(PASSED, targets, quick=False)

        assert {t.met for t in targets} == {None}
        assert status == 1

    def test_a_preview_lets_a_target_go_unmeasured(self, report: ModuleType) -> None:
        targets = report.judge([], [])

        assert report.exit_status(PASSED, targets, quick=True) == 0

    def test_a_missed_target_fails_a_preview_too(
        self, report: ModuleType, tmp_path: Path
    ) -> None:
        folder = _tally(tmp_path / "tally", *_kills(tried=12, in_path=10))
        targets = report.judge(report.read_tallies(folder), [])

        assert report.exit_status(PASSED, targets, quick=True) == 1

    def test_not_measured_shows_as_such_in_the_full_report(
        self, report: ModuleType
    ) -> None:
        targets = report.judge([], [])

        text = report.render(PASSED, [], [], targets, quick=False)

        assert "| **not measured** |" in text
        assert "| yes |" not in text
