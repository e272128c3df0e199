"""The guarded fetcher itself, handed every hostile link: each one refused.

The fetcher is configured as the service configures it, for the stand-in
Document Server's origin on loopback, so private addresses are allowed
and only the origin check and the URL's syntax stand in the way. A link
that goes through the origin and then redirects must be refused too.
Now and then the example is the origin's own link to a real file, which
must be fetched, so the check is seen to be able to fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from docdesk.downloads import Fetcher
from docdesk.errors import DownloadRefused

from .conftest import Counts, examples
from .rig import CAP, Rig, docx
from .urls import hostile_urls


@dataclass
class MemorySink:
    chunks: list[bytes] = field(default_factory=list)

    async def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)


@pytest.fixture(scope="module")
def fetcher(rig: Rig) -> Fetcher:
    return Fetcher([rig.origin.url], max_bytes=CAP, allow_private=True, timeout=10)


def test_the_fetcher_refuses_every_link_off_the_origin(
    rig: Rig, fetcher: Fetcher
) -> None:
    counts = Counts(
        "guarded fetcher refuses links off the origin",
        "url",
        genuine_label="the origin's own links are fetched",
    )
    urls = hostile_urls(rig.origin.url, rig.trap.port)

    @given(
        url=urls,
        how=st.sampled_from(["direct", "direct", "redirected", "genuine"]),
    )
    @examples(share=3)
    def run(url: str, how: str) -> None:
        sink = MemorySink()
        if how == "genuine":
            url = rig.origin.put("genuine/output.docx", docx(url))
        elif how == "redirected":
            url = rig.origin.redirect(url)

        with rig.watch() as seen:
            try:
                rig.portal.call(fetcher.fetch, url, sink)
            except DownloadRefused:
                refused = True
            else:
                refused = False

        counts.off_origin += seen.fetched_off_origin
        assert seen.off_origin == []
        assert seen.trapped == 0
        if how == "genuine":
            counts.genuine += 1
            counts.genuine_seen += bool(sink.chunks) and not refused
            assert not refused
            assert sink.chunks
        else:
            counts.tried += 1
            assert refused, f"fetched {url!r}"
            assert sink.chunks == []
            expected = ["/redirect/"] if how == "redirected" else []
            assert [path[:10] for path in seen.origin_requests] == expected
            counts.hold()

    try:
        run()
    finally:
        counts.record()
    assert counts.off_origin == 0
