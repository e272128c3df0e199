"""The docdesk service: its routes, on Starlette."""

from docdesk.web.app import create_app

__all__ = ["create_app"]
