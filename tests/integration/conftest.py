"""Fixtures: a stand-in Document Server and docdesk serving over real HTTP.

Both live for one test module: starting them costs more than most tests.
Each test makes its own documents and cache files, so tests stay apart.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from docdesk.settings import Settings

from .harness import Service, bound_listener
from .standin import StandIn

# 64 bytes and more, so that even an HS512 token made with it raises no
# warning: the service must refuse it for its algorithm alone.
SECRET = "integration-secret-" + "x" * 48
# Above any office file the tests make, far below the service's default.
CAP = 200_000


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    standin = StandIn(SECRET)
    standin.start()
    yield standin
    standin.close()


@pytest.fixture(scope="module")
def service(
    standin: StandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """docdesk with its own data dir, the stand-in as its Document Server."""
    listener = bound_listener()
    host, port = listener.getsockname()
    settings = Settings(
        jwt_secret=SECRET,
        data_dir=tmp_path_factory.mktemp("docdesk") / "data",
        public_url=f"http://{host}:{port}",
        document_server_url=standin.url,
        max_download_bytes=CAP,
        max_upload_bytes=CAP,
    )
    service = Service(settings, listener)
    service.start()
    yield service
    service.stop()
