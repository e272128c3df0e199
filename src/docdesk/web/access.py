"""Who may use the JSON API and the pages: API tokens and signed-in people.

Programs call the JSON API with ``Authorization: Bearer <token>``, a token
from ``DOCDESK_API_TOKENS``. People sign in on ``/login`` with a password
from ``DOCDESK_USERS_FILE`` and then carry a session cookie, which opens the
pages and the API calls those pages make. The Document Server proves itself
on the routes under ``/ds/`` with signed links and its JWT, never with a
person's credential: those routes, the static files and the simulated
Document Server's protocol pass untouched. The simulator's control API,
which drives its editors, is guarded as the JSON API is. Anything else is
closed to an unknown caller, routes added later included.

With neither tokens nor users configured access is open, as on a developer's
machine; ``docdesk serve`` refuses to listen beyond loopback that way.

A session is only a cookie, ``base64(user id)|expiry|mac``, and nothing is
kept on the server. The mac covers the user's stored password hash too, so a
new password or a removed user ends the sessions at the next start-up. A
call that changes something and carries only the cookie must show that it
comes from the service's own pages: an ``Origin`` (or ``Referer``) of this
host, or ``X-Requested-With: docdesk``, a header that a page of another site
cannot send without a CORS preflight that docdesk never grants.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Sequence
from enum import Enum
from urllib.parse import quote, urlsplit

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from docdesk.editor import EditorMode, User
from docdesk.errors import InvalidRequest
from docdesk.settings import (
    SIMULATOR_PATH,
    ApiToken,
    Network,
    PasswordHash,
    Person,
    Settings,
)
from docdesk.web.guard import forwarded_https
from docdesk.web.scopes import route_path, shown
from docdesk.web.throttle import SignInThrottle

__all__ = [
    "LOGIN_PATH",
    "LOGOUT_PATH",
    "SESSION_COOKIE",
    "AccessControl",
    "access_control",
    "editor_request",
    "hash_password",
    "safe_next",
    "signed_in",
    "verify_password",
]

logger = logging.getLogger(__name__)

LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
SESSION_COOKIE = "docdesk_session"
SESSION_LIFETIME = 12 * 3600
# scrypt at 16 MiB and about 50 ms a try: slow for a guesser, quick for a person.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
DIGEST_BYTES = 32
# What the header must say for a cookie-carried change not sent by a form.
REQUESTED_WITH = "docdesk"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Where the identity of a request is left for the routes, in scope["state"]:
# the signed-in person, or the name of the API token a program called with.
_USER_KEY = "docdesk_user"
_PROGRAM_KEY = "docdesk_program"
_ACCESS_KEY = "docdesk_access"
_SESSION_LABEL = b"docdesk session v1"
_WEBSOCKET_POLICY = 1008


class _Area(Enum):
    """What a path is, for the question of who may call it."""

    PUBLIC = "public"
    API = "api"
    PAGE = "page"


def _area(path: str) -> _Area:
    # The DS's routes prove themselves; the simulator's control API is how
    # its editor frame edits, so it is a person's, like the JSON API.
    if path.startswith((f"{SIMULATOR_PATH}/simulator/", "/api/", "/metrics")):
        return _Area.API
    if path.startswith(("/ds/", f"{SIMULATOR_PATH}/", "/static/")):
        return _Area.PUBLIC
    if path in (LOGIN_PATH, LOGOUT_PATH):
        return _Area.PUBLIC
    return _Area.PAGE


class AccessControl:
    """Ask every caller of the JSON API and the pages who it is.

    With ``open_access`` every request passes, as when nothing is
    configured. Otherwise the JSON API takes a bearer token from ``tokens``
    or a session cookie, the pages a session cookie (anyone else is sent to
    the sign-in page), and the routes of the Document Server pass untouched.
    The identity is left in ``scope["state"]``: :func:`signed_in` reads it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: Sequence[ApiToken],
        users: Sequence[Person],
        session_secret: str,
        open_access: bool,
        public_url: str | None = None,
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        self.app = app
        self.open_access = open_access
        self._trusted_proxies = tuple(trusted_proxies)
        self._tokens = [(t, _digest(t.token)) for t in tokens]
        self._users = {user.id: user for user in users}
        self._session_key = hmac.new(
            session_secret.encode(), _SESSION_LABEL, hashlib.sha256
        ).digest()
        public = urlsplit(public_url) if public_url else None
        self._public_host = public.netloc.lower() if public else None
        self._public_https = public is not None and public.scheme == "https"
        # An unknown id costs a hash as a known one does, so the time taken
        # does not say which ids exist.
        model = users[0].password if users else None
        self._decoy = PasswordHash(
            n=model.n if model else SCRYPT_N,
            r=model.r if model else SCRYPT_R,
            p=model.p if model else SCRYPT_P,
            salt=secrets.token_bytes(SALT_BYTES),
            digest=secrets.token_bytes(DIGEST_BYTES),
        )
        # XXX: counted in this process only: behind a balancer each instance
        # allows its own share of tries. Sharing the counts through the
        # catalog would close that.
        self._throttle = SignInThrottle()

    @classmethod
    def for_settings(cls, app: ASGIApp, settings: Settings | None) -> AccessControl:
        """The middleware as ``settings`` configure it; open with no settings."""
        if settings is None:
            secret = secrets.token_urlsafe(32)
            return cls(
                app, tokens=(), users=(), session_secret=secret, open_access=True
            )
        return cls(
            app,
            tokens=settings.api_tokens,
            users=settings.users,
            session_secret=settings.session_secret or settings.jwt_secret,
            open_access=not settings.access_controlled,
            public_url=settings.public_url,
            trusted_proxies=settings.trusted_proxies,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[_ACCESS_KEY] = self
        area = _area(route_path(scope))
        if self.open_access or area is _Area.PUBLIC:
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        if area is _Area.API and authorization is not None:
            token = self._token(authorization)
            if token is None:
                await _refuse(scope, receive, send, 401, "the API token is not valid")
                return
            state[_PROGRAM_KEY] = token.name
            await self.app(scope, receive, send)
            return

        user = self._session_user(headers)
        if user is None:
            await self._sign_in_first(scope, receive, send, area)
            return
        if _changes_something(scope) and not self._from_own_pages(headers):
            logger.info("cross-site change refused path=%s", shown(scope["path"], 128))
            message = (
                "a change made with a session cookie must come from docdesk's own "
                f"pages: send X-Requested-With: {REQUESTED_WITH}"
            )
            await _refuse(scope, receive, send, 403, message)
            return
        state[_USER_KEY] = user
        await self.app(scope, receive, send)

    # Signing in and out, for the routes of the sign-in page

    def sign_in_wait(self, user_id: str, address: str | None) -> int:
        """Seconds before ``user_id`` may try to sign in from ``address``.

        0 when a try may be made now; otherwise too many tries failed lately.
        """
        return self._throttle.retry_after(user_id, address)

    async def sign_in(
        self, user_id: str, password: str, address: str | None = None
    ) -> Person | None:
        """The user whose id and password these are, or None.

        The hash runs in a thread: at about 50 ms it would stall every other
        request on the event loop. Each failure counts against the id and the
        address it came from (see :meth:`sign_in_wait`), from before the hash.
        """
        self._throttle.failed(user_id, address)
        user = self._users.get(user_id)
        stored = user.password if user is not None else self._decoy
        matches = await anyio.to_thread.run_sync(verify_password, password, stored)
        if matches and user is not None:
            logger.info("sign-in user=%s", shown(user.id, 128))
            self._throttle.succeeded(user_id, address)
            return user
        logger.warning("sign-in refused user=%s", shown(user_id, 128))
        return None

    def start_session(self, response: Response, user: Person, scope: Scope) -> None:
        """Set the session cookie for ``user`` on ``response``."""
        expiry = int(time.time()) + SESSION_LIFETIME
        subject = _b64(user.id)
        cookie = f"{subject}|{expiry}|{self._mac(subject, expiry, user)}"
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=SESSION_LIFETIME,
            path="/",
            secure=self._secure(scope),
            httponly=True,
            samesite="lax",
        )

    def end_session(self, response: Response, scope: Scope) -> None:
        response.delete_cookie(
            SESSION_COOKIE,
            path="/",
            secure=self._secure(scope),
            httponly=True,
            samesite="lax",
        )

    # Checks

    def _token(self, authorization: str) -> ApiToken | None:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        # Every token is compared, each in constant time: neither the time
        # nor the order says how close a guess came.
        digest = _digest(presented.strip())
        found = None
        for token, expected in self._tokens:
            if hmac.compare_digest(digest, expected):
                found = token
        return found

    def _session_user(self, headers: Headers) -> User | None:
        cookie = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE, "")
        subject, _, rest = cookie.partition("|")
        expiry_text, _, mac = rest.partition("|")
        user = self._users.get(_unb64(subject) or "")
        if user is None or not (expiry_text.isascii() and expiry_text.isdigit()):
            return None

        expiry = int(expiry_text)
        expected = self._mac(subject, expiry, user)
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        if expiry < time.time():
            return None
        return User(id=user.id, name=user.name)

    def _mac(self, subject: str, expiry: int, user: Person) -> str:
        message = f"{subject}|{expiry}|{user.password}".encode()
        return hmac.new(self._session_key, message, hashlib.sha256).hexdigest()

    def _from_own_pages(self, headers: Headers) -> bool:
        if headers.get("x-requested-with", "").strip() == REQUESTED_WITH:
            return True
        source = headers.get("origin")
        if source is None:
            source = headers.get("referer")
        if not source or source == "null":
            return False
        try:
            host = urlsplit(source).netloc.lower()
        except ValueError:
            return False
        # The scheme is left out: behind a proxy that ends TLS the service
        # sees http while the browser's Origin says https.
        own = {headers.get("host", "").lower(), self._public_host}
        return bool(host) and host in own

    def _secure(self, scope: Scope) -> bool:
        """Whether the browser reached docdesk over https, here or at a proxy."""
        return (
            scope.get("scheme") in ("https", "wss")
            or self._public_https
            or forwarded_https(scope, self._trusted_proxies)
        )

    async def _sign_in_first(
        self, scope: Scope, receive: Receive, send: Send, area: _Area
    ) -> None:
        visit = scope["type"] == "http" and scope["method"] in ("GET", "HEAD")
        if area is _Area.PAGE and visit:
            path = scope["path"]
            query = scope.get("query_string", b"").decode("latin-1")
            wanted = f"{path}?{query}" if query else path
            location = f"{LOGIN_PATH}?next={quote(wanted, safe='/')}"
            await RedirectResponse(location, status_code=303)(scope, receive, send)
            return
        message = (
            "sign in, or send an API token as 'Authorization: Bearer <token>'"
            if area is _Area.API
            else "sign in first"
        )
        await _refuse(scope, receive, send, 401, message)


