"""The Document Server's command and conversion services, in its own numbers."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CommandError", "ConversionError"]


class CommandError(IntEnum):
    """``error`` in a command service answer (``c_oAscServerCommandErrors``)."""

    NO_ERROR = 0
    DOCUMENT_ID = 1
    PARSE = 2
    UNKNOWN = 3
    NOT_MODIFIED = 4
    UNKNOWN_COMMAND = 5
    TOKEN = 6
    TOKEN_EXPIRED = 7


class ConversionError(IntEnum):
    """``error`` in a conversion service answer."""

    UNKNOWN = -1
    TIMEOUT = -2
    CONVERSION = -3
    DOWNLOAD = -4
    PASSWORD = -5
    DATABASE = -6
    INPUT = -7
    TOKEN = -8
    OUTPUT_FORMAT = -9
    SIZE_LIMIT = -10
