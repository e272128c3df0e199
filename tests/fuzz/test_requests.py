"""Hostile requests to the JSON API and the DS-facing file links.

Bad document ids in every path, JSON bodies that are oversized, deeply
nested or not objects, and uploads that are decompression bombs, damaged
packages, oversized or oddly named. No answer may be a 5xx, nothing may be
fetched, and nothing may be written except a well-formed upload, which is
then kept byte for byte: docdesk checks a package's layout and never
inflates it, so a bomb stays as small as it came.
"""

from __future__ import annotations

import functools
import io
import json
import secrets
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import Counts, examples
from .rig import CAP, Rig, Seen, docx

MiB = 1024 * 1024

# Routes that take a document id, with a body that would be fine for them.
ROUTES = (
    ("GET", "/api/documents/{id}"),
    ("DELETE", "/api/documents/{id}"),
    ("GET", "/api/documents/{id}/content"),
    ("GET", "/api/documents/{id}/versions"),
    ("POST", "/api/documents/{id}/versions"),
    ("GET", "/api/documents/{id}/versions/1/content"),
    ("POST", "/api/documents/{id}/versions/1/restore"),
    ("GET", "/api/documents/{id}/editor-config?user_id=1&user_name=Ann"),
    ("GET", "/api/documents/{id}/callbacks"),
    ("POST", "/api/documents/{id}/capture"),
    ("GET", "/api/documents/{id}/history"),
    ("GET", "/api/documents/{id}/history/1"),
    ("POST", "/api/documents/{id}/rename"),
    ("POST", "/api/documents/{id}/copy"),
    ("GET", "/ds/documents/{id}/file?key={key}&sig={sig}"),
    ("GET", "/ds/documents/{id}/versions/1/file?sig={sig}"),
    ("GET", "/ds/documents/{id}/versions/1/changes?sig={sig}"),
    ("POST", "/ds/documents/{id}/callback?sig={sig}"),
)


# Where every route that takes a document id begins.
DOCUMENT_ROUTES = ("/api/documents/", "/ds/documents/")


def _bad_ids(rig: Rig) -> st.SearchStrategy[str]:
    """Ids of no document: mangled real ones, traversal, and any text at all."""
    real = rig.target.id
    mangled = [
        real.upper(),
        real + "0",
        real[:-1],
        real[::-1],
        f"../{real}",
        f"{real}%00",
        f"{real}%2F..",
        "%2e%2e",
        "%2e%2e%2f%2e%2e%2fapi",
        "..",
        ".",
        "0" * 16,
        "f" * 16,
        real + "%0A",
        f"%20{real}",
        f"{real};",
        # Escaped: a bare "?" or "#" would end the path at the client, and a
        # DELETE would then remove the real document.
        f"{real}%3F",
        f"{real}%23",
        "%" + real,
    ]
    return st.one_of(
        st.sampled_from(mangled),
        st.text(max_size=80).map(lambda text: quote(text, safe="")),
        st.text(max_size=40).map(lambda text: quote(text, safe="/.%")),
        st.from_regex(r"[0-9a-f]{16}", fullmatch=True).filter(
            lambda value: value not in (rig.target.id, rig.other.id)
        ),
    )


def _request(rig: Rig, method: str, path: str) -> httpx.Response:
    if path.endswith("/versions") and method == "POST":
        return rig.request(
            method, path, files={"file": ("v.docx", docx("a new version"))}
        )
    if method == "POST":
        return rig.request(method, path, json={"title": "Renamed.docx"})
    return rig.request(method, path)


def check_refused(seen: Seen, response: httpx.Response, method: str = "POST") -> None:
    """No 5xx, and no success but a GET that names no document.

    An empty id, or "." (which the client resolves away, as a browser
    does), leaves the document list's path; dot segments can also resolve
    out of the document routes altogether, to a page with no id in it.
    """
    assert response.status_code < 500, response.text
    if response.status_code < 300:
        sent = response.request.url.path
        assert method == "GET", (method, sent)
        assert sent == "/api/documents" or not sent.startswith(DOCUMENT_ROUTES), sent
    assert not seen.wrote, seen.changes()
    assert seen.origin_requests == []
    assert seen.off_origin == []
    assert seen.trapped == 0
    assert seen.leaks == []


def test_bad_document_ids_in_paths_change_nothing(rig: Rig) -> None:
    counts = Counts("bad document ids in paths", "request")

    @given(
        route=st.sampled_from(ROUTES),
        document_id=_bad_ids(rig),
        sig=st.one_of(st.just("real"), st.text(max_size=40)),
    )
    @examples(share=2)
    def run(route: tuple[str, str], document_id: str, sig: str) -> None:
        method, template = route
        key = rig.current_key(rig.target)
        if sig == "real":
            sig = rig.target.signature
        path = template.format(id=document_id, key=quote(key), sig=quote(sig))
        rig.remember(rig.target.signature)

        with rig.watch() as seen:
            response = _request(rig, method, path)

        counts.observe(seen)
        check_refused(seen, response, method)
        counts.hold()

    try:
        run()
    finally:
        counts.record()
    assert counts.writes == 0


