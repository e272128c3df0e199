"""SIGKILL ``docdesk serve`` at random instants of a save; nothing is lost.

Each round edits one document in the simulator (its own process, so its
retries outlive the kill), waits for docdesk to start downloading the
edited file, kills docdesk a random delay later, restarts it on the same
data dir and port, and lets the simulator's retries finish. The delays are
spread over a whole save, measured first: the throttled download, the
write, the fsync, the link, the changes archive, the catalog commit and the
answer. After each kill:

- the current version is whole: its bytes, read through the API, hash to
  the sha256 the catalog recorded, and it is the old or the new edit;
- the staging folder holds only temporaries, which the store's own sweep
  removes; a blob file no version names is left only by a kill between
  the link and the catalog commit;
- once the retries are done, the edit is stored exactly once.

Each kill's phase comes from the killed process's own log. A kill after the
answer is checked too but tests nothing of the save path, so it does not
count: ``DOCDESK_CRASH_KILLS`` sets how many kills land inside the save path
(40 by default), and the kills after the answer come on top.
"""

from __future__ import annotations

import math
import os
import random
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tally import record

from .processes import Output
from .rig import Edit, Rig, large_docx, running_rig, sha256

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("DOCDESK_CRASH_KILLS", "40"))
# 8 MiB/s: the 1 MiB edited file takes about an eighth of a second to come.
RATE = 8 * 1024 * 1024
CALIBRATION_SAVES = 5
# Past the typical save, so that some kills land after the answer too.
WINDOW_MARGIN = 1.1
SEED = int(os.environ.get("DOCDESK_CRASH_SEED", "0")) or random.randrange(1, 2**31)

DOWNLOADED = re.compile(r"download url=\S*/output\.docx .*outcome=ok")
BLOB_COMMITTED = re.compile(r"blob committed name=documents/\S+\.docx ")
SAVED = r"callback document=.* outcome=saved"

PHASES = (
    "download",
    "fsync and link",
    "changes and catalog commit",
    "after commit, before the answer",
    "after the answer",
)
SAVE_PATH = PHASES[:4]
# Kills after the answer come on top of KILLS; this many times KILLS in all
# means the window no longer covers the save.
MOST_KILLS = 2
# A part of the save path is asserted to get a share of the kills that is
# this much smaller than the calibrated save says (the calibration is a few
# saves on a shared machine, each kill's process a fresh one), and that
# misses it only once in a million runs by chance. A part too short to
# expect a kill at this volume is asserted nothing.
SHARE_SLACK = 2
BY_CHANCE = 1e-6


CHECKS = {
    "whole": "the current version is whole right after the restart",
    "old or new": "the current version is the old or the new edit",
    "once": "the edit is stored exactly once once the retries are done",
    "temporaries": "staging holds only temporaries, which the store's sweep removes",
    "orphans": "a blob no version names comes only from a kill in link-to-commit",
}


@dataclass
class Kill:
    """One kill: where it fell and which checks held after it."""

    delay: float
    phase: str
    held: dict[str, bool]
    # From the kill until the new process answered.
    restart: float


@dataclass(frozen=True)
class Shape:
    """A typical save's marks, in seconds from the start of its download.

    When the download ended, when the blob was linked and when the save was
    logged, just before the answer.
    """

    downloaded: float
    linked: float
    saved: float

    def parts(self, window: float) -> dict[tuple[str, ...], float]:
        """The share of the delays each part of the save path covers.

        The log marks no instant between the catalog commit and the answer,
        so the two phases after the link make one part.
        """
        return {
            PHASES[:1]: self.downloaded / window,
            PHASES[1:2]: (self.linked - self.downloaded) / window,
            PHASES[2:4]: (self.saved - self.linked) / window,
        }

    def __str__(self) -> str:
        return (
            f"a save took {self.saved * 1000:.0f} ms: downloaded at"
            f" {self.downloaded * 1000:.0f}, linked at {self.linked * 1000:.0f}"
        )


