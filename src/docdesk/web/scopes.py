"""What the service's middlewares read from an ASGI scope, read one way."""

from __future__ import annotations

from starlette.types import Scope

__all__ = ["route_path", "shown"]


def route_path(scope: Scope) -> str:
    """The path the app routes on: without the root path it is mounted at."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


def shown(text: str, limit: int = 256) -> str:
    """A caller's text fit for one log line: no line breaks or controls."""
    return text.encode("unicode_escape").decode("ascii")[:limit]
