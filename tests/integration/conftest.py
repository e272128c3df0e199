"""Fixtures: docdesk over real HTTP, facing one of two Document Servers.

``sim`` is docdesk with its embedded simulator, the protocol-faithful
Document Server (DS), as ``docdesk serve`` runs with no DS configured. Every
test of the DS's behaviour runs against it: each callback comes from a
session event or from a fault of the simulator's control API, never from a
hand-made request.

``service`` faces ``standin``, a small double that posts whatever a test
asks. It is kept for hostile input only, what a real DS never sends but an
attacker or a broken network might: forged, expired and unsigned tokens,
replays, keys of other documents, malformed and oversized bodies, links off
the DS's origin, redirects and lying lengths. It also keeps the one DS
behaviour the simulator cannot produce: a document saved back in another
format (the simulator does not convert .odt to .docx).

Starting a service costs more than most tests: the stand-in and its service
live for one test module, the simulated service for the whole run. Each test
makes its own documents, keys and cache files, so tests stay apart; ``sim``
also clears the simulator's faults and the wire between tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from docdesk.settings import Settings
from docdesk.testing import fast_settings

from .harness import Service, bound_listener
from .simulated import Simulated
from .standin import StandIn

# 64 bytes and more, so that even an HS512 token made with it raises no
# warning: the service must refuse it for its algorithm alone.
SECRET = "integration-secret-" + "x" * 48
# Above any office file the tests make, far below the service's default.
CAP = 200_000
# The DS's delays, shrunk so that a whole session takes a fraction of a second.
SAVE_DELAY = 0.05
RETRY_DELAYS = (0.05, 0.05, 0.05)


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


@pytest.fixture(scope="session")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulated]:
    """docdesk with no Document Server configured: the simulator is mounted."""
    listener = bound_listener()
    host, port = listener.getsockname()
    settings = Settings(
        jwt_secret=SECRET,
        data_dir=tmp_path_factory.mktemp("docdesk") / "data",
        public_url=f"http://{host}:{port}",
        max_download_bytes=CAP,
        max_upload_bytes=CAP,
    )
    simulator_settings = dataclasses.replace(
        fast_settings(secret=settings.jwt_secret),
        save_delay=SAVE_DELAY,
        retry_delays=RETRY_DELAYS,
    )
    service = Service(settings, listener, simulator_settings=simulator_settings)
    service.start()
    simulated = Simulated(service)
    yield simulated
    simulated.close()
    service.stop()


@pytest.fixture
def sim(simulated: Simulated) -> Iterator[Simulated]:
    """The module's simulated service, with no fault or probe of another test."""
    simulated.reset()
    yield simulated
    simulated.reset()
