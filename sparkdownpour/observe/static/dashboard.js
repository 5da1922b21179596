// sparkdownpour dashboard: re-fetch the server-rendered sections and swap them in.
// Same origin, cookie sent by the browser (HttpOnly: this script never sees it).
(function () {
  "use strict";
  var state = document.getElementById("state");
  var every = parseInt(document.body.getAttribute("data-poll-ms"), 10) || 1000;
  var failures = 0;

  function show(text, cls) {
    if (state) { state.textContent = text; state.className = "state " + cls; }
  }

  function poll() {
    fetch("/v1/dashboard", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (data) {
        failures = 0;
        Object.keys(data.sections).forEach(function (id) {
          var el = document.getElementById(id);
          // The HTML is rendered and escaped by the server (svg.py, dashboard.py).
          if (el) { el.innerHTML = data.sections[id]; }
        });
        show("live · " + new Date(data.time * 1000).toLocaleTimeString(), "live");
        setTimeout(poll, every);
      })
      .catch(function (e) {
        failures += 1;
        // The server stops when fit() returns: keep the last charts and say so.
        show("server not answering (" + e.message + "); showing the last data", "stale");
        if (failures < 30) { setTimeout(poll, every * 2); }
      });
  }
  setTimeout(poll, every);
})();
