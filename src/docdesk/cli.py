"""The ``docdesk`` command.

The CLI is the one place that configures logging; the library only logs.
"""

from __future__ import annotations

import logging
import sys

import click

from docdesk.errors import ConfigurationError
from docdesk.settings import Settings

__all__ = ["main"]

logger = logging.getLogger("docdesk")


@click.group()
@click.version_option(package_name="docdesk")
def main() -> None:
    """docdesk: edit documents in ONLYOFFICE Docs and never lose a save."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--log-level", default="info", show_default=True)
def serve(host: str, port: int, log_level: str) -> None:
    """Serve the document library and the endpoints the Document Server calls."""
    import uvicorn

    from docdesk.web import create_app

    _configure_logging(log_level)
    settings = _settings(host=host, port=port)
    if settings.uses_simulator:
        logger.warning(
            "no Document Server configured; set DOCDESK_DOCUMENT_SERVER_URL "
            "and DOCDESK_JWT_SECRET to use ONLYOFFICE Docs"
        )
    logger.info(
        "serving public_url=%s data_dir=%s", settings.public_url, settings.data_dir
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        server_header=False,
    )


def _settings(**kwargs: object) -> Settings:
    try:
        return Settings.from_env(**kwargs)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        click.echo(f"docdesk: {exc.message}", err=True)
        sys.exit(2)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
