"""What the reliability suites tried and what held, for docs/reliability.md.

A suite calls :func:`record` once per property it checks. The counts go to
``$DOCDESK_TALLY_DIR/<suite>.jsonl`` when that variable is set (the report's
command sets it) and nowhere otherwise, so a plain test run writes nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TALLY_DIR = "DOCDESK_TALLY_DIR"


def record(
    suite: str,
    check: str,
    *,
    tried: int,
    held: int,
    unit: str,
    detail: str = "",
) -> None:
    """Note that ``check`` was tried ``tried`` times and held ``held`` times.

    ``unit`` names what one try is ("kill", "callback", "upload"); ``detail``
    says anything a reader of the report needs, such as a figure measured.
    """
    folder = os.environ.get(TALLY_DIR)
    if not folder:
        return
    line = {
        "suite": suite,
        "check": check,
        "tried": tried,
        "held": held,
        "unit": unit,
        "detail": detail,
        "at": time.time(),
    }
    path = Path(folder) / f"{suite}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")
