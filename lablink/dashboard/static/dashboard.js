// Times in the browser's zone (and the job's, where it differs); the state of the live stream.
// No build step: plain script, loaded after htmx.
(function () {
  "use strict";
  const local = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const fmt = (zone) => new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", timeZone: zone, timeZoneName: "short",
  });

  function localise(root) {
    root.querySelectorAll("time[datetime]:not([data-done])").forEach((el) => {
      const when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      el.textContent = fmt(local).format(when);
      el.title = el.getAttribute("datetime");
      const zone = el.dataset.zone;
      if (zone && zone !== local) {
        try { el.dataset.jobTime = " (" + fmt(zone).format(when) + ")"; } catch (e) { /* unknown zone */ }
      }
      el.dataset.done = "1";
    });
  }

  function liveState(state, text) {
    const el = document.getElementById("live-state");
    if (el) { el.dataset.state = state; el.textContent = "live updates: " + text; }
  }

  document.addEventListener("DOMContentLoaded", () => localise(document));
  document.addEventListener("htmx:load", (e) => localise(e.target));
  document.addEventListener("htmx:afterSwap", (e) => localise(e.target));
  document.addEventListener("htmx:sseOpen", () => liveState("open", "on"));
  document.addEventListener("htmx:sseError", () => liveState("closed", "reconnecting…"));
})();
