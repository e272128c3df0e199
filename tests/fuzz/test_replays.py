"""Replays of a genuine save: the first one writes, no copy of it writes again.

The DS retries a callback it thinks failed, signing it afresh; an attacker
who saw one can send it again, with one token or both, or to another
document's link. Each example makes a genuine save, checks that it wrote,
then replays it one to four ways, checking that none of them writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from .callbacks import Request, check_hostile, save_fields, send, signed
from .conftest import Counts, examples
from .rig import Rig

REPLAYS = (
    "exactly",
    "without the header",
    "without the body token",
    "re-signed with fresh times",
    "to the other document's link",
    "after a newer save",
)


@dataclass(frozen=True)
class Replay:
    status: int
    how: tuple[str, ...]


def test_replays_of_a_genuine_save_write_once(rig: Rig) -> None:
    counts = Counts("replayed genuine saves", "callback")

    @given(
        replay=st.builds(
            Replay,
            status=st.sampled_from([2, 6]),
            how=st.lists(st.sampled_from(REPLAYS), min_size=1, max_size=4),
        )
    )
    # Every example is a real save, fsync and all: the costliest kind.
    @examples(share=0.5)
    def run(replay: Replay) -> None:
        fields = save_fields(rig, rig.current_key(rig.target), replay.status)
        original = signed(rig, rig.target.callback_url, fields)
        with rig.watch() as seen:
            response = send(rig, original)
        counts.observe(seen, genuine=True)
        assert response.json() == {"error": 0}
        assert seen.wrote

        for how in replay.how:
            request = _replayed(rig, original, fields, how)
            with rig.watch() as seen:
                response = send(rig, request)
            counts.observe(seen)
            check_hostile(seen, response)
            if how != "to the other document's link":
                # Done already: the DS must hear success, or it retries.
                assert response.json() == {"error": 0}
            counts.hold()

    try:
        run()
    finally:
        counts.record()
    assert counts.writes == 0
    assert counts.off_origin == 0


def _replayed(rig: Rig, original: Request, fields: dict[str, Any], how: str) -> Request:
    body = json.loads(original.body)
    match how:
        case "exactly":
            return original
        case "without the header":
            return Request(original.url, original.body, {})
        case "without the body token":
            body.pop("token")
            return Request(original.url, json.dumps(body).encode(), original.headers)
        case "re-signed with fresh times":
            # What the DS itself sends on a retry it thinks failed.
            return signed(rig, original.url, fields)
        case "to the other document's link":
            return Request(rig.other.callback_url, original.body, original.headers)
        case "after a newer save":
            newer = save_fields(rig, rig.current_key(rig.target), 6)
            response = send(rig, signed(rig, rig.target.callback_url, newer))
            assert response.json() == {"error": 0}
            return original
    raise AssertionError(how)
