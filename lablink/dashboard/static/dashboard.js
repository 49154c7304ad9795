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
  // A stream the browser reopens by itself resumes from its Last-Event-ID; one that htmx's sse
  // extension had to make anew (the server restarted, a proxy answered 502) starts from "now".
  // So after any loss every live part fetches itself again: nothing stays stale, and where the
  // session is gone (a restart signs everyone out) that fetch is answered with the sign-in page.
  // A part the stream sends whole (sse-swap) fetches itself on "live-refresh".
  let lost = false;
  let retry = null;
  function refreshAll() {
    if (!window.htmx) return;
    document.querySelectorAll("[hx-trigger*='sse:']").forEach((el) => {
      const first = el.getAttribute("hx-trigger").split(",").map((t) => t.trim())
        .find((t) => t.startsWith("sse:"));
      if (first) window.htmx.trigger(el, first.split(" ")[0]);
    });
    document.querySelectorAll("[sse-swap][hx-trigger*='live-refresh']").forEach((el) => {
      window.htmx.trigger(el, "live-refresh");
    });
  }
  // A part the page's stream sends as one view of it (a job's chart at the range the page
  // was opened with) is swapped in only while the screen shows that view: the element named
  // by data-pushed-if carries the same value in both. A screen switched in place to another
  // view fetches the part instead (its hx-include says which view).
  document.addEventListener("htmx:sseBeforeMessage", (e) => {
    const el = e.target;
    const id = el && el.dataset ? el.dataset.pushedIf : null;
    if (!id) return;
    const shown = document.getElementById(id);
    const sent = document.createElement("template");
    sent.innerHTML = e.detail.data;
    const view = sent.content.querySelector("#" + CSS.escape(id));
    if (shown && view && shown.value !== view.value) {
      e.preventDefault();
      window.htmx.trigger(el, "live-refresh");
    }
  });
  document.addEventListener("htmx:sseOpen", () => {
    liveState("open", "on");
    if (lost) { lost = false; refreshAll(); }
  });
  document.addEventListener("htmx:sseError", () => {
    liveState("closed", "reconnecting…");
    lost = true;
    if (retry === null) {
      retry = setTimeout(() => { retry = null; if (lost) refreshAll(); }, 5000);
    }
  });
})();

// --- overview ---
// Compact times where the day is a heading (data-style "clock": 14:05; "hour": Thu 14:00;
// "moment": 03 Dec 14:05:09, in tables),
// and the elapsed time of running executions counted on each second between refreshes.
(function () {
  "use strict";
  const local = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const styles = {
    clock: { hour: "2-digit", minute: "2-digit" },
    hour: { weekday: "short", day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit" },
    moment: { day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit", second: "2-digit" },
  };

  function compact(root) {
    root.querySelectorAll("time[data-style]:not([data-compact])").forEach((el) => {
      const when = new Date(el.getAttribute("datetime"));
      const options = styles[el.dataset.style];
      if (isNaN(when.getTime()) || !options) return;
      el.textContent = new Intl.DateTimeFormat(undefined, { ...options, timeZone: local }).format(when);
      const zone = el.dataset.zone;
      if (zone && zone !== local) {
        try {
          const there = new Intl.DateTimeFormat(undefined, { ...options, timeZone: zone, timeZoneName: "short" });
          el.dataset.jobTime = " (" + there.format(when) + ")";
        } catch (e) { /* unknown zone */ }
      }
      el.dataset.compact = "1";
    });
  }

  function human(seconds) {
    // As rendering.duration does on the server.
    if (seconds < 60) return seconds.toFixed(1) + " s";
    let minutes = Math.floor(Math.round(seconds) / 60);
    const secs = Math.round(seconds) % 60;
    if (minutes < 60) return secs ? minutes + " min " + secs + " s" : minutes + " min";
    const hours = Math.floor(minutes / 60);
    minutes %= 60;
    if (hours < 48) return minutes ? hours + " h " + minutes + " min" : hours + " h";
    const days = Math.floor(hours / 24);
    return hours % 24 ? days + " d " + (hours % 24) + " h" : days + " d";
  }

  function elapsed() {
    document.querySelectorAll(".elapsed[data-since]").forEach((el) => {
      const since = Date.parse(el.dataset.since);
      if (!isNaN(since)) el.textContent = human(Math.max(0, (Date.now() - since) / 1000));
    });
  }

  document.addEventListener("DOMContentLoaded", () => compact(document));
  document.addEventListener("htmx:load", (e) => compact(e.target));
  document.addEventListener("htmx:afterSwap", (e) => compact(e.target));
  window.setInterval(elapsed, 1000);
})();

// --- audit: times typed without an offset are read in the browser's zone ---
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", () => {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    document.querySelectorAll("input[data-browser-zone]").forEach((el) => {
      if (!el.value && zone) el.value = zone;
    });
  });
})();

