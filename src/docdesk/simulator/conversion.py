"""The Document Server's conversion service, simulated.

``POST /converter`` answers JSON unless ``Accept`` asks for XML; the legacy
``/ConvertService.ashx`` answers XML unless ``Accept`` asks for JSON, and
takes GET with a query string too. Both always answer HTTP 200.

As on the real server, only the parameters of the verified token count, and
a job is kept under ``conv_{key}_{outputtype}``: repeating the same request
returns the job's state or result, which is how an async caller polls, and
a failed job keeps failing until the caller picks a new key.

The simulator really converts what pure-Python libraries can write: docx
and pptx to txt, txt to docx, xlsx to csv and back, and any format to
itself. Every other target the DS offers (pdf, odt, images...) answers -3,
the DS's conversion error, as does a file that does not open as its type.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response

from docdesk.commands import ConversionError
from docdesk.errors import DocdeskError, UnsupportedFormat
from docdesk.formats import FORMATS, DocumentType, Format, check_bytes, format_for
from docdesk.simulator.cache import base_url_of
from docdesk.simulator.edits import read_text
from docdesk.simulator.inbox import InboxTokenError, read_inbox
from docdesk.simulator.sessions import ConfigRejected, Simulator

__all__ = ["ConversionService", "to_xml"]

logger = logging.getLogger(__name__)

# How long a sync request waits: the DS gives up after
# 1.5 x (queue.visibilityTimeout 300 + queue.retentionPeriod 900) seconds.
SYNC_TIMEOUT = 1800.0
# The DS's DOC_ID_REGEX and EXTENTION_REGEX, anchored at both ends.
KEY_PATTERN: Final = re.compile(r"[0-9-.a-zA-Z_=]*")
FILETYPE_PATTERN: Final = re.compile(r"[a-zA-Z0-9]*")
PASSWORD_MAX_LENGTH = 255

JSON = "application/json"
XML = "application/xml"
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
# What the DS's fillResponse sends (utils.js), though clients ask for XML
# under the name application/xml.
XML_CONTENT_TYPE = "text/xml; charset=UTF-8"

# "ooxml" and "odf" name a family; the document's type picks the member.
FAMILIES: Final[Mapping[str, Mapping[DocumentType, str]]] = {
    "ooxml": {
        DocumentType.WORD: "docx",
        DocumentType.CELL: "xlsx",
        DocumentType.SLIDE: "pptx",
    },
    "odf": {
        DocumentType.WORD: "odt",
        DocumentType.CELL: "ods",
        DocumentType.SLIDE: "odp",
    },
}
# Every outputtype the DS knows by name; any other is an input error (-7).
OUTPUT_TYPES: Final = frozenset(FORMATS).union(
    *(fmt.convertible_to for fmt in FORMATS.values()), FAMILIES
)

# What check_bytes looks at: the head, and a tail that holds a zip's end.
HEAD_BYTES = 4096
TAIL_BYTES = 65_557
# Everything XML 1.0 cannot hold, which python-docx and openpyxl refuse.
NOT_XML: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Excel's limit for one cell.
CELL_LIMIT = 32_767
INTEGER: Final = re.compile(r"-?[0-9]{1,15}")
DECIMAL: Final = re.compile(r"-?[0-9]{1,15}\.[0-9]{1,15}")


@dataclass(frozen=True)
class _Job:
    """A conversion request that passed validation."""

    id: str
    key: str
    url: str
    file_type: str | None
    output_type: str
    title: str | None
    is_async: bool


@dataclass(frozen=True)
class _Converted:
    """A finished job: the result in the simulator's cache."""

    path: str
    file_type: str


_Outcome = _Converted | ConversionError


