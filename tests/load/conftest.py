"""docdesk with its embedded simulator, as the integration suite runs it.

The pieces are the integration suite's (:class:`Service`, :class:`Simulated`,
its secret, caps and shortened delays), with one difference: the simulated
Document Server (DS) waits for an answer as long as the real one does (its
``callbackTimeout``), not the integration suite's 10 s. Under load a callback
may queue for a while; the DS would wait, and so does this one, while the
test still fails on any answer that is not a success.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from docdesk.settings import Settings
from docdesk.simulator import SimulatorSettings
from docdesk.testing import fast_settings
from integration.conftest import CAP, RETRY_DELAYS, SAVE_DELAY, SECRET, sim
from integration.harness import Service, bound_listener
from integration.simulated import Simulated

# ``sim`` is the integration suite's: it resets the module's ``simulated``.
__all__ = ["sim", "simulated"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulated]:
    """docdesk with no Document Server configured: the simulator is mounted."""
    listener = bound_listener()
    host, port = listener.getsockname()
    settings = Settings(
        jwt_secret=SECRET,
        data_dir=tmp_path_factory.mktemp("docdesk-load") / "data",
        public_url=f"http://{host}:{port}",
        max_download_bytes=CAP,
        max_upload_bytes=CAP,
    )
    simulator_settings = dataclasses.replace(
        fast_settings(secret=settings.jwt_secret),
        save_delay=SAVE_DELAY,
        retry_delays=RETRY_DELAYS,
        callback_timeout=SimulatorSettings(secret=SECRET).callback_timeout,
    )
    service = Service(settings, listener, simulator_settings=simulator_settings)
    service.start()
    simulated = Simulated(service)
    yield simulated
    simulated.close()
    service.stop()
