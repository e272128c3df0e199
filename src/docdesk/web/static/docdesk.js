/*
 * docdesk.js: ONLYOFFICE editors on any page, saved before a form posts.
 *
 * Editors: every element with data-docdesk-editor and data-document-id
 * becomes an editor when the page loads (several per page are fine). It
 * fetches its signed config from docdesk as data-user-id / data-user-name
 * / data-mode say, and loads api.js from data-docdesk-api (or from the
 * same attribute on this script tag). Mark an element data-docdesk-manual
 * to mount it yourself with DocDesk.mount(element, options).
 *
 * Capture: DocDesk.capture(documentId) asks the Document Server to save
 * now and resolves to the version number that holds the edits. A button
 * with data-docdesk-capture="<document id>" inside a form captures, writes
 * the version into the hidden field named by data-docdesk-field
 * ("docdesk_version" by default), then submits the form: the postback
 * pattern of server-rendered applications. Outside a form it only captures.
 */
(function () {
  "use strict";

  var SCRIPT = document.currentScript;
  var BASE = scriptBase();
  var API_PATH = "/web-apps/apps/api/documents/api.js";
  var LOAD_TIMEOUT_MS = 20000;
  var DEFAULT_FIELD = "docdesk_version";

  var mounted = {};
  var apiLoads = {};
  var placeholders = 0;

  function scriptBase() {
    if (!SCRIPT) return "";
    var given = SCRIPT.getAttribute("data-docdesk-base");
    if (given !== null) return given.replace(/\/+$/, "");
    return SCRIPT.src.replace(/\/static\/docdesk\.js(\?.*)?$/, "");
  }

  function failure(code, message, status) {
    var error = new Error(message);
    error.code = code;
    error.status = status || 0;
    return error;
  }

  function origin(url) {
    try {
      return new URL(url, window.location.href).origin;
    } catch (ignored) {
      return url;
    }
  }

  // Talking to docdesk

  function request(method, path, body) {
    // The header tells docdesk the call comes from its own script, not from
    // a page of another site borrowing the session cookie.
    var options = {
      method: method,
      headers: { Accept: "application/json", "X-Requested-With": "docdesk" }
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(BASE + path, options).then(
      function (response) {
        if (response.status === 204) return null;
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (!response.ok) throw answerError(response.status, data);
          return data;
        });
      },
      function () {
        throw failure("network", "docdesk could not be reached. Check the connection and try again.");
      }
    );
  }

  function answerError(status, data) {
    if (data.error === "capture_timeout") {
      return failure(data.error,
        "The Document Server did not save the document in time. Try again in a moment.", status);
    }
    if (status === 404 && data.error === "not_found" && !data.message) {
      return failure("not_found", "docdesk does not know this address.", status);
    }
    return failure(data.error || "http_" + status, data.message || "docdesk answered HTTP " + status + ".", status);
  }

  /* The version number that holds everything edited so far. With
   * {detail: true}: {documentId, version, outcome, document}. */
  function capture(documentId, options) {
    var path = "/api/documents/" + encodeURIComponent(documentId) + "/capture";
    return request("POST", path).then(function (data) {
      var detail = {
        documentId: documentId,
        version: data.version,
        outcome: data.capture ? data.capture.outcome : null,
        document: data
      };
      document.dispatchEvent(new CustomEvent("docdesk:captured", { detail: detail }));
      return options && options.detail ? detail : data.version;
    });
  }

  // Editors

  function loadApi(url) {
    if (window.DocsAPI && window.DocsAPI.DocEditor) return Promise.resolve(window.DocsAPI);
    if (!apiLoads[url]) {
      apiLoads[url] = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        var timer = setTimeout(function () {
          failed("it did not answer within " + LOAD_TIMEOUT_MS / 1000 + " s");
        }, LOAD_TIMEOUT_MS);

        function failed(why) {
          clearTimeout(timer);
          delete apiLoads[url];
          script.remove();
          reject(failure("ds_unavailable",
            "The editor cannot start: the Document Server at " + origin(url) +
            " could not be loaded (" + why + "). Check that it is running and " +
            "that DOCDESK_DOCUMENT_SERVER_URL points to it."));
        }

        script.onload = function () {
          clearTimeout(timer);
          if (window.DocsAPI && window.DocsAPI.DocEditor) resolve(window.DocsAPI);
          else failed("its api.js defines no DocsAPI");
        };
        script.onerror = function () { failed("the script did not load"); };
        script.src = url;
        document.head.appendChild(script);
      });
    }
    return apiLoads[url];
  }

  function apiUrlFor(element, options) {
    var url = options.apiUrl || element.getAttribute("data-docdesk-api") ||
      (SCRIPT && SCRIPT.getAttribute("data-docdesk-api"));
    if (url) return url;
    // docdesk's embedded simulator, when no Document Server is configured.
    return BASE + "/ds-simulator" + API_PATH;
  }

  function statusNode(element) {
    var node = element.querySelector(":scope > .docdesk-status");
    if (!node) {
      node = document.createElement("p");
      node.className = "docdesk-status";
      node.setAttribute("role", "status");
      node.setAttribute("aria-live", "polite");
      element.insertBefore(node, element.firstChild);
    }
    return node;
  }

  /* Open an editor in element. options: config (the signed config; fetched
   * when absent), events (DocsAPI events, each called with the event and
   * this handle), say(text, kind) for messages, apiUrl. Resolves to a
   * handle {documentId, element, editor, reopen(), destroy()}. */
  function mount(element, options) {
    options = options || {};
    var documentId = element.getAttribute("data-document-id");
    var given = options.config || null;
    var host = document.createElement("div");
    host.className = "docdesk-frame";
    var say = options.say || function (text, kind) {
      var node = statusNode(element);
      node.textContent = text;
      node.setAttribute("data-kind", kind || "info");
    };

    var handle = {
      documentId: documentId,
      element: element,
      editor: null,
      reopen: function () {
        return Promise.resolve(close()).then(freshConfig).then(open).then(function () {
          return handle;
        });
      },
      destroy: function () {
        delete mounted[documentId];
        return Promise.resolve(close());
      }
    };

    function close() {
      var editor = handle.editor;
      handle.editor = null;
      return editor && editor.destroyEditor ? editor.destroyEditor() : null;
    }

    function freshConfig() {
      var query = new URLSearchParams();
      query.set("mode", element.getAttribute("data-mode") || "edit");
      if (element.getAttribute("data-user-id")) query.set("user_id", element.getAttribute("data-user-id"));
      if (element.getAttribute("data-user-name")) query.set("user_name", element.getAttribute("data-user-name"));
      return request("GET", "/api/documents/" + encodeURIComponent(documentId) +
        "/editor-config?" + query.toString());
    }

    function wiredEvents() {
      var wired = {};
      var handlers = options.events || {};
      Object.keys(handlers).forEach(function (name) {
        wired[name] = function (event) { return handlers[name](event, handle); };
      });
      if (!wired.onError) {
        wired.onError = function (event) {
          var data = (event && event.data) || {};
          say("The editor reported an error: " + (data.errorDescription || "unknown") +
            " (code " + data.errorCode + ").", "error");
        };
      }
      return wired;
    }

    function open(config) {
      var copy = Object.assign({}, config, {
        width: "100%",
        height: "100%",
        events: wiredEvents()
      });
      var placeholder = document.createElement("div");
      placeholder.id = "docdesk-editor-" + ++placeholders;
      host.textContent = "";
      host.appendChild(placeholder);
      handle.editor = new window.DocsAPI.DocEditor(placeholder.id, copy);
    }

    Array.prototype.slice.call(element.childNodes).forEach(function (node) {
      if (!(node.classList && node.classList.contains("docdesk-status"))) node.remove();
    });
    element.appendChild(host);
    mounted[documentId] = handle;

    return loadApi(apiUrlFor(element, options))
      .then(function () { return given || freshConfig(); })
      .then(open)
      .then(function () { return handle; })
      .catch(function (error) {
        say(error.message, "error");
        throw error;
      });
  }

  function mountAll(root) {
    var found = (root || document).querySelectorAll("[data-docdesk-editor]:not([data-docdesk-manual])");
    Array.prototype.forEach.call(found, function (element) {
      if (mounted[element.getAttribute("data-document-id")]) return;
      // The failure is already shown beside the editor.
      mount(element).catch(function () {});
    });
  }

  // Capture buttons

  function setBusy(button, busy) {
    if (busy) {
      button.setAttribute("aria-busy", "true");
      button.setAttribute("aria-disabled", "true");
      button.classList.add("docdesk-busy");
    } else {
      button.removeAttribute("aria-busy");
      button.removeAttribute("aria-disabled");
      button.classList.remove("docdesk-busy");
    }
  }

  function report(button, text, kind) {
    var id = button.getAttribute("data-docdesk-message");
    var node = id ? document.getElementById(id) : null;
    if (!node) {
      node = button.nextElementSibling;
      if (!node || !node.classList.contains("docdesk-message")) {
        node = document.createElement("span");
        node.className = "docdesk-message";
        node.setAttribute("role", "status");
        node.setAttribute("aria-live", "polite");
        button.insertAdjacentElement("afterend", node);
      }
    }
    node.textContent = text;
    node.setAttribute("data-kind", kind);
  }

  function editorFor(button, form) {
    var named = button.getAttribute("data-docdesk-capture");
    if (named) return named;
    var inside = form ? form.querySelectorAll("[data-docdesk-editor]") : [];
    if (inside.length === 1) return inside[0].getAttribute("data-document-id");
    var all = document.querySelectorAll("[data-docdesk-editor]");
    return all.length === 1 ? all[0].getAttribute("data-document-id") : null;
  }

  function hiddenField(form, name) {
    var field = form.elements.namedItem(name);
    if (field && field.tagName === "INPUT") return field;
    field = document.createElement("input");
    field.type = "hidden";
    field.name = name;
    form.appendChild(field);
    return field;
  }

  function submit(form, button) {
    if (typeof form.requestSubmit !== "function") {
      form.submit();
      return;
    }
    // A submit button passes its own name and value, as a plain click would.
    if (button.type === "submit" && button.form === form) form.requestSubmit(button);
    else form.requestSubmit();
  }

  function onCaptureClick(event) {
    var button = event.target.closest ? event.target.closest("[data-docdesk-capture]") : null;
    if (!button) return;
    event.preventDefault();
    if (button.getAttribute("aria-busy") === "true") return;

    var form = button.form || button.closest("form");
    if (form && !form.reportValidity()) return;
    var documentId = editorFor(button, form);
    if (!documentId) {
      report(button, "This button names no document to save (data-docdesk-capture).", "error");
      return;
    }

    setBusy(button, true);
    report(button, "Saving the document…", "info");
    capture(documentId).then(
      function (version) {
        if (!form) {
          setBusy(button, false);
          report(button, "Saved as version " + version + ".", "ok");
          return;
        }
        hiddenField(form, button.getAttribute("data-docdesk-field") || DEFAULT_FIELD).value = String(version);
        report(button, "Saved as version " + version + ". Sending…", "ok");
        submit(form, button);
      },
      function (error) {
        setBusy(button, false);
        report(button, error.message, "error");
      }
    );
  }

  // A host that handles the submit itself (and prevents it) gets its button back.
  window.addEventListener("submit", function (event) {
    if (!event.defaultPrevented) return;
    var busy = event.target.querySelectorAll("[data-docdesk-capture][aria-busy=true]");
    Array.prototype.forEach.call(busy, function (button) { setBusy(button, false); });
  });
  // Back from the next page through the cache: the buttons are idle again.
  window.addEventListener("pageshow", function () {
    var busy = document.querySelectorAll("[data-docdesk-capture][aria-busy=true]");
    Array.prototype.forEach.call(busy, function (button) { setBusy(button, false); });
  });
  document.addEventListener("click", onCaptureClick);

  window.DocDesk = {
    base: BASE,
    capture: capture,
    mount: mount,
    mountAll: mountAll,
    loadApi: loadApi,
    request: request,
    editor: function (documentId) { return mounted[documentId] || null; }
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { mountAll(); });
  } else {
    mountAll();
  }
})();
