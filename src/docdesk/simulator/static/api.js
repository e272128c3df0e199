/*
 * The docdesk simulator's DocsAPI: a small working editor in place of
 * ONLYOFFICE's. It keeps the real API's shape (new DocsAPI.DocEditor(id,
 * config), its events and methods) and drives the simulator's control API,
 * so a host page behaves with it as it would with the real editor.
 */
(function () {
  "use strict";

  var SCRIPT = document.currentScript;
  var BASE = SCRIPT.src.replace(/\/web-apps\/apps\/api\/documents\/api\.js.*$/, "");
  var POLL_MS = 1000;
  var ADD_LABELS = { word: "Add paragraph", cell: "Add row", slide: "Add slide" };

  function request(method, path, body) {
    var options = { method: method, headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(BASE + path, options).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) {
          var error = new Error(data.message || "HTTP " + response.status);
          error.data = data;
          throw error;
        }
        return data;
      });
    });
  }

  function element(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      node.setAttribute(name, attributes[name]);
    });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function DocEditor(placeholderId, config) {
    var placeholder = document.getElementById(placeholderId);
    if (!placeholder) throw new Error("DocsAPI: no element with id " + placeholderId);

    var events = (config && config.events) || {};
    var editorConfig = (config && config.editorConfig) || {};
    var customization = editorConfig.customization || {};
    var documentType = (config && config.documentType) || "word";
    var editable = editorConfig.mode !== "view";
    var session = null;
    var timer = null;
    var seenMessages = 0;
    var modified = false;

    var root = element("div", {
      "class": "docdesk-sim",
      "data-docdesk-sim": "editor",
      style: "font-family: system-ui, sans-serif; border: 1px solid #ccc; " +
        "padding: 12px; height: 100%; box-sizing: border-box; overflow: auto;"
    });
    root.id = placeholderId;
    placeholder.parentNode.replaceChild(root, placeholder);

    var title = element("h2", { "data-docdesk-sim": "title", style: "margin-top: 0" },
      (config.document && config.document.title) || "");
    var status = element("p", { "data-docdesk-sim": "status", role: "status" }, "Opening…");
    var text = element("ol", { "data-docdesk-sim": "text" });
    var tools = element("div", { "data-docdesk-sim": "tools" });
    var history = element("section", { "data-docdesk-sim": "history", hidden: "" });
    root.appendChild(title);
    root.appendChild(status);
    root.appendChild(text);
    root.appendChild(tools);
    root.appendChild(history);

    function fire(name, data) {
      if (typeof events[name] === "function") {
        events[name]({ target: api, data: data });
      }
    }

    function fail(code, description) {
      status.textContent = "Error " + code + ": " + description;
      fire("onError", { errorCode: code, errorDescription: description });
    }

    function setModified(value) {
      if (modified !== value) {
        modified = value;
        fire("onDocumentStateChange", value);
      }
    }

    function button(label, name, onClick) {
      var node = element("button", { type: "button", "data-docdesk-sim": name }, label);
      node.addEventListener("click", onClick);
      tools.appendChild(node);
      return node;
    }

    function showText(lines) {
      text.textContent = "";
      (lines || []).forEach(function (line) {
        text.appendChild(element("li", {}, line));
      });
    }

    function refresh() {
      if (!session) return Promise.resolve();
      return request("GET", "/simulator/sessions/" + session).then(function (state) {
        if (state.title) title.textContent = state.title;
        if (state.state === "open") {
          showText(state.text);
          status.textContent = (state.editors || []).length + " editing";
        } else {
          status.textContent = "Closed";
        }
        (state.messages || []).slice(seenMessages).forEach(function (message) {
          if (message.event) fire(message.event, message.data);
          if (message.warning) fire("onWarning", { warningCode: message.warning });
          if (message.error) fail(-1, message.error);
        });
        seenMessages = (state.messages || []).length;
        return state;
      });
    }

    // A lost connection is a state the editor shows, not a script error.
    function poll() {
      refresh().catch(function () {
        status.textContent = "Connection lost, retrying…";
      });
    }

    function buildTools() {
      if (editable) {
        var input = element("input", {
          type: "text",
          "data-docdesk-sim": "input",
          "aria-label": ADD_LABELS[documentType] || "Add text"
        });
        tools.appendChild(input);
        button(ADD_LABELS[documentType] || "Add", "add", function () {
          if (!input.value) return;
          request("POST", "/simulator/sessions/" + session + "/edit", { text: input.value })
            .then(function () {
              input.value = "";
              setModified(true);
              return refresh();
            })
            .catch(function (error) { fail(-1, error.message); });
        });
        if (customization.forcesave) {
          button("Save", "save", function () { api.save(); });
        }
      }
      if (events.onRequestHistory) {
        button("History", "history-open", function () { fire("onRequestHistory"); });
      }
      button("Close", "close", function () {
        if (events.onRequestClose) fire("onRequestClose");
        else api.destroyEditor();
      });
    }

    var api = {
      save: function () {
        return request("POST", "/simulator/sessions/" + session + "/save").then(function (r) {
          if (r.forcesave) setModified(false);
          return refresh();
        });
      },
      destroyEditor: function () {
        if (timer) clearInterval(timer);
        timer = null;
        var closing = session
          ? request("POST", "/simulator/sessions/" + session + "/close")
          : Promise.resolve();
        session = null;
        root.textContent = "";
        return closing;
      },
      requestClose: function () { return api.destroyEditor(); },
      downloadAs: function (format) {
        var query = format ? "?format=" + encodeURIComponent(format) : "";
        return request("GET", "/simulator/sessions/" + session + "/download" + query)
          .then(function (result) { fire("onDownloadAs", result); return result; })
          .catch(function (error) { fail(-1, error.message); });
      },
      refreshHistory: function (data) {
        history.hidden = false;
        history.textContent = "";
        history.appendChild(element("h3", {}, "Version history"));
        if (data && data.error) {
          history.appendChild(element("p", { role: "alert" }, data.error));
          return;
        }
        var list = element("ol", { "data-docdesk-sim": "history-list" });
        ((data && data.history) || []).forEach(function (entry) {
          var item = element("li", { "data-version": String(entry.version) });
          var who = entry.user ? " by " + entry.user.name : "";
          var open = element("button", { type: "button", "data-docdesk-sim": "history-version" },
            "Version " + entry.version + who + " (" + (entry.created || "") + ")");
          open.addEventListener("click", function () {
            fire("onRequestHistoryData", entry.version);
          });
          item.appendChild(open);
          list.appendChild(item);
        });
        history.appendChild(list);
        var done = element("button", { type: "button", "data-docdesk-sim": "history-close" },
          "Close history");
        done.addEventListener("click", function () {
          history.hidden = true;
          fire("onRequestHistoryClose");
        });
        history.appendChild(done);
      },
      setHistoryData: function (data) {
        if (data && data.error) {
          fail(-1, data.error);
          return Promise.resolve();
        }
        return request("POST", "/simulator/sessions/" + session + "/history", { data: data })
          .then(function (shown) {
            var view = element("div", { "data-docdesk-sim": "history-view",
              "data-version": String(shown.version) });
            view.appendChild(element("h4", {}, "Version " + shown.version));
            var lines = element("ol", {});
            shown.text.forEach(function (line) { lines.appendChild(element("li", {}, line)); });
            view.appendChild(lines);
            if (events.onRequestRestore) {
              var restore = element("button", { type: "button", "data-docdesk-sim": "restore" },
                "Restore this version");
              restore.addEventListener("click", function () {
                fire("onRequestRestore", {
                  version: shown.version, url: data.url, fileType: data.fileType
                });
              });
              view.appendChild(restore);
            }
            var old = history.querySelector("[data-docdesk-sim=history-view]");
            if (old) old.remove();
            history.appendChild(view);
          })
          .catch(function (error) { fail(-1, error.message); });
      },
      showMessage: function (message) { status.textContent = String(message); },
      denyEditingRights: function (message) {
        editable = false;
        status.textContent = message || "Editing is not allowed";
      },
      setActionLink: function () {},
      insertImage: function () {},
      refreshFile: function () { return refresh(); }
    };

    request("POST", "/simulator/sessions", { config: config })
      .then(function (opened) {
        session = opened.session;
        root.setAttribute("data-session", session);
        buildTools();
        fire("onAppReady");
        return refresh();
      })
      .then(function () {
        if (!session) return;
        fire("onDocumentReady");
        timer = setInterval(poll, POLL_MS);
      })
      .catch(function (error) {
        var data = error.data || {};
        fail(data.ds_code || -1, error.message);
      });

    return api;
  }

  DocEditor.version = function () { return "9.3.0"; };
  window.DocsAPI = { DocEditor: DocEditor };
})();