// --- jobs list ---
// "Select all on this page" ticks every box of its form (htmx has no way to); a Cancel or
// Dismiss link in the confirmation region empties it instead of reloading the page (the
// link still works without scripts).
(function () {
  "use strict";
  document.addEventListener("change", (e) => {
    const all = e.target.closest("input[data-select-all]");
    if (all) {
      const name = all.dataset.selectAll;
      all.form.querySelectorAll(`input[type="checkbox"][name="${name}"]`).forEach((box) => {
        box.checked = all.checked;
      });
      return;
    }
    const box = e.target.closest("input[type='checkbox'][name]");
    const master = box && box.form && box.form.querySelector(`input[data-select-all="${box.name}"]`);
    if (master) {
      const boxes = [...box.form.querySelectorAll(`input[type="checkbox"][name="${box.name}"]`)];
      master.checked = boxes.length > 0 && boxes.every((b) => b.checked);
    }
  });
  document.addEventListener("click", (e) => {
    const link = e.target.closest("a[data-dismiss]");
    const region = link && link.closest("[data-dialog]");
    if (!region) return;
    e.preventDefault();
    region.innerHTML = "";
    const first = document.querySelector("#jobs-bulk input[name='job_id'], #jobs-q");
    if (first) first.focus();
  });
  // A refresh answers with the boxes ticked when it was asked, and the table the page's stream
  // sends with none; either way the boxes are kept as the user left them (the bulk answer's
  // table is not: it clears).
  let ticked = null;
  function keepTicks(target) {
    if (target && target.id === "jobs-results") {
      ticked = new Set([...target.querySelectorAll("input[name='job_id']:checked")].map((b) => b.value));
    }
  }
  document.addEventListener("htmx:beforeSwap", (e) => keepTicks(e.detail.target));
  document.addEventListener("htmx:sseBeforeMessage", (e) => {
    if (!e.defaultPrevented) keepTicks(e.target);
  });
  document.addEventListener("htmx:load", (e) => {
    if (ticked === null || !e.target || e.target.id !== "jobs-results") return;
    const boxes = [...e.target.querySelectorAll("input[type='checkbox'][name='job_id']")];
    boxes.forEach((box) => { box.checked = ticked.has(box.value); });
    const master = e.target.querySelector("input[data-select-all]");
    if (master) master.checked = boxes.length > 0 && boxes.every((b) => b.checked);
    ticked = null;
  });
})();

// --- job form ---
// Choosing a trigger or a type of job swaps in that choice's fields, drawn by the server from
// the form as it was sent: whatever was typed while that answer was on its way would be
// replaced by the older value. So the answer takes, before it is swapped in, the value each
// of its fields holds now in the fields it replaces (by name); and when the choice itself
// was changed again meanwhile, the fields drawn for the older one are asked for again.
(function () {
  "use strict";
  function sameField(part, field) {
    const found = [...part.querySelectorAll("input[name], select[name], textarea[name]")]
      .filter((el) => el.name === field.name);
    if (field.type === "checkbox" || field.type === "radio") {
      return found.find((el) => el.value === field.value) || null;
    }
    return found[0] || null;
  }

  function carried(part, html) {
    const answer = document.createElement("template");
    answer.innerHTML = html;
    answer.content.querySelectorAll("input[name], select[name], textarea[name]").forEach((field) => {
      const now = sameField(part, field);
      if (!now || field.type === "hidden") return;
      if (field.type === "checkbox" || field.type === "radio") {
        field.toggleAttribute("checked", now.checked);
      } else if (field.tagName === "SELECT") {
        const options = [...field.options];
        if (!options.some((o) => o.value === now.value)) return;
        options.forEach((o) => o.toggleAttribute("selected", o.value === now.value));
      } else if (field.tagName === "TEXTAREA") {
        field.textContent = now.value;
      } else {
        field.setAttribute("value", now.value);
      }
    });
    return answer.innerHTML;
  }

  document.addEventListener("htmx:beforeSwap", (e) => {
    const part = e.detail.target;
    if (!e.detail.shouldSwap || !part || !part.matches("[data-drawn-for]")) return;
    e.detail.serverResponse = carried(part, e.detail.serverResponse);
  });
  // After settling: htmx readies the new chooser (its hx-post) only then.
  document.addEventListener("htmx:afterSettle", (e) => {
    const part = e.target;
    if (!(part instanceof Element) || !part.matches("[data-drawn-for]")) return;
    const chooser = part.querySelector("select[hx-post]");
    if (chooser && chooser.value !== part.dataset.drawnFor) window.htmx.trigger(chooser, "change");
  });
})();