def test_no_save_is_lost_or_corrupted_when_docdesk_is_killed_mid_save(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    kills: list[Kill] = []
    started = time.monotonic()
    with running_rig(tmp_path, rate=RATE) as rig:
        document_id = rig.service.upload("Crash.docx", large_docx("the original"))["id"]
        shape = _measure_a_save(rig, document_id)
        window = WINDOW_MARGIN * shape.saved
        orphans = 0
        while len(_in_save_path(kills)) < KILLS:
            assert len(kills) < MOST_KILLS * KILLS, "most kills came after the answer"
            delay = rng.uniform(0, window)
            kill, orphans = _kill_one_save(
                rig, document_id, f"edit {len(kills)}", delay, orphans
            )
            kills.append(kill)
        versions = rig.service.versions(document_id)
        whole = [_is_whole(rig, document_id, v) for v in versions]
        left = rig.staging()
        swept = rig.sweep_staging()
        after_sweep = rig.staging()
        swept_orphans = rig.sweep_orphans()
        unnamed = rig.blob_files() - rig.catalog_blobs()
    elapsed = time.monotonic() - started

    in_path = _in_save_path(kills)
    shares = _shares(kills, shape.parts(window))
    detail = (
        f"{_summary(kills, window, elapsed)}; {shape}; kills in each part of the"
        f" save path, got (least asserted): {_describe(shares)}; {len(left)}"
        f" temporaries left for the store's sweep, {orphans} blobs that no"
        f" version names ({swept_orphans} removed by the orphan sweep)"
    )
    print(detail)
    for check, meaning in CHECKS.items():
        held = sum(kill.held[check] for kill in kills)
        record(
            "crash",
            meaning,
            tried=len(kills),
            held=held,
            unit="kill",
            detail="every kill, those after the answer too",
        )
    # The target counts each kill once, and only those inside the save path.
    record(
        "crash",
        "every check held after a kill inside the save path",
        tried=len(in_path),
        held=sum(all(kill.held.values()) for kill in in_path),
        unit="kill in the save path",
        detail=detail,
    )
    record(
        "crash",
        "every version is whole after the kills",
        tried=len(versions),
        held=sum(whole),
        unit="version",
        detail=f"seed {SEED}",
    )
    failed = [
        (n, k.phase, c) for n, k in enumerate(kills) for c in CHECKS if not k.held[c]
    ]
    assert failed == [], f"seed {SEED}"
    assert [v["version"] for v in versions] == list(
        range(1, len(kills) + CALIBRATION_SAVES + 2)
    )
    assert all(whole)
    assert (swept, after_sweep) == (len(left), [])
    assert (swept_orphans, unnamed) == (orphans, set())
    assert [part for part, (got, least) in shares.items() if got < least] == [], (
        _describe(shares)
    )


def _in_save_path(kills: list[Kill]) -> list[Kill]:
    return [kill for kill in kills if kill.phase in SAVE_PATH]


def _shares(
    kills: list[Kill], parts: dict[tuple[str, ...], float]
) -> dict[tuple[str, ...], tuple[int, int]]:
    """For each part of the save path: the kills it got, and the least it may.

    The delays are uniform over the window, so the kills a part gets follow
    a binomial law on the share of the window it covers.
    """
    phases = Counter(kill.phase for kill in kills)
    return {
        part: (
            sum(phases[phase] for phase in part),
            _least_by_chance(len(kills), share / SHARE_SLACK),
        )
        for part, share in parts.items()
    }


def _least_by_chance(tries: int, share: float) -> int:
    """The fewest hits ``tries`` at ``share`` fall short of once in a million."""
    if share <= 0:
        return 0
    share = min(share, 1.0)
    below = 0.0
    for hits in range(tries + 1):
        # In logarithms: at hundreds of tries the binomial factor overflows.
        below += math.exp(
            math.lgamma(tries + 1)
            - math.lgamma(hits + 1)
            - math.lgamma(tries - hits + 1)
            + hits * math.log(share)
            + (tries - hits) * math.log1p(-share)
        )
        if below > BY_CHANCE:
            return hits
    return tries


def _describe(shares: dict[tuple[str, ...], tuple[int, int]]) -> str:
    return ", ".join(
        f"{' + '.join(part)}: {got} ({least})" for part, (got, least) in shares.items()
    )


def _summary(kills: list[Kill], window: float, elapsed: float) -> str:
    phases = Counter(kill.phase for kill in kills)
    return (
        f"seed {SEED}; delays 0-{window * 1000:.0f} ms after the download began; "
        + ", ".join(f"{phase}: {phases[phase]}" for phase in PHASES)
        + f"; {len(kills) / elapsed * 60:.1f} kills a minute, restarts in"
        f" {statistics.median(k.restart for k in kills) * 1000:.0f} ms (median,"
        " noisy)"
    )


def _measure_a_save(rig: Rig, document_id: str) -> Shape:
    """A typical save, from the download's start to the answer.

    Also says when, in a typical save, the download ended and the blob was
    linked: the kills fall into the phases in about those proportions.
    """
    marks: list[tuple[float, float, float]] = []
    for n in range(CALIBRATION_SAVES):
        edit = rig.begin_save(document_id, f"calibration {n}")
        began = rig.download_started(edit)
        output = rig.service.current
        assert output is not None
        saved = output.wait_for(SAVED, since=edit.lines_mark)
        downloaded = output.wait_for(DOWNLOADED.pattern, since=edit.lines_mark)
        linked = output.wait_for(BLOB_COMMITTED.pattern, since=edit.lines_mark)
        marks.append((downloaded.at - began, linked.at - began, saved.at - began))
        assert any(a["success"] for a in rig.settled(edit.key))
    downloaded, linked, saved = (statistics.median(m) for m in zip(*marks, strict=True))
    return Shape(downloaded, linked, saved)


def _kill_one_save(
    rig: Rig, document_id: str, text: str, delay: float, orphans_before: int
) -> tuple[Kill, int]:
    """Kill docdesk ``delay`` after it began downloading an edit; check after.

    Returns the kill and the number of blobs no version names, for the next.
    """
    # The restart then costs the service's start-up, not the imports.
    rig.service.prepare()
    edit = rig.begin_save(document_id, text)
    began = rig.download_started(edit)
    time.sleep(max(0.0, began + delay - time.monotonic()))
    killed_at, killed = datetime.now().astimezone(), time.monotonic()
    output = rig.service.kill()
    rig.service.start()
    restart = time.monotonic() - killed

    # Before the retries, or racing them: a number's bytes never change.
    current = rig.service.document(document_id)
    held = {"whole": _is_whole(rig, document_id, current)}
    held["temporaries"] = all(
        path.suffix == ".tmp" and path.is_file() for path in rig.staging()
    )

    # Fetched while the DS still retries: giving up drops the link.
    edited = sha256(rig.edited_file(rig.first_answer(edit.key)))
    attempts = rig.settled(edit.key)
    held["old or new"] = current["sha256"] in (edit.before["sha256"], edited)
    versions = _versions_once_stored(rig, document_id, edit)
    held["once"] = _stored_once(rig, document_id, edit, versions, edited)
    phase = _phase(output, edit, attempts[0], versions[-1], killed_at)

    # Such a blob loses nothing; the recovery job's orphan sweep removes it
    # once it is an hour old, and the test sweeps at the end.
    orphans = len(rig.blob_files() - rig.catalog_blobs())
    held["orphans"] = orphans == orphans_before or phase in PHASES[1:3]
    return Kill(delay, phase, held, restart), orphans


def _versions_once_stored(
    rig: Rig, document_id: str, edit: Edit, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The versions once a new one came and no retry is still on its way."""
    deadline = time.monotonic() + timeout
    while len(rig.service.versions(document_id)) <= edit.before["version"]:
        assert time.monotonic() < deadline, "the edit was never stored"
        time.sleep(0.05)
    rig.settled(edit.key)
    return rig.service.versions(document_id)


def _stored_once(
    rig: Rig,
    document_id: str,
    edit: Edit,
    versions: list[dict[str, Any]],
    edited: str,
) -> bool:
    """One new version, holding the edit, which no other version holds."""
    return (
        [v["version"] for v in versions] == list(range(1, edit.before["version"] + 2))
        and versions[-1]["sha256"] == edited
        and [v["sha256"] for v in versions].count(edited) == 1
        and _is_whole(rig, document_id, versions[-2])
        and _is_whole(rig, document_id, versions[-1])
    )


def _is_whole(rig: Rig, document_id: str, version: dict[str, Any]) -> bool:
    """Whether the version's bytes, as served, hash to what the catalog says."""
    data = rig.service.content(document_id, version["version"])
    return sha256(data) == version["sha256"] and len(data) == version["size"]


def _phase(
    output: Output,
    edit: Edit,
    first: dict[str, Any],
    newest: dict[str, Any],
    killed_at: datetime,
) -> str:
    """Where in the save the kill fell, from the killed process's own log.

    The log says when the download ended and when the blob was linked and
    synced; the version's creation time says whether the catalog committed
    before the kill; the simulator says whether it heard the answer.
    """
    lines = [line.text for line in output.lines[edit.lines_mark :]]
    if first["success"]:
        return PHASES[4]
    if datetime.fromisoformat(newest["created"]) < killed_at:
        return PHASES[3]
    if any(BLOB_COMMITTED.search(line) for line in lines):
        return PHASES[2]
    if any(DOWNLOADED.search(line) for line in lines):
        return PHASES[1]
    return PHASES[0]