class ConversionService:
    """The conversion service of one simulated Document Server.

    Jobs live as long as the service: a key's result, or its error, is
    served again for every repeat of the request, each time under a freshly
    signed link. ``timeout`` bounds how long a sync request waits; the job
    goes on after it, and the same request collects the result later.
    """

    def __init__(self, simulator: Simulator, *, timeout: float = SYNC_TIMEOUT) -> None:
        self.simulator = simulator
        self.timeout = timeout
        self._jobs: dict[str, asyncio.Task[_Outcome]] = {}

    async def aclose(self) -> None:
        """Cancel the conversions still running."""
        running = [job for job in self._jobs.values() if not job.done()]
        for job in running:
            job.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def handle(self, request: Request) -> Response:
        """The endpoint for ``/converter`` and ``/ConvertService.ashx`` alike.

        The path decides the preferred answer format, ``Accept`` may
        override it; the status is always 200.
        """
        answer = await self._answer(request)

        offered = (XML, JSON) if request.url.path.endswith(".ashx") else (JSON, XML)
        if _negotiate(request.headers.get("accept"), offered) == JSON:
            body = json.dumps(answer, separators=(",", ":"))
            return Response(body, media_type=JSON_CONTENT_TYPE)
        return Response(to_xml(answer), media_type=XML_CONTENT_TYPE)

    async def _answer(self, request: Request) -> dict[str, Any]:
        try:
            body = await _request_params(request)
        except ValueError:
            # The DS's JSON.parse throws into its catch-all: an unknown error.
            logger.info("conversion refused reason=malformed-json")
            return _failure(ConversionError.UNKNOWN)

        settings = self.simulator.settings
        try:
            params = read_inbox(
                body,
                request.headers,
                secret=settings.secret,
                header=settings.jwt_header,
            )
        except InboxTokenError as exc:
            logger.info("conversion refused reason=token expired=%s", exc.expired)
            return _failure(ConversionError.TOKEN)
        return await self.convert(params, base_url_of(request))

    async def convert(self, params: Mapping[str, Any], base_url: str) -> dict[str, Any]:
        """Answer a conversion request whose token is already verified.

        ``params`` are the token's claims, ``base_url`` the host the request
        came to, which the result link is built on. The answer is the DS's
        JSON: ``fileUrl``, ``fileType``, ``percent`` 100 and ``endConvert``
        true when done; ``percent`` 0 and ``endConvert`` false while an async
        job runs; or ``{"error": code}``.
        """
        job = _job_of(params)
        if isinstance(job, ConversionError):
            logger.info("conversion refused error=%d", job)
            return _failure(job)

        task = self._jobs.get(job.id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._run(job))
            self._jobs[job.id] = task
        # A new task has not started yet, so a first async request is always
        # answered "in progress", as the DS answers it.
        if job.is_async and not task.done():
            return {"percent": 0, "endConvert": False}

        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.timeout)
            except TimeoutError:
                logger.info("conversion timed out job=%s", job.id)
                return _failure(ConversionError.TIMEOUT)
        return self._answer_for(task.result(), base_url)

    def _answer_for(self, outcome: _Outcome, base_url: str) -> dict[str, Any]:
        if isinstance(outcome, ConversionError):
            return _failure(outcome)
        return {
            "fileUrl": self.simulator.cache.link(base_url, outcome.path),
            "fileType": outcome.file_type,
            "percent": 100,
            "endConvert": True,
        }

    async def _run(self, job: _Job) -> _Outcome:
        try:
            outcome = await self._conversion(job)
        except Exception:
            logger.exception("conversion crashed job=%s", job.id)
            outcome = ConversionError.UNKNOWN

        if isinstance(outcome, ConversionError):
            logger.info("conversion failed job=%s error=%d", job.id, outcome)
        else:
            logger.info(
                "conversion done job=%s file_type=%s", job.id, outcome.file_type
            )
        return outcome

    async def _conversion(self, job: _Job) -> _Outcome:
        try:
            data = await self.simulator.download(job.url)
        except ConfigRejected:
            # XXX: download() reports a file over max_download_bytes like any
            # other failure, so the size limit answers -4 where the DS answers
            # -10; pinned by
            # test_file_over_the_download_limit_answers_download_error.
            return ConversionError.DOWNLOAD

        file_type = job.file_type or _extension_of(job.url)
        try:
            extension, converted = await asyncio.to_thread(
                _convert, file_type, job.output_type, data
            )
        except DocdeskError as exc:
            logger.info("conversion impossible job=%s reason=%s", job.id, exc.message)
            return ConversionError.CONVERSION

        filename = _result_name(job.title, extension)
        path = self.simulator.cache.put(job.id, filename, converted)
        return _Converted(path, extension)