def access_control(scope: Scope) -> AccessControl | None:
    """The middleware this request passed through, for the sign-in routes."""
    found = scope.get("state", {}).get(_ACCESS_KEY)
    return found if isinstance(found, AccessControl) else None


def signed_in(scope: Scope) -> User | None:
    """The person this request comes from, if one signed in.

    A host application that mounts docdesk may set it too, as
    ``scope["state"]["docdesk_user"]``: the editor config names that user.
    """
    found = scope.get("state", {}).get(_USER_KEY)
    return found if isinstance(found, User) else None


def safe_next(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path on this site, else ``default``.

    Refuses what a browser would take to another site: ``//host``,
    backslashes, which browsers read as slashes, and control characters,
    which they drop before reading the rest.
    """
    if not value or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


# Passwords


def hash_password(
    password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> PasswordHash:
    """``password`` hashed with scrypt and a fresh random salt.

    ``n``, ``r`` and ``p`` are scrypt's costs; the defaults suit a sign-in.
    """
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, n, r, p, salt, DIGEST_BYTES)
    return PasswordHash(n=n, r=r, p=p, salt=salt, digest=digest)


def verify_password(password: str, stored: PasswordHash) -> bool:
    """Whether ``password`` is the one ``stored`` was made from; constant time."""
    computed = _scrypt(
        password, stored.n, stored.r, stored.p, stored.salt, len(stored.digest)
    )
    return hmac.compare_digest(computed, stored.digest)


def _scrypt(password: str, n: int, r: int, p: int, salt: bytes, size: int) -> bytes:
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=r,
        p=p,
        # What OpenSSL needs for these parameters, and a little over.
        maxmem=128 * r * (n + p + 2) + 1024 * 1024,
        dklen=size,
    )


# Small helpers


def _changes_something(scope: Scope) -> bool:
    # A WebSocket handshake is a GET, but what it carries may change things.
    return scope["type"] == "websocket" or scope["method"] not in SAFE_METHODS


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, message: str
) -> None:
    if scope["type"] == "websocket":
        await WebSocketClose(code=_WEBSOCKET_POLICY)(scope, receive, send)
        return
    code = "unauthorized" if status == 401 else "forbidden"
    headers = {"WWW-Authenticate": 'Bearer realm="docdesk"'} if status == 401 else {}
    response = JSONResponse(
        {"error": code, "message": message}, status_code=status, headers=headers
    )
    await response(scope, receive, send)


def _digest(token: str) -> bytes:
    # Equal lengths for compare_digest, whatever length a caller sends.
    return hashlib.sha256(token.encode()).digest()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return raw.decode()
    except (binascii.Error, ValueError):
        return None


# Who edits when nobody signed in and the query names no one.
ANONYMOUS = User(id="docdesk-user", name="docdesk user")


def editor_request(request: Request) -> tuple[EditorMode, User]:
    """The mode and the user an editor is asked for.

    A signed-in person edits as themselves, whatever the query says; a
    program with an API token names the user it acts for in the query.
    """
    query = request.query_params
    try:
        mode = EditorMode(query.get("mode", "edit"))
        user = signed_in(request.scope) or User(
            id=query.get("user_id") or ANONYMOUS.id,
            name=query.get("user_name") or ANONYMOUS.name,
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return mode, user
