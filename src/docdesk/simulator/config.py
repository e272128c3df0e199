"""The simulator's knobs, with the Document Server's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SimulatorSettings"]


@dataclass(frozen=True, kw_only=True)
class SimulatorSettings:
    """How the simulated Document Server behaves.

    Every default is the real server's (``Common/config/default.json``);
    tests shrink the delays to keep the suite fast.
    """

    secret: str = field(repr=False)
    jwt_header: str = "Authorization"
    # The version the command service and the callbacks' history report.
    server_version: str = "9.3.0"
    build_number: int = 1
    # savetimeoutdelay: from the last editor leaving to the final save.
    save_delay: float = 5.0
    # The auto-assembly timer (force-save type 2); None is the DS's default: off.
    forcesave_interval: float | None = None
    # callbackBackoffOptions: delays before the 2nd, 3rd and 4th attempt.
    retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0)
    callback_timeout: float = 600.0
    # FileConverter.converter: downloads of document.url.
    download_attempts: int = 3
    download_attempt_delay: float = 1.0
    download_timeout: float = 120.0
    max_download_bytes: int = 100 * 1024 * 1024
    # storage.fs.urlExpires: lifetime of /cache/files links.
    link_lifetime: float = 900.0
    # expire.updateVersionStatus: a saved key reopened within this is refused.
    update_version_window: float = 300.0
    # The header token grows past this, and history leaves the plain body.
    max_header_token: int = 7168
