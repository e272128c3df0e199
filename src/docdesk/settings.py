"""The service's own knobs, read once from ``DOCDESK_*`` variables.

Nothing in docdesk reads the environment after :meth:`Settings.from_env`:
the rest of the code is handed a frozen :class:`Settings`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import math
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from docdesk.errors import ConfigurationError

__all__ = [
    "DEFAULT_CALLBACK_LOG_DAYS",
    "DEFAULT_MAX_DOWNLOAD_BYTES",
    "DEFAULT_RECOVERY_INTERVAL",
    "SIMULATOR_PATH",
    "ApiToken",
    "Network",
    "PasswordHash",
    "Person",
    "Settings",
]

logger = logging.getLogger(__name__)

# The Document Server's own cap on a downloaded file (maxDownloadBytes).
DEFAULT_MAX_DOWNLOAD_BYTES = 100 * 1024 * 1024
# How long the callback log keeps a record; 0 keeps it forever.
DEFAULT_CALLBACK_LOG_DAYS = 30
# How often the recovery job asks the DS for forgotten files, in seconds.
DEFAULT_RECOVERY_INTERVAL = 300.0
# Where `docdesk serve` mounts the built-in simulator when no DS is set.
SIMULATOR_PATH = "/ds-simulator"
MIN_SECRET_BYTES = 32
WEAK_SECRETS = frozenset({"", "secret"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A token's name shows in logs; the token itself never does.
TOKEN_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# What may follow "Bearer " in a header: no spaces, commas or controls.
TOKEN_CHARACTERS = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
MIN_TOKEN_CHARS = 32
# Bounds on a stored scrypt hash: its cost must not stall or exhaust the service.
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
MIN_SALT_BYTES = 16
MIN_DIGEST_BYTES = 32

_warned_short_secret = False


@dataclass(frozen=True)
class ApiToken:
    """A program's credential for the JSON API: ``Authorization: Bearer <token>``."""

    name: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class PasswordHash:
    """A password as ``docdesk user hash`` stores it: ``scrypt$n$r$p$salt$hash``.

    The salt and the hash are in base64; ``n``, ``r`` and ``p`` are scrypt's
    cost parameters, kept beside them so that the cost can rise later.
    """

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __post_init__(self) -> None:
        if self.n < 2 or self.n & (self.n - 1) or not 1 <= self.r <= 32:
            raise ValueError("n must be a power of 2 and r from 1 to 32")
        if not 1 <= self.p <= 16 or 128 * self.n * self.r > MAX_SCRYPT_MEMORY:
            raise ValueError("p must be from 1 to 16, and 128*n*r at most 256 MiB")
        if len(self.salt) < MIN_SALT_BYTES or len(self.digest) < MIN_DIGEST_BYTES:
            raise ValueError("the salt or the hash is too short")

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Read the stored form; ValueError says what is wrong, never the hash."""
        parts = text.split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("a password hash reads scrypt$n$r$p$salt$hash")
        try:
            n, r, p = (int(part) for part in parts[1:4])
            salt, digest = (base64.b64decode(part, validate=True) for part in parts[4:])
        except (ValueError, binascii.Error):
            raise ValueError("a password hash has numbers and base64 fields") from None
        return cls(n=n, r=r, p=p, salt=salt, digest=digest)

    def __str__(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return f"scrypt${self.n}${self.r}${self.p}${salt}${digest}"


@dataclass(frozen=True)
class Person:
    """Someone who signs in to the pages, from ``DOCDESK_USERS_FILE``.

    ``id`` and ``name`` become ``editorConfig.user`` in the editors they open.
    """

    id: str
    name: str
    password: PasswordHash = field(repr=False)


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
    # Who may use the JSON API and the pages; with neither, anyone may.
    api_tokens: tuple[ApiToken, ...] = field(default=(), repr=False)
    users: tuple[Person, ...] = field(default=(), repr=False)
    # Signs the pages' session cookies; None: derived from the JWT secret.
    session_secret: str | None = field(default=None, repr=False)
    callback_log_days: int = DEFAULT_CALLBACK_LOG_DAYS
    # Seconds between rounds of the forgotten-files job; 0 turns it off.
    recovery_interval: float = DEFAULT_RECOVERY_INTERVAL

    def __post_init__(self) -> None:
        _check_secret("DOCDESK_JWT_SECRET", self.jwt_secret)
        _check_tokens(self.api_tokens)
        _check_users(self.users)
        if self.session_secret is not None and (
            len(self.session_secret) < MIN_SECRET_BYTES
        ):
            raise ConfigurationError(
                f"DOCDESK_SESSION_SECRET must have at least {MIN_SECRET_BYTES} "
                "random characters"
            )
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
        if self.callback_log_days < 0:
            raise ConfigurationError(
                "DOCDESK_CALLBACK_LOG_DAYS must be a whole number of days, "
                "0 to keep the callback log forever"
            )
        if not 0 <= self.recovery_interval < math.inf:
            raise ConfigurationError(
                "DOCDESK_RECOVERY_INTERVAL must be a number of seconds, 0 for off"
            )

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
        log_days = _int(
            "DOCDESK_CALLBACK_LOG_DAYS", get("CALLBACK_LOG_DAYS"), unit="days"
        )
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
            api_tokens=_api_tokens(get("API_TOKENS"), get("API_TOKENS_FILE")),
            users=_users(get("USERS_FILE")),
            session_secret=get("SESSION_SECRET"),
            callback_log_days=(
                DEFAULT_CALLBACK_LOG_DAYS if log_days is None else log_days
            ),
            recovery_interval=_seconds(
                "DOCDESK_RECOVERY_INTERVAL",
                get("RECOVERY_INTERVAL"),
                DEFAULT_RECOVERY_INTERVAL,
            ),
        )

    @property
    def uses_simulator(self) -> bool:
        return self.document_server_url is None

    @property
    def access_controlled(self) -> bool:
        """Whether the JSON API and the pages ask who is calling."""
        return bool(self.api_tokens or self.users)

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


def _int(name: str, value: str | None, *, unit: str = "bytes") -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number of {unit}") from None


def _seconds(name: str, value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds") from None


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


# Who may call: API tokens and the people of the pages


def _api_tokens(listed: str | None, file: str | None) -> tuple[ApiToken, ...]:
    if listed is not None and file is not None:
        raise ConfigurationError(
            "set DOCDESK_API_TOKENS or DOCDESK_API_TOKENS_FILE, not both"
        )
    if listed is not None:
        entries = [(f"entry {n}", e) for n, e in enumerate(listed.split(","), 1)]
        return _parse_tokens("DOCDESK_API_TOKENS", entries)
    if file is not None:
        return _parse_tokens("DOCDESK_API_TOKENS_FILE", _lines(file, "API_TOKENS_FILE"))
    return ()


def _parse_tokens(
    variable: str, entries: list[tuple[str, str]]
) -> tuple[ApiToken, ...]:
    tokens = []
    for where, entry in entries:
        name, colon, token = entry.strip().partition(":")
        if not colon:
            # The entry may be a bare token: never quote it back.
            raise ConfigurationError(f"{variable} {where} must read name:token")
        tokens.append(ApiToken(name=name.strip(), token=token.strip()))
    _check_tokens(tokens, variable)
    return tuple(tokens)


def _check_tokens(
    tokens: tuple[ApiToken, ...] | list[ApiToken],
    variable: str = "DOCDESK_API_TOKENS",
) -> None:
    for token in tokens:
        if not TOKEN_NAME.fullmatch(token.name):
            raise ConfigurationError(
                f"{variable}: a token's name must be 1 to 64 letters, digits, "
                f"'.', '_' or '-', not {token.name[:64]!r}"
            )
        if len(token.token) < MIN_TOKEN_CHARS or not TOKEN_CHARACTERS.fullmatch(
            token.token
        ):
            raise ConfigurationError(
                f"{variable}: the token named {token.name!r} must have at least "
                f"{MIN_TOKEN_CHARS} characters, none of them spaces or commas: "
                "make one with `docdesk token new NAME`"
            )
    names = [token.name for token in tokens]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{variable}: two tokens have the same name")


def _users(file: str | None) -> tuple[Person, ...]:
    """``id:display name:password-hash`` per line; ``#`` starts a comment."""
    if file is None:
        return ()
    users = []
    for where, line in _lines(file, "USERS_FILE"):
        user_id, colon, rest = line.partition(":")
        name, colon2, stored = rest.rpartition(":")
        if not (colon and colon2):
            raise ConfigurationError(
                f"DOCDESK_USERS_FILE {where} must read id:display name:password-hash"
            )
        try:
            password = PasswordHash.parse(stored.strip())
        except ValueError as exc:
            raise ConfigurationError(
                f"DOCDESK_USERS_FILE {where}: {exc}; make one with `docdesk user hash`"
            ) from None
        user_id = user_id.strip()
        users.append(
            Person(id=user_id, name=name.strip() or user_id, password=password)
        )
    _check_users(users)
    return tuple(users)


def _check_users(users: tuple[Person, ...] | list[Person]) -> None:
    for user in users:
        # The limits of editorConfig.user, which the id and name become.
        if not 1 <= len(user.id) <= 128 or ":" in user.id or not user.id.isprintable():
            raise ConfigurationError(
                "DOCDESK_USERS_FILE: a user id must have 1 to 128 printable "
                f"characters and no ':', not {user.id[:128]!r}"
            )
        if len(user.name) > 128 or not user.name.isprintable():
            raise ConfigurationError(
                f"DOCDESK_USERS_FILE: the name of {user.id!r} must have at most "
                "128 printable characters"
            )
    ids = [user.id for user in users]
    if len(set(ids)) != len(ids):
        raise ConfigurationError("DOCDESK_USERS_FILE: two users have the same id")


def _lines(file: str, variable: str) -> list[tuple[str, str]]:
    """The file's lines that say something, each with where it is."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigurationError(
            f"DOCDESK_{variable} names a file docdesk cannot read: {file}: {reason}"
        ) from None
    return [
        (f"line {number}", line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