def to_xml(answer: Mapping[str, Any]) -> str:
    """An answer as the DS writes it for XML callers: a ``FileResult``."""
    head = '<?xml version="1.0" encoding="utf-8"?><FileResult>'
    if "error" in answer:
        return f"{head}<Error>{_escape(str(answer['error']))}</Error></FileResult>"

    url, file_type = answer.get("fileUrl"), answer.get("fileType")
    parts = [
        f"<FileUrl>{_escape(url)}</FileUrl>" if url else "<FileUrl/>",
        f"<FileType>{_escape(file_type)}</FileType>" if file_type else "<FileType/>",
        f"<Percent>{int(answer.get('percent', 0))}</Percent>",
        f"<EndConvert>{'True' if answer.get('endConvert') else 'False'}</EndConvert>",
    ]
    return head + "".join(parts) + "</FileResult>"


def _escape(value: str) -> str:
    return escape(value, {'"': "&quot;", "'": "&apos;"})


def _failure(error: ConversionError) -> dict[str, Any]:
    return {"error": int(error)}


# --- The request -------------------------------------------------------------


async def _request_params(request: Request) -> dict[str, Any]:
    """The JSON body, else the query string, as the DS reads its parameters.

    Raises ValueError for a body that is not JSON.
    """
    body = await request.body()
    if not body:
        return dict(request.query_params)
    value = json.loads(body)
    return value if isinstance(value, dict) else {}


def _job_of(params: Mapping[str, Any]) -> _Job | ConversionError:
    """Validate the parameters in the DS's order; any fault is an input error."""
    key = _text(params.get("key"))
    file_type = _text(params.get("filetype", params.get("fileType")))
    output_type = _text(params.get("outputtype", params.get("outputType"))) or ""
    if key and not KEY_PATTERN.fullmatch(key):
        return ConversionError.INPUT
    if file_type and not FILETYPE_PATTERN.fullmatch(file_type):
        return ConversionError.INPUT
    if output_type.lower() not in OUTPUT_TYPES:
        return ConversionError.INPUT

    url, password = params.get("url"), params.get("password")
    if not key or not isinstance(url, str) or not url:
        return ConversionError.INPUT
    if isinstance(password, str) and len(password) > PASSWORD_MAX_LENGTH:
        return ConversionError.INPUT

    title, is_async = params.get("title"), params.get("async")
    return _Job(
        id=f"conv_{key}_{output_type}",
        key=key,
        url=url,
        file_type=file_type or None,
        output_type=output_type,
        title=title if isinstance(title, str) else None,
        # A query string says "true"; JSON says true.
        is_async=is_async == "true" if isinstance(is_async, str) else bool(is_async),
    )


