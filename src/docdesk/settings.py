"""The service's own knobs, read once from ``DOCDESK_*`` variables.

Nothing in docdesk reads the environment after :meth:`Settings.from_env`:
the rest of the code is handed a frozen :class:`Settings`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from docdesk.errors import ConfigurationError

__all__ = ["DEFAULT_MAX_DOWNLOAD_BYTES", "SIMULATOR_PATH", "Network", "Settings"]

logger = logging.getLogger(__name__)

# The Document Server's own cap on a downloaded file (maxDownloadBytes).
DEFAULT_MAX_DOWNLOAD_BYTES = 100 * 1024 * 1024
# Where `docdesk serve` mounts the built-in simulator when no DS is set.
SIMULATOR_PATH = "/ds-simulator"
MIN_SECRET_BYTES = 32
WEAK_SECRETS = frozenset({"", "secret"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_warned_short_secret = False


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where docdesk keeps things and how it reaches the Document Server.

    ``document_server_url`` is None when the built-in simulator stands in for
    the Document Server; the secret is then random and private to this run.
    """

    jwt_secret: str = field(repr=False)
    data_dir: Path = Path("docdesk-data")
    public_url: str = "http://127.0.0.1:8000"
    document_server_url: str | None = None
    document_server_internal_url: str | None = None
    jwt_header: str = "Authorization"
    # Either may hold credentials: never in a repr.
    database_url: str | None = field(default=None, repr=False)
    storage_url: str | None = field(default=None, repr=False)
    callback_allow: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    max_upload_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES

    def __post_init__(self) -> None:
        _check_secret("DOCDESK_JWT_SECRET", self.jwt_secret)
        _check_url("DOCDESK_PUBLIC_URL", self.public_url)
        for name, url in (
            ("DOCDESK_DOCUMENT_SERVER_URL", self.document_server_url),
            ("DOCDESK_DOCUMENT_SERVER_INTERNAL_URL", self.document_server_internal_url),
        ):
            if url is not None:
                _check_url(name, url)
        if not self.jwt_header or not self.jwt_header.isascii():
            raise ConfigurationError("DOCDESK_JWT_HEADER must be a header name")
        if self.max_download_bytes <= 0:
            raise ConfigurationError("DOCDESK_MAX_DOWNLOAD_BYTES must be positive")

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
    ) -> Settings:
        """Build the settings from ``DOCDESK_*`` variables.

        ``host`` and ``port`` are where ``docdesk serve`` listens; they make
        the default public URL. A missing or unsafe value raises
        ConfigurationError naming the variable.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(f"DOCDESK_{name}", "").strip()
            return value or None

        ds_url = get("DOCUMENT_SERVER_URL")
        secret = env.get("DOCDESK_JWT_SECRET")
        if secret is not None:
            # A secret read from a file arrives with its final newline.
            secret = secret.strip()
        if secret is None and ds_url is None:
            secret = secrets.token_urlsafe(MIN_SECRET_BYTES)
        elif secret is None:
            raise ConfigurationError(
                "DOCDESK_JWT_SECRET is required with DOCDESK_DOCUMENT_SERVER_URL: "
                "set it to the Document Server's JWT secret"
            )

        data_dir = Path(get("DATA_DIR") or "docdesk-data")
        max_bytes = _int("DOCDESK_MAX_DOWNLOAD_BYTES", get("MAX_DOWNLOAD_BYTES"))
        # Only an unset variable takes the default: a 0 must reach the check.
        if max_bytes is None:
            max_bytes = DEFAULT_MAX_DOWNLOAD_BYTES
        return cls(
            jwt_secret=secret,
            data_dir=data_dir,
            public_url=get("PUBLIC_URL") or _default_public_url(host, port),
            document_server_url=ds_url,
            document_server_internal_url=get("DOCUMENT_SERVER_INTERNAL_URL"),
            jwt_header=get("JWT_HEADER") or "Authorization",
            database_url=get("DATABASE_URL"),
            storage_url=get("STORAGE_URL"),
            callback_allow=_networks("DOCDESK_CALLBACK_ALLOW", get("CALLBACK_ALLOW")),
            trusted_proxies=_networks(
                "DOCDESK_TRUSTED_PROXIES", get("TRUSTED_PROXIES")
            ),
            max_download_bytes=max_bytes,
            max_upload_bytes=max_bytes,
        )

    @property
    def uses_simulator(self) -> bool:
        return self.document_server_url is None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'docdesk.sqlite3').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return (self.data_dir / "blobs").resolve().as_uri()

    @property
    def effective_document_server_url(self) -> str:
        """The DS the browser loads ``api.js`` from: the simulator if none is set."""
        if self.document_server_url is None:
            return self.public_url.rstrip("/") + SIMULATOR_PATH
        return self.document_server_url

    @property
    def document_server_origins(self) -> tuple[str, ...]:
        """The origins whose links docdesk may download, public first."""
        urls = (self.effective_document_server_url, self.document_server_internal_url)
        return tuple(dict.fromkeys(_origin(url) for url in urls if url))


def _check_secret(name: str, secret: str) -> None:
    global _warned_short_secret
    if secret.strip() in WEAK_SECRETS:
        raise ConfigurationError(
            f"{name} is empty or the well-known default 'secret': set it to the "
            "Document Server's JWT secret (at least 32 random bytes)"
        )
    if len(secret.encode()) < MIN_SECRET_BYTES and not _warned_short_secret:
        _warned_short_secret = True
        logger.warning(
            "weak secret variable=%s bytes=%d advice=use at least %d random bytes",
            name,
            len(secret.encode()),
            MIN_SECRET_BYTES,
        )


def _check_url(name: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigurationError(f"{name} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an http:// or https:// URL")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}:{parts.port or default}"


def _default_public_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _int(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number of bytes") from None


def _networks(name: str, value: str | None) -> tuple[Network, ...]:
    if value is None:
        return ()
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in value.split(",")
            if part.strip()
        )
    except ValueError as exc:
        message = f"{name} must be CIDRs separated by commas: {exc}"
        raise ConfigurationError(message) from None