# JSON bodies


def _nested(depth: int, opener: str) -> str:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return opener * depth + "0" * (opener != "[") + closer * depth


@st.composite
def hostile_json(draw: st.DrawFn) -> bytes:
    """Bodies the JSON endpoints must refuse with a 400."""
    kind = draw(
        st.sampled_from(
            [
                "nested title",
                "nested top",
                "oversized",
                "not an object",
                "not JSON",
                "huge number title",
                "binary",
            ]
        )
    )
    depth = draw(st.integers(1, 40_000))
    opener = draw(st.sampled_from(["[", '{"a":']))
    if kind == "nested title":
        return ('{"title": ' + _nested(depth, opener) + "}").encode()
    if kind == "nested top":
        return ("[" * depth + "]" * depth).encode()
    if kind == "oversized":
        extra = draw(st.integers(1, 200_000))
        return ('{"title": "' + "x" * (65_536 + extra) + '.docx"}').encode()
    if kind == "not an object":
        value = draw(
            st.one_of(
                st.lists(st.integers()),
                st.text(),
                st.none(),
                st.floats(allow_nan=False),
                st.booleans(),
            )
        )
        return json.dumps(value).encode()
    if kind == "huge number title":
        return b'{"title": 1' + b"0" * draw(st.integers(4300, 20_000)) + b"}"
    if kind == "binary":
        return draw(st.binary(max_size=300)).replace(b"{", b"").replace(b"[", b"")
    return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass") + b"{"


def test_hostile_json_bodies_are_refused_without_a_write(rig: Rig) -> None:
    counts = Counts("oversized, nested and malformed JSON bodies", "request")

    @given(
        body=hostile_json(),
        path=st.sampled_from(
            ["/api/documents/new", "{target}/rename", "{target}/copy"]
        ),
    )
    @examples(share=1)
    def run(body: bytes, path: str) -> None:
        path = path.format(target=f"/api/documents/{rig.target.id}")
        with rig.watch() as seen:
            response = rig.request(
                "POST", path, content=body, headers={"Content-Type": "application/json"}
            )
        counts.observe(seen)
        check_refused(seen, response)
        counts.hold()

    try:
        run()
    finally:
        counts.record()
    assert counts.writes == 0


@pytest.mark.parametrize("depth", [1_000, 30_000])
@pytest.mark.parametrize("route", ["/api/documents/new", "rename", "copy"])
def test_json_nested_past_the_recursion_limit_is_a_400_not_a_crash(
    rig: Rig, route: str, depth: int
) -> None:
    # Regression: json.loads raised RecursionError, which became a 500.
    path = route if route.startswith("/") else f"/api/documents/{rig.target.id}/{route}"
    body = ('{"title": ' + "[" * depth + "]" * depth + "}").encode()

    with rig.watch() as seen:
        response = rig.request(
            "POST", path, content=body, headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert not seen.wrote, seen.changes()


# Uploads


_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
CONTENT_TYPES = b'<?xml version="1.0"?><Types/>'


@functools.cache
def _deflated_zeros(mib: int) -> tuple[bytes, int]:
    """``mib`` MiB of zeros, raw-deflated, and their CRC."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block, crc, packed = bytes(MiB), 0, []
    for _ in range(mib):
        packed.append(packer.compress(block))
        crc = zlib.crc32(block, crc)
    packed.append(packer.flush())
    return b"".join(packed), crc


def _package(entries: list[tuple[str, bytes, int, int, int]], copies: int = 1) -> bytes:
    """A zip by hand: (name, data, method, crc, size) entries, then the last
    entry listed ``copies`` times in the central directory, all at one
    offset: the overlapping-files bomb, whose directory multiplies one
    compressed stream without storing it again."""
    out, central = io.BytesIO(), []
    for name, data, method, crc, size in entries:
        offset = out.tell()
        raw = name.encode()
        out.write(
            _LOCAL.pack(
                b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size, len(raw), 0
            )
        )
        out.write(raw + data)
        central.append((raw, data, method, crc, size, offset))
    central += [
        (central[-1][0] + b".%d" % copy, *central[-1][1:]) for copy in range(copies - 1)
    ]
    start = out.tell()
    for raw, data, method, crc, size, offset in central:
        out.write(
            _CENTRAL.pack(
                b"PK\x01\x02",
                20,
                20,
                0,
                method,
                0,
                0,
                crc,
                len(data),
                size,
                len(raw),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
        )
        out.write(raw)
    directory = out.tell() - start
    out.write(
        _END.pack(b"PK\x05\x06", 0, 0, len(central), len(central), directory, start, 0)
    )
    return out.getvalue()


def _bomb(mib: int, copies: int = 1, lie: int | None = None) -> bytes:
    data, crc = _deflated_zeros(mib)
    size = (mib * MiB) if lie is None else lie
    types = (
        "[Content_Types].xml",
        CONTENT_TYPES,
        0,
        zlib.crc32(CONTENT_TYPES),
        len(CONTENT_TYPES),
    )
    body = ("word/document.xml", data, zipfile.ZIP_DEFLATED, crc, size)
    return _package([types, body], copies)


def _nested_bomb(mib: int) -> bytes:
    inner = _bomb(mib)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as package:
        package.writestr("[Content_Types].xml", CONTENT_TYPES)
        package.writestr("word/document.xml", "<w:document/>")
        for index in range(3):
            package.writestr(f"word/embeddings/bomb{index}.zip", inner)
    return out.getvalue()


@dataclass(frozen=True)
class Upload:
    kind: str
    name: str
    content: bytes
    well_formed: bool


NAMES = (
    "Bomb.docx",
    "../../etc/passwd.docx",
    "..\\..\\boot.docx",
    "C:\\x\\y.docx",
    "a\x00b.docx",
    "\u202etxt.docx",
    "x" * 400 + ".docx",
    ".docx",
    "docx",
    "",
    "Report.DOCX",
    "Report.docx.exe",
    "Report.odt",
    "Report.xlsx",
    "Report",
)


@st.composite
def uploads(draw: st.DrawFn) -> Upload:
    kind = draw(
        st.sampled_from(
            [
                "deflate bomb",
                "overlapping bomb",
                "lying sizes",
                "nested bombs",
                "cut short",
                "no content types",
                "random bytes",
                "oversized",
                "plain",
            ]
        )
    )
    mib = draw(st.sampled_from([1, 16, 64]))
    if kind == "deflate bomb":
        content = _bomb(mib)
    elif kind == "overlapping bomb":
        content = _bomb(mib, copies=draw(st.integers(2, 200)))
    elif kind == "lying sizes":
        content = _bomb(1, lie=draw(st.sampled_from([0, 1, 0xFFFFFFFF, 2**31])))
    elif kind == "nested bombs":
        content = _nested_bomb(mib)
    elif kind == "cut short":
        whole = _bomb(mib)
        content = whole[: draw(st.integers(0, len(whole) - 1))]
    elif kind == "no content types":
        data, crc = _deflated_zeros(mib)
        content = _package([("word/document.xml", data, 8, crc, mib * MiB)])
    elif kind == "random bytes":
        content = draw(st.binary(max_size=5000))
    elif kind == "oversized":
        content = docx("big") + secrets.token_bytes(CAP + draw(st.integers(1, 50_000)))
    else:
        content = docx("plain")
    well_formed = kind in (
        "deflate bomb",
        "overlapping bomb",
        "lying sizes",
        "nested bombs",
        "plain",
    )
    return Upload(kind, draw(st.sampled_from(NAMES)), content, well_formed)


def _stored(seen: Seen) -> list[bytes]:
    assert seen.before is not None
    assert seen.after is not None
    new = set(seen.after.files) - set(seen.before.files)
    return [Path(name).read_bytes() for name, _, _ in new]


def test_uploads_of_bombs_and_damaged_packages(rig: Rig) -> None:
    counts = Counts(
        "uploads: zip bombs, damaged, oversized, odd names",
        "upload",
        genuine_label="well-formed packages (bombs too) are kept byte for byte",
    )
    accepted = 0

    @given(upload=uploads(), into=st.sampled_from(["new document", "new version"]))
    @examples(share=1)
    def run(upload: Upload, into: str) -> None:
        path = "/api/documents"
        if into == "new version":
            path = f"/api/documents/{rig.target.id}/versions"

        with rig.watch() as seen:
            response = rig.request(
                "POST", path, files={"file": (upload.name, upload.content)}
            )

        nonlocal accepted
        counts.tried += 1
        counts.off_origin += seen.fetched_off_origin
        assert response.status_code < 500, response.text
        assert seen.off_origin == []
        assert seen.trapped == 0
        assert not seen.origin_requests
        assert seen.leaks == []
        if response.status_code == 201:
            # Kept byte for byte: never inflated, never rewritten.
            assert upload.well_formed, upload.kind
            assert _stored(seen) == [upload.content]
            accepted += 1
        else:
            assert response.status_code >= 400
            counts.writes += seen.wrote
            assert not seen.wrote, seen.changes()
        counts.hold()

    try:
        run()
    finally:
        counts.record(f" accepted as well-formed={accepted}")
    assert counts.writes == 0


def test_a_bomb_is_stored_as_small_as_it_came(rig: Rig) -> None:
    bomb = _bomb(64, copies=100)

    with rig.watch() as seen:
        response = rig.upload("Bomb.docx", bomb)

    assert response.status_code == 201
    assert len(bomb) < CAP
    assert _stored(seen) == [bomb]