def _text(value: Any) -> str | None:
    """A string parameter; the DS's JavaScript takes a number as its digits."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _extension_of(url: str) -> str:
    # XXX: without filetype the DS sniffs the downloaded bytes; this takes
    # the URL's extension. Pinned by test_missing_filetype_is_taken_from_the_url.
    return PurePosixPath(urlsplit(url).path).suffix.lstrip(".")


def _result_name(title: str | None, extension: str) -> str:
    """``title`` with the new extension, as the DS names the result."""
    stem = PurePosixPath(title).stem if title else ""
    return f"{stem or 'output'}.{extension}"


class _MediaRange(NamedTuple):
    type: str
    subtype: str
    params: dict[str, str]
    q: float
    order: int


def _negotiate(accept: str | None, offered: Sequence[str]) -> str:
    """The offered type ``Accept`` ranks first, as Express's ``req.accepts``.

    Highest q wins, then the more specific range, then the range named
    first, then the offer order. Without a header, or when nothing offered
    is acceptable, the first offer.
    """
    if not accept:
        return offered[0]
    ranges = [_media_range(part, order) for order, part in enumerate(accept.split(","))]
    acceptable = [r for r in ranges if r is not None]

    ranked: list[tuple[float, int, int, int, str]] = []
    for index, media_type in enumerate(offered):
        match = _best_range(media_type, acceptable)
        if match is not None and match.q > 0:
            specificity, q, order = match.s, match.q, match.order
            ranked.append((-q, -specificity, order, index, media_type))
    return min(ranked)[-1] if ranked else offered[0]


class _Match(NamedTuple):
    s: int
    q: float
    order: int


def _best_range(media_type: str, ranges: Sequence[_MediaRange]) -> _Match | None:
    """The range that covers ``media_type`` most specifically, if any does."""
    kind, _, subtype = media_type.partition("/")
    best: _Match | None = None
    for r in ranges:
        specificity = 0
        if r.type == kind:
            specificity |= 4
        elif r.type != "*":
            continue
        if r.subtype == subtype:
            specificity |= 2
        elif r.subtype != "*":
            continue
        # The offers carry no parameters, so a range naming one (a charset,
        # say) covers them only with the value "*".
        if r.params:
            if any(value != "*" for value in r.params.values()):
                continue
            specificity |= 1
        match = _Match(specificity, r.q, r.order)
        if best is None or match > best:
            best = match
    return best


def _media_range(text: str, order: int) -> _MediaRange | None:
    name, *pairs = (piece.strip() for piece in text.split(";"))
    kind, slash, subtype = name.lower().partition("/")
    if not slash or not kind or not subtype:
        return None

    params: dict[str, str] = {}
    q = 1.0
    for pair in pairs:
        field, _, value = pair.partition("=")
        field, value = field.strip().lower(), value.strip().strip('"')
        if field == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        elif field:
            params[field] = value
    return _MediaRange(kind, subtype, params, q, order)


# --- Converting --------------------------------------------------------------


def _convert(file_type: str, output_type: str, data: bytes) -> tuple[str, bytes]:
    """The result's extension and bytes; DocdeskError for anything impossible.

    Runs in a worker thread: the office libraries are slow and blocking.
    """
    source = format_for(file_type)
    family = FAMILIES.get(output_type.lower(), {})
    target = family.get(source.document_type, output_type.lower())

    _check_opens(source, data)
    if target == source.extension:
        return target, data

    maker = _MAKERS.get((source.extension, target))
    if maker is None:
        raise UnsupportedFormat(f"cannot make .{target} from .{source.extension}")
    return target, maker(data)


def _check_opens(source: Format, data: bytes) -> None:
    """Refuse bytes that do not open as ``source``: layout, then the library."""
    check_bytes(source, data[:HEAD_BYTES], data[-TAIL_BYTES:], len(data))

    # Past the layout, only the formats the stand-in editor reads are opened.
    with contextlib.suppress(UnsupportedFormat):
        read_text(source.extension, data)


def _txt_from_lines(lines: Sequence[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def _txt_from_docx(data: bytes) -> bytes:
    return _txt_from_lines(read_text("docx", data))


def _txt_from_pptx(data: bytes) -> bytes:
    return _txt_from_lines(read_text("pptx", data))


def _docx_from_txt(data: bytes) -> bytes:
    import docx

    document = docx.Document()
    # The template names python-docx as author; a converted file should not.
    document.core_properties.author = ""
    for line in read_text("txt", data):
        document.add_paragraph(NOT_XML.sub("", line))

    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _csv_from_xlsx(data: bytes) -> bytes:
    """The first worksheet, each formula as its last computed value."""
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(data), data_only=True)
    records = [
        ["" if value is None else str(value) for value in values]
        for values in workbook.worksheets[0].iter_rows(values_only=True)
    ]
    while records and not any(records[-1]):
        records.pop()

    out = io.StringIO()
    csv.writer(out).writerows(records)
    return out.getvalue().encode("utf-8")


def _xlsx_from_csv(data: bytes) -> bytes:
    import openpyxl

    # Read as plain text, the encoding is found as for any text file.
    text = "\n".join(read_text("txt", data))
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row, record in enumerate(csv.reader(io.StringIO(text)), start=1):
        for column, field in enumerate(record, start=1):
            cell = sheet.cell(row=row, column=column, value=_cell_value(field))
            # A field starting with "=" is text, not a formula to run.
            if isinstance(cell.value, str):
                cell.data_type = "s"

    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _cell_value(field: str) -> str | int | float:
    """Numbers become numbers, as a spreadsheet reads a CSV; the rest is text."""
    if INTEGER.fullmatch(field):
        return int(field)
    if DECIMAL.fullmatch(field):
        return float(field)
    return NOT_XML.sub("", field)[:CELL_LIMIT]


_MAKERS: Final[Mapping[tuple[str, str], Callable[[bytes], bytes]]] = {
    ("docx", "txt"): _txt_from_docx,
    ("pptx", "txt"): _txt_from_pptx,
    ("txt", "docx"): _docx_from_txt,
    ("xlsx", "csv"): _csv_from_xlsx,
    ("csv", "xlsx"): _xlsx_from_csv,
}
