// sparkdownpour dashboard: re-fetch the server-rendered sections and swap them in.
// Same origin, cookie sent by the browser (HttpOnly: this script never sees it).
// The server keeps the run's time series from its start, so every poll redraws the whole run.
(function () {
  "use strict";
  var state = document.getElementById("state");
  var every = parseInt(document.body.getAttribute("data-poll-ms"), 10) || 1000;
  var failures = 0;

  function show(text, cls) {
    if (state) { state.textContent = text; state.className = "state " + cls; }
  }

  function duration(s) {
    s = Math.round(s);
    if (s >= 3600) { return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min"; }
    if (s >= 60) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    return s + " s";
  }

  function where(p) {
    if (!p || p.epoch === undefined || p.epoch === null) { return ""; }
    var text = " · epoch " + p.epoch + (p.epochs ? "/" + p.epochs : "");
    if (typeof p.fraction === "number") { text += " · " + Math.round(100 * p.fraction) + "%"; }
    if (typeof p.eta_s === "number") { text += " · about " + duration(p.eta_s) + " left"; }
    return text;
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
        show("live · " + new Date(data.time * 1000).toLocaleTimeString() + where(data.progress),
             "live");
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
