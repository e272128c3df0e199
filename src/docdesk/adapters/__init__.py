"""docdesk inside an application that already has a web framework.

- Starlette or FastAPI: mount the service, ``docdesk.web.create_app``, as an
  ASGI sub-application (the README shows how, with its lifespan).
- Flask: :class:`docdesk.adapters.flask.FlaskDocDesk`.
- Django: ``include("docdesk.adapters.django")`` and the async helpers of
  :mod:`docdesk.adapters.django`.

The Flask and Django adapters serve only what the Document Server calls
(the signed file links and the callback) and hand the application's own
views a signed editor config; they do not re-expose the JSON API. They are
imported on demand, so neither framework is needed for the rest of docdesk.
"""

from docdesk.adapters.runner import DeskRunner

__all__ = ["DeskRunner"]
