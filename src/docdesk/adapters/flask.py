"""docdesk inside a Flask application.

One line puts the Document Server's endpoints under ``/docdesk`` and gives
the application's own views the editor config::

    from flask import Flask, render_template
    from docdesk import User
    from docdesk.adapters.flask import FlaskDocDesk

    app = Flask(__name__)
    app.config["DOCDESK_PUBLIC_URL"] = "https://app.example.com/docdesk"
    docdesk = FlaskDocDesk(app)

    @app.get("/documents/<document_id>/edit")
    def edit(document_id):
        config = docdesk.editor_config(document_id, User(id="ann", name="Ann"))
        return render_template(
            "edit.html", config=config, api_js=docdesk.api_js_url
        )

Settings come from ``DOCDESK_*`` keys of ``app.config`` over the same
variables in the environment (see :meth:`docdesk.Settings.from_env`), or
from a :class:`~docdesk.Settings` handed in. ``DOCDESK_PUBLIC_URL`` is where
the Document Server reaches the blueprint, prefix included:
``https://app.example.com/docdesk``.

Flask is WSGI and docdesk is async: the desk runs on an event loop of its
own in a background thread (:class:`~docdesk.adapters.runner.DeskRunner`),
opened on first use, one per process; views block on it and downloads
stream out of it a chunk at a time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import IO, Any, TypeVar

from docdesk.adapters.endpoints import (
    MAX_CALLBACK_BYTES,
    Answer,
    DSRequest,
    Readable,
    Route,
    answer,
    api_js_url,
    check_prefix,
    file_chunks,
    headers_from,
    read_at_most,
    refusal,
    settings_from,
)
from docdesk.adapters.runner import DeskRunner
from docdesk.catalog import DocumentRecord, VersionRecord
from docdesk.desk import DocDesk
from docdesk.editor import EditorMode, User
from docdesk.settings import Settings

try:
    import flask
    from werkzeug.datastructures import FileStorage
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "docdesk.adapters.flask needs Flask: pip install 'docdesk[flask]'"
    ) from exc

__all__ = ["FlaskDocDesk"]

T = TypeVar("T")


class FlaskDocDesk:
    """docdesk's DS-facing endpoints in a Flask app, and helpers for its views.

    The blueprint (``self.blueprint``, named ``docdesk``) serves the signed
    links the editor config hands the Document Server: the document's file,
    the callback, and the files of older versions. It honours
    ``DOCDESK_CALLBACK_ALLOW`` as the service does. An app that protects
    POSTs from CSRF must exempt it: the DS posts the callback.
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        settings: Settings | None = None,
        url_prefix: str = "/docdesk",
    ) -> None:
        self.url_prefix = "/" + url_prefix.strip("/")
        self.blueprint = self._blueprint()
        self.runner = DeskRunner(self._load_settings)
        self._settings = settings
        self._config: Mapping[str, Any] = {}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Register the blueprint; the desk opens on the first request."""
        self._config = app.config
        app.extensions["docdesk"] = self
        app.register_blueprint(self.blueprint, url_prefix=self.url_prefix)

    # For the application's own views

    @property
    def api_js_url(self) -> str:
        """The Document Server's ``api.js``, for the editor page's script tag."""
        return api_js_url(self.runner.settings)

    def editor_config(
        self,
        document_id: str,
        user: User,
        *,
        mode: EditorMode = EditorMode.EDIT,
        lang: str = "en",
    ) -> dict[str, Any]:
        """The signed config for ``new DocsAPI.DocEditor``, as in the service."""
        return self.call(
            lambda desk: desk.editor_config(document_id, user, mode=mode, lang=lang)
        )

    def upload(
        self,
        file: FileStorage | Readable | IO[bytes],
        filename: str | None = None,
        *,
        author: User | None = None,
    ) -> DocumentRecord:
        """Keep an uploaded file as a new document; streamed, never whole.

        ``file`` is what ``request.files`` holds, or any binary file; its
        ``filename`` names the document unless ``filename`` does.
        """
        name = filename or getattr(file, "filename", None) or ""
        return self.call(
            lambda desk: desk.upload(name, file_chunks(file), author=author)
        )

    def documents(self) -> list[DocumentRecord]:
        return self.call(lambda desk: desk.documents())

    def document(self, document_id: str) -> DocumentRecord:
        return self.call(lambda desk: desk.document(document_id))

    def versions(self, document_id: str) -> list[VersionRecord]:
        return self.call(lambda desk: desk.versions(document_id))

    def call(self, work: Callable[[DocDesk], Awaitable[T]]) -> T:
        """Run ``work(desk)`` on the desk, for anything the helpers lack."""
        return self.runner.call(work)

    def close(self) -> None:
        """Close the desk; the next call opens it again."""
        self.runner.close()

    # The Document Server's endpoints

    def _blueprint(self) -> flask.Blueprint:
        blueprint = flask.Blueprint("docdesk", __name__)
        base = "/ds/documents/<document_id>"
        blueprint.add_url_rule(
            f"{base}/file", "ds_file", self._ds_file, methods=["GET"]
        )
        blueprint.add_url_rule(
            f"{base}/callback", "ds_callback", self._ds_callback, methods=["POST"]
        )
        blueprint.add_url_rule(
            f"{base}/versions/<int:number>/file",
            "ds_version",
            self._ds_version,
            methods=["GET"],
        )
        blueprint.add_url_rule(
            f"{base}/versions/<int:number>/changes",
            "ds_changes",
            self._ds_changes,
            methods=["GET"],
        )
        return blueprint

    def _ds_file(self, document_id: str) -> flask.Response:
        return self._serve(Route.FILE, document_id)

    def _ds_callback(self, document_id: str) -> flask.Response:
        return self._serve(Route.CALLBACK, document_id)

    def _ds_version(self, document_id: str, number: int) -> flask.Response:
        return self._serve(Route.VERSION, document_id, number)

    def _ds_changes(self, document_id: str, number: int) -> flask.Response:
        return self._serve(Route.CHANGES, document_id, number)

    def _serve(self, route: Route, document_id: str, number: int = 0) -> flask.Response:
        request = flask.request
        ds_request = DSRequest(
            route=route,
            document_id=document_id,
            path=request.path,
            signature=request.args.get("sig", ""),
            key=request.args.get("key", ""),
            number=number,
            headers=headers_from(request.headers.items()),
            peer=request.remote_addr,
        )
        settings = self.runner.settings
        refused = refusal(ds_request, settings)
        if refused is not None:
            return self._response(refused)

        if route is Route.CALLBACK:
            body = read_at_most(request.stream.read, MAX_CALLBACK_BYTES + 1)
            ds_request = replace(ds_request, body=body)
        return self._response(
            self.runner.call(lambda desk: answer(desk, ds_request, settings))
        )

    def _response(self, answered: Answer) -> flask.Response:
        if answered.chunks is None:
            return flask.Response(
                json.dumps(answered.json),
                status=answered.status,
                mimetype="application/json",
                headers=answered.headers,
            )
        return flask.Response(
            self.runner.iterate(answered.chunks),
            status=answered.status,
            content_type=answered.media_type,
            headers=answered.headers,
            direct_passthrough=True,
        )

    # Settings

    def _load_settings(self) -> Settings:
        if self._settings is not None:
            settings = self._settings
        else:
            settings = settings_from(self._config, os.environ)
        check_prefix(settings, self.url_prefix)
        return settings
