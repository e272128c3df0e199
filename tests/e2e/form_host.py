"""A host application's page, as a server-rendered app would write it.

It puts two docdesk editors on one page, the first inside a form whose
submit button captures the document before the form posts, and answers the
post by echoing the submitted fields as JSON, so a test can read what the
server would have received.
"""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from docdesk.web.pages import API_JS_PATH

__all__ = ["HOST_ROUTES"]


async def report_form(request: Request) -> Response:
    """``?report=<id>&appendix=<id>``: a form around one editor, and a second."""
    report = escape(request.query_params["report"])
    appendix = escape(request.query_params["appendix"])
    settings = request.app.state.settings
    api_js = escape(settings.effective_document_server_url + API_JS_PATH)
    return HTMLResponse(f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Expense report</title>
  <link rel="stylesheet" href="/static/docdesk.css">
  <style>.editor {{ height: 22rem; }}</style>
</head>
<body>
<main>
  <h1>Expense report</h1>
  <form method="post" action="/host/submitted">
    <label for="comment">Comment</label>
    <input id="comment" name="comment" type="text" value="All receipts attached">
    <div class="editor" id="report-editor" data-docdesk-editor
         data-document-id="{report}" data-user-id="clerk" data-user-name="Clerk"></div>
    <input type="hidden" name="report_version" value="">
    <button type="submit" name="action" value="send" class="primary"
            data-docdesk-capture="{report}" data-docdesk-field="report_version">
      Save and send</button>
  </form>
  <h2>Appendix</h2>
  <div class="editor" id="appendix-editor" data-docdesk-editor
       data-document-id="{appendix}" data-user-id="clerk" data-user-name="Clerk"></div>
</main>
<script src="/static/docdesk.js" data-docdesk-api="{api_js}"></script>
</body>
</html>""")


async def submitted(request: Request) -> Response:
    form = await request.form()
    return JSONResponse({name: str(value) for name, value in form.items()})


HOST_ROUTES = [
    Route("/host/report", report_form, methods=["GET"]),
    Route("/host/submitted", submitted, methods=["POST"]),
]
