"""The simulated conversion service, over real HTTP on loopback.

One Starlette app plays both sides: the Document Server's two conversion
endpoints and its ``/cache/files`` links, and the storage the DS downloads
the source files from.
"""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import docx
import httpx
import openpyxl
import pptx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from docdesk import tokens
from docdesk.commands import ConversionError
from docdesk.simulator.cache import LinkError
from docdesk.simulator.config import SimulatorSettings
from docdesk.simulator.conversion import ConversionService, to_xml
from docdesk.simulator.sessions import Simulator

SECRET = "conversion-test-secret-of-32-bytes!"
STARTUP_LIMIT = 10.0
# How long the slow route holds a download, and how long a poll may wait.
SLOW_SECONDS = 0.3
POLL_LIMIT = 5.0
HASTY_TIMEOUT = 0.05
TIGHT_LIMIT = 64


class ConverterHost:
    """The test app on a free 127.0.0.1 port, served by uvicorn in a thread."""

    def __init__(self) -> None:
        self.simulator = Simulator(
            SimulatorSettings(secret=SECRET, download_attempt_delay=0.01)
        )
        self.service = ConversionService(self.simulator)
        # The same DS, but a sync request gives up almost at once.
        self.hasty = ConversionService(self.simulator, timeout=HASTY_TIMEOUT)
        # Another DS, whose downloads are capped at a few bytes.
        self.tight_simulator = Simulator(
            SimulatorSettings(
                secret=SECRET,
                download_attempt_delay=0.01,
                max_download_bytes=TIGHT_LIMIT,
            )
        )
        self.tight = ConversionService(self.tight_simulator)
        self.files: dict[str, bytes] = {}
        self.downloads: list[str] = []

        # With proto 0 asyncio leaves Nagle on for the accepted connections,
        # and every answer waits 40 ms for a delayed ACK.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.bind(("127.0.0.1", 0))
        self._listener = listener
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        config = uvicorn.Config(
            self._app(), log_config=None, access_log=False, lifespan="on", ws="none"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.client = httpx.Client(base_url=self.url, timeout=10, trust_env=False)

    def _app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await self.service.aclose()
            await self.hasty.aclose()
            await self.tight.aclose()
            await self.simulator.aclose()
            await self.tight_simulator.aclose()

        return Starlette(
            routes=[
                Route("/converter", self.service.handle, methods=["POST"]),
                Route(
                    "/ConvertService.ashx", self.service.handle, methods=["GET", "POST"]
                ),
                Route("/hasty/converter", self.hasty.handle, methods=["POST"]),
                Route("/tight/converter", self.tight.handle, methods=["POST"]),
                Route("/cache/files/{path:path}", self._cached_file),
                Route("/files/{name}", self._file),
                Route("/slow/{name}", self._slow_file),
            ],
            lifespan=lifespan,
        )

    async def _file(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.downloads.append(name)
        if name not in self.files:
            return PlainTextResponse("no such file", status_code=404)
        return Response(self.files[name], media_type="application/octet-stream")

    async def _slow_file(self, request: Request) -> Response:
        await asyncio.sleep(SLOW_SECONDS)
        return await self._file(request)

    async def _cached_file(self, request: Request) -> Response:
        try:
            cached = self.simulator.cache.open(
                request.scope["raw_path"].decode(),
                request.query_params.get("md5", ""),
                request.query_params.get("expires", ""),
            )
        except LinkError as exc:
            return PlainTextResponse(str(exc), status_code=exc.status)
        return Response(cached.data, media_type="application/octet-stream")

    def _run(self) -> None:
        asyncio.run(self._server.serve([self._listener]))

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_LIMIT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test app did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.client.close()
        self._server.should_exit = True
        self._thread.join(timeout=STARTUP_LIMIT)
        self._listener.close()

    # Asking the service

    def file_url(self, name: str, *, route: str = "files") -> str:
        return f"{self.url}/{route}/{name}"

    def post(
        self,
        claims: dict[str, Any],
        *,
        path: str = "/converter",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST the claims, signed in the body's token and also sent plain."""
        body = {**claims, "token": tokens.sign(claims, SECRET, expires_in=300)}
        return self.client.post(path, json=body, headers=headers)

    def convert(
        self, claims: dict[str, Any], *, path: str = "/converter"
    ) -> dict[str, Any]:
        """The JSON answer of the endpoint at ``path``."""
        response = self.post(claims, path=path)
        assert response.status_code == 200
        answer: dict[str, Any] = response.json()
        return answer

    def poll(
        self, claims: dict[str, Any], *, path: str = "/converter"
    ) -> dict[str, Any]:
        """Repeat a request until the job ends: done, or failed but not timed out."""
        deadline = time.monotonic() + POLL_LIMIT
        while time.monotonic() < deadline:
            answer = self.convert(claims, path=path)
            ended = answer.get("endConvert") or "error" in answer
            if ended and answer.get("error") != ConversionError.TIMEOUT:
                return answer
            time.sleep(0.02)
        raise AssertionError(f"the conversion never ended: {claims}")

    def fetch(self, file_url: str) -> bytes:
        response = self.client.get(file_url)
        assert response.status_code == 200, response.text
        return response.content


@pytest.fixture(scope="module")
def server() -> Iterator[ConverterHost]:
    started = ConverterHost()
    started.start()
    yield started
    started.stop()


@pytest.fixture
def host(server: ConverterHost) -> ConverterHost:
    """The module's server, with this test's files and downloads only.

    Jobs stay cached for the module's life, so every request gets a key of
    its own from :func:`request_for`.
    """
    server.files.clear()
    server.downloads.clear()
    return server


# Documents made by the office libraries


def make_docx(*paragraphs: str) -> bytes:
    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_xlsx(*rows: list[Any], second_sheet: list[Any] | None = None) -> bytes:
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    if second_sheet is not None:
        workbook.create_sheet("Other").append(second_sheet)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def make_pptx(*titles: str) -> bytes:
    presentation = pptx.Presentation()
    for title in titles:
        slide = presentation.slides.add_slide(presentation.slide_layouts[5])
        slide.shapes.title.text = title
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def docx_paragraphs(data: bytes) -> list[str]:
    return [p.text for p in docx.Document(io.BytesIO(data)).paragraphs]


def request_for(
    host: ConverterHost, name: str, data: bytes, output: str, **extra: Any
) -> dict[str, Any]:
    """Serve ``data`` as ``name`` and return the claims converting it."""
    host.files[name] = data
    return {
        "async": False,
        "filetype": name.rpartition(".")[2],
        "key": f"key-{secrets.token_hex(6)}",
        "outputtype": output,
        "title": f"Report.{name.rpartition('.')[2]}",
        "url": host.file_url(name),
        **extra,
    }


def file_result(response: httpx.Response) -> ET.Element:
    """The ``FileResult`` of an XML answer."""
    # The simulator's own answer on loopback: nothing untrusted is parsed.
    return ET.fromstring(response.content)  # noqa: S314


def tampered(url: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["md5"] = "A" + query["md5"][1:] if query["md5"][0] != "A" else "B"
    return urlunsplit(parts._replace(query=urlencode(query)))


# Answer formats


@pytest.mark.parametrize(
    ("path", "accept", "expected"),
    [
        ("/converter", None, "application/json; charset=UTF-8"),
        ("/converter", "application/xml", "text/xml; charset=UTF-8"),
        ("/converter", "*/*", "application/json; charset=UTF-8"),
        ("/ConvertService.ashx", None, "text/xml; charset=UTF-8"),
        ("/ConvertService.ashx", "application/json", "application/json; charset=UTF-8"),
        (
            "/ConvertService.ashx",
            "application/xml;q=0.5, application/json",
            "application/json; charset=UTF-8",
        ),
    ],
)
def test_each_endpoint_answers_its_own_format_unless_accept_asks_otherwise(
    host: ConverterHost, path: str, accept: str | None, expected: str
) -> None:
    claims = request_for(host, "a.txt", b"hello\n", "docx")
    headers = {"Accept": accept} if accept else None

    response = host.post(claims, path=path, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == expected


def test_xml_answer_carries_the_escaped_link_of_the_result(
    host: ConverterHost,
) -> None:
    claims = request_for(host, "a.txt", b"hello\n", "docx")

    response = host.post(claims, path="/ConvertService.ashx")

    assert response.text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    assert "&amp;expires=" in response.text
    result = file_result(response)
    assert result.findtext("FileType") == "docx"
    assert result.findtext("Percent") == "100"
    assert result.findtext("EndConvert") == "True"
    assert docx_paragraphs(host.fetch(result.findtext("FileUrl") or "")) == ["hello"]


def test_get_on_the_legacy_endpoint_reads_the_query_string(
    host: ConverterHost,
) -> None:
    claims = request_for(host, "a.txt", b"from a query\n", "docx")
    query = {"token": tokens.sign(claims, SECRET, expires_in=300)}

    response = host.client.get("/ConvertService.ashx", params=query)

    assert response.headers["content-type"] == "text/xml; charset=UTF-8"
    url = file_result(response).findtext("FileUrl")
    assert docx_paragraphs(host.fetch(url or "")) == ["from a query"]


def test_xml_forms_of_progress_and_error() -> None:
    progress = to_xml({"percent": 0, "endConvert": False})

    error = to_xml({"error": ConversionError.CONVERSION})

    assert progress.endswith(
        "<FileResult><FileUrl/><FileType/><Percent>0</Percent>"
        "<EndConvert>False</EndConvert></FileResult>"
    )
    assert error == (
        '<?xml version="1.0" encoding="utf-8"?><FileResult><Error>-3</Error>'
        "</FileResult>"
    )


# Real conversions


def test_docx_converts_to_txt_with_its_paragraphs(host: ConverterHost) -> None:
    claims = request_for(host, "a.docx", make_docx("First", "Second é"), "txt")

    answer = host.convert(claims)

    assert answer["fileType"] == "txt"
    assert answer["percent"] == 100
    assert answer["endConvert"] is True
    assert host.fetch(answer["fileUrl"]).decode("utf-8").splitlines() == [
        "First",
        "Second é",
    ]


def test_txt_converts_to_docx_one_paragraph_per_line(host: ConverterHost) -> None:
    claims = request_for(host, "a.txt", "one\ntwo ü\n".encode(), "docx")

    answer = host.convert(claims)

    assert answer["fileType"] == "docx"
    assert docx_paragraphs(host.fetch(answer["fileUrl"])) == ["one", "two ü"]


def test_xlsx_converts_to_csv_from_its_first_sheet(host: ConverterHost) -> None:
    data = make_xlsx(["name", "n"], ["a,b", 3], second_sheet=["elsewhere"])
    claims = request_for(host, "a.xlsx", data, "csv")

    answer = host.convert(claims)

    assert answer["fileType"] == "csv"
    text = host.fetch(answer["fileUrl"]).decode("utf-8")
    assert list(csv.reader(io.StringIO(text))) == [["name", "n"], ["a,b", "3"]]


def test_csv_converts_to_xlsx_with_numbers_as_numbers(host: ConverterHost) -> None:
    claims = request_for(host, "a.csv", b'name,n\n"x, y",42\n=1+1,2.5\n', "xlsx")

    answer = host.convert(claims)

    assert answer["fileType"] == "xlsx"
    sheet = openpyxl.load_workbook(io.BytesIO(host.fetch(answer["fileUrl"]))).active
    assert list(sheet.iter_rows(values_only=True)) == [
        ("name", "n"),
        ("x, y", 42),
        ("=1+1", 2.5),
    ]


def test_pptx_converts_to_txt_one_line_per_slide(host: ConverterHost) -> None:
    claims = request_for(host, "a.pptx", make_pptx("Intro", "Outro"), "txt")

    answer = host.convert(claims)

    assert answer["fileType"] == "txt"
    assert host.fetch(answer["fileUrl"]).decode().splitlines() == ["Intro", "Outro"]


@pytest.mark.parametrize(
    ("name", "expected"), [("a.txt", "docx"), ("a.csv", "xlsx"), ("a.pptx", "pptx")]
)
def test_ooxml_means_the_office_format_of_the_document_type(
    host: ConverterHost, name: str, expected: str
) -> None:
    data = make_pptx("Slide") if name.endswith("pptx") else b"a,b\n"
    claims = request_for(host, name, data, "ooxml")

    answer = host.convert(claims)

    assert answer["fileType"] == expected
    assert f"Report.{expected}" in answer["fileUrl"]


@pytest.mark.parametrize("name", ["a.docx", "a.xlsx", "a.txt"])
def test_same_format_gives_back_the_same_bytes(host: ConverterHost, name: str) -> None:
    data = {"a.docx": make_docx("Same"), "a.xlsx": make_xlsx(["same"])}.get(
        name, b"same\n"
    )
    claims = request_for(host, name, data, name.rpartition(".")[2])

    answer = host.convert(claims)

    assert host.fetch(answer["fileUrl"]) == data


def test_result_is_named_after_the_title_with_the_new_extension(
    host: ConverterHost,
) -> None:
    claims = request_for(host, "a.txt", b"x\n", "docx", title="Q3 plan.txt")
    untitled = request_for(host, "b.txt", b"x\n", "docx")
    del untitled["title"]

    named, default = host.convert(claims), host.convert(untitled)

    assert dict(parse_qsl(urlsplit(named["fileUrl"]).query))["filename"] == (
        "Q3 plan.docx"
    )
    assert urlsplit(default["fileUrl"]).path.endswith("/output.docx")


def test_missing_filetype_is_taken_from_the_url(host: ConverterHost) -> None:
    claims = request_for(host, "a.docx", make_docx("Guessed"), "txt")
    del claims["filetype"]

    answer = host.convert(claims)

    assert host.fetch(answer["fileUrl"]) == b"Guessed\n"


def test_only_the_tokens_parameters_count(host: ConverterHost) -> None:
    claims = request_for(host, "a.docx", make_docx("Signed"), "txt")
    body = {
        **claims,
        "outputtype": "pdf",
        "token": tokens.sign(claims, SECRET, expires_in=300),
    }

    answer = host.client.post("/converter", json=body).json()

    assert answer["fileType"] == "txt"


def test_token_in_the_header_is_accepted(host: ConverterHost) -> None:
    claims = request_for(host, "a.docx", make_docx("Header"), "txt")
    header = f"Bearer {tokens.sign_wrapped(claims, SECRET)}"

    answer = host.client.post(
        "/converter", json=claims, headers={"Authorization": header}
    ).json()

    assert host.fetch(answer["fileUrl"]) == b"Header\n"


# Errors


@pytest.mark.parametrize("output", ["pdf", "odt", "png", "xlsx"])
def test_targets_the_simulator_cannot_make_answer_conversion_error(
    host: ConverterHost, output: str
) -> None:
    claims = request_for(host, "a.docx", make_docx("x"), output)

    answer = host.convert(claims)

    assert answer == {"error": ConversionError.CONVERSION}


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("a.docx", b"not a zip at all"),
        ("a.xlsx", make_docx("a docx")),
        ("a.txt", b"\0\1"),
    ],
)
def test_bytes_that_do_not_open_as_their_filetype_answer_conversion_error(
    host: ConverterHost, name: str, data: bytes
) -> None:
    claims = request_for(host, name, data, "ooxml")

    answer = host.convert(claims)

    assert answer == {"error": ConversionError.CONVERSION}


@pytest.mark.parametrize(
    "change",
    [
        {"key": "bad key!"},
        {"key": "new\nline"},
        {"filetype": "do.cx"},
        {"outputtype": "exe"},
        {"outputtype": None},
        {"url": None},
        {"key": None},
        {"password": "p" * 256},
    ],
)
def test_bad_parameters_answer_input_error(
    host: ConverterHost, change: dict[str, Any]
) -> None:
    claims = request_for(host, "a.txt", b"x\n", "docx")
    claims.update(change)
    claims = {name: value for name, value in claims.items() if value is not None}

    answer = host.convert(claims)

    assert answer == {"error": ConversionError.INPUT}
    assert host.downloads == []


@pytest.mark.parametrize("token", ["missing", "forged", "expired"])
def test_missing_forged_or_expired_token_answers_token_error(
    host: ConverterHost, token: str
) -> None:
    claims = request_for(host, "a.txt", b"x\n", "docx")
    body: dict[str, Any] = dict(claims)
    if token == "forged":
        body["token"] = tokens.sign(
            claims, "another-secret-also-of-32-bytes!!", expires_in=300
        )
    elif token == "expired":
        past = int(time.time()) - 600
        body["token"] = tokens.sign({**claims, "iat": past, "exp": past + 300}, SECRET)

    response = host.client.post("/ConvertService.ashx", json=body)

    assert response.status_code == 200
    assert file_result(response).findtext("Error") == str(int(ConversionError.TOKEN))
    assert host.downloads == []


def test_malformed_json_answers_unknown_error(host: ConverterHost) -> None:
    response = host.client.post("/converter", content=b"{not json")

    assert response.status_code == 200
    assert response.json() == {"error": ConversionError.UNKNOWN}


def test_download_that_404s_answers_download_error(host: ConverterHost) -> None:
    claims = request_for(host, "gone.docx", b"", "txt")
    del host.files["gone.docx"]

    answer = host.convert(claims)

    assert answer == {"error": ConversionError.DOWNLOAD}
    assert host.downloads == ["gone.docx"] * 3


def test_file_over_the_download_limit_answers_download_error(
    host: ConverterHost,
) -> None:
    claims = request_for(host, "big.txt", b"x" * (TIGHT_LIMIT + 1), "docx")

    answer = host.convert(claims, path="/tight/converter")

    # The DS answers -10, the size limit; see the XXX in conversion.py.
    assert answer == {"error": ConversionError.DOWNLOAD}
    assert host.downloads == ["big.txt"] * 3


def test_failed_job_stays_failed_for_its_key(host: ConverterHost) -> None:
    claims = request_for(host, "late.docx", b"", "txt")
    del host.files["late.docx"]
    first = host.convert(claims)
    host.files["late.docx"] = make_docx("Arrived")

    again = host.convert(claims)
    new_key = host.convert({**claims, "key": "a-new-key"})

    assert first == again == {"error": ConversionError.DOWNLOAD}
    assert host.fetch(new_key["fileUrl"]) == b"Arrived\n"


def test_same_key_with_another_outputtype_is_another_job(host: ConverterHost) -> None:
    claims = request_for(host, "a.docx", make_docx("Twice"), "txt")
    host.convert(claims)

    answer = host.convert({**claims, "outputtype": "docx"})

    assert answer["fileType"] == "docx"
    assert host.downloads == ["a.docx", "a.docx"]


# Async and sync


def test_async_request_is_polled_with_the_same_request(host: ConverterHost) -> None:
    claims = request_for(host, "a.docx", make_docx("Later"), "txt", **{"async": True})
    claims["url"] = host.file_url("a.docx", route="slow")

    first = host.convert(claims)
    second = host.convert(claims)
    final = host.poll(claims)

    assert first == second == {"percent": 0, "endConvert": False}
    assert final["percent"] == 100
    assert host.fetch(final["fileUrl"]) == b"Later\n"
    assert host.downloads == ["a.docx"]


def test_async_progress_in_xml(host: ConverterHost) -> None:
    claims = request_for(host, "a.txt", b"x\n", "docx", **{"async": "true"})

    response = host.post(claims, path="/ConvertService.ashx")

    assert response.text.endswith(
        "<FileResult><FileUrl/><FileType/><Percent>0</Percent>"
        "<EndConvert>False</EndConvert></FileResult>"
    )
    # Finish the job, so no download of it lands in the next test.
    assert host.poll(claims)["fileType"] == "docx"


def test_sync_request_that_waits_too_long_times_out_and_the_job_goes_on(
    host: ConverterHost,
) -> None:
    claims = request_for(host, "a.docx", make_docx("Slow"), "txt")
    claims["url"] = host.file_url("a.docx", route="slow")

    first = host.convert(claims, path="/hasty/converter")
    later = host.poll(claims, path="/hasty/converter")

    assert first == {"error": ConversionError.TIMEOUT}
    assert later["fileType"] == "txt"


# The result link


def test_result_link_downloads_and_a_tampered_one_is_forbidden(
    host: ConverterHost,
) -> None:
    claims = request_for(host, "a.docx", make_docx("Linked"), "txt")
    url = host.convert(claims)["fileUrl"]

    good = host.client.get(url)
    bad = host.client.get(tampered(url))

    assert url.startswith(f"{host.url}/cache/files/data/conv_{claims['key']}_txt_")
    assert good.status_code == 200
    assert good.content == b"Linked\n"
    assert bad.status_code == 403


def test_repeating_a_finished_request_signs_a_fresh_link(host: ConverterHost) -> None:
    claims = request_for(host, "a.docx", make_docx("Again"), "txt")
    first = host.convert(claims)

    again = host.convert(claims)

    assert urlsplit(first["fileUrl"]).path == urlsplit(again["fileUrl"]).path
    assert host.fetch(again["fileUrl"]) == b"Again\n"
    assert host.downloads == ["a.docx"]
