"""The real servers some tests need: without one, skip, or fail where required.

CI (.ci/run) sets ``DOCDESK_TEST_REQUIRE_SERVERS=1``: there, a server the
tests cannot reach, or cannot use, fails them instead of skipping them.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["REQUIRE_SERVERS", "unavailable"]

REQUIRE_SERVERS = os.environ.get("DOCDESK_TEST_REQUIRE_SERVERS") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose server is missing, or fail it where CI needs it."""
    if REQUIRE_SERVERS:
        pytest.fail(reason)
    pytest.skip(reason)
