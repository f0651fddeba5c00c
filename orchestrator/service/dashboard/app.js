// The orchestrator dashboard: plain JavaScript, no build step, nothing loaded from elsewhere.
// Every value from the API is put on the page with textContent (never as HTML), so a job
// name or an error message can never become markup or code.
"use strict";

(() => {
  const FINAL = new Set(["done", "rejected"]);
  const MAX_EVENTS = 50;
  const rows = new Map(); // job name -> {data, tr, receivedAt}
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem("orchestrator-token") || "";
  let lastEventId = null;
  let current = null; // the job shown on the job page
  let workspacesTimer = null;

  // --- small helpers ----------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key.startsWith("aria-") || key.startsWith("data-") || key === "role") {
        node.setAttribute(key, value);
      }
      else node[key] = value;
    }
    for (const child of children) node.append(child);
    return node;
  }

  function headers() {
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function notice(text) {
    const box = $("notice");
    box.textContent = text || "";
    box.hidden = !text;
  }

  async function api(path, options = {}) {
    const response = await fetch(path, {
      ...options,
      headers: { ...headers(), ...(options.headers || {}) },
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return { body, response };
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return `${seconds}s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes}m`;
    const hours = Math.floor(minutes / 60);
    if (hours < 24) return `${hours}h${String(minutes % 60).padStart(2, "0")}m`;
    return `${Math.floor(hours / 24)}d${String(hours % 24).padStart(2, "0")}h`;
  }

  const number = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en"));

  function jobHref(name) {
    return `#/jobs/${encodeURIComponent(name)}`;
  }

  function progressCell(job) {
    const share = job.progress === null || job.progress === undefined ? 0 : job.progress;
    const bar = el("progress", {
      max: 1,
      value: share,
      "aria-label": `progress of ${job.name}`,
    });
    const label = el("span", {
      class: "progress-text",
      text: `${number(job.completed || job.succeeded + job.failed)} / ${number(job.total)}`,
    });
    return el("td", { class: "progress" }, bar, label);
  }

  function stateBadge(state) {
    return el("span", { class: `state state-${state}`, text: state });
  }

  // --- the job list -----------------------------------------------------------------------

  function renderRow(entry) {
    const job = entry.data;
    const tr = entry.tr || el("tr");
    tr.replaceChildren(
      el("th", { scope: "row" }, el("a", { href: jobHref(job.name), text: job.name })),
      el("td", { "aria-label": "state" }, stateBadge(job.state)),
      progressCell(job),
      el("td", { class: "num", text: number(job.pending), "data-label": "pending" }),
      el("td", { text: job.outcome || (job.cancel_requested ? "cancelling" : ""), "data-label": "outcome" }),
      el("td", { class: "age num", text: duration(ageOf(entry)), "data-label": "age" }),
      el("td", {}, cancelButton(job)),
    );
    tr.dataset.state = job.state;
    tr.dataset.workspace = job.workspace;
    tr.dataset.name = job.name;
    entry.tr = tr;
    applyFilter(tr);
    return tr;
  }

  function ageOf(entry) {
    return entry.data.age_seconds + (performance.now() - entry.receivedAt) / 1000;
  }

  function cancelButton(job) {
    if (FINAL.has(job.state) || job.cancel_requested) return "";
    const button = el("button", {
      type: "button",
      class: "small danger",
      text: "Cancel",
      "aria-label": `cancel ${job.name}`,
    });
    button.addEventListener("click", () => cancel(job.name));
    return button;
  }

  function upsert(job) {
    if (job.parent) return; // a split job's part: shown on its parent's page
    let entry = rows.get(job.name);
    if (!entry) {
      entry = { data: job, tr: null, receivedAt: performance.now() };
      rows.set(job.name, entry);
      $("job-rows").append(renderRow(entry));
      addWorkspaceOption(job.workspace);
    } else {
      entry.data = job;
      entry.receivedAt = performance.now();
      renderRow(entry);
    }
    updateCount();
  }

  function updateCount() {
    $("job-count").textContent = `(${rows.size})`;
    $("no-jobs").hidden = rows.size > 0;
  }

  function addWorkspaceOption(name) {
    const select = $("filter-workspace");
    if ([...select.options].some((o) => o.value === name)) return;
    select.append(el("option", { value: name, text: name }));
  }

  function applyFilter(tr) {
    const state = $("filter-state").value;
    const workspace = $("filter-workspace").value;
    tr.hidden =
      (state && tr.dataset.state !== state) || (workspace && tr.dataset.workspace !== workspace);
  }

  async function loadJobs() {
    let path = "/api/jobs?limit=1000";
    const seen = new Set();
    while (path) {
      const { body, response } = await api(path);
      for (const job of body) {
        seen.add(job.name);
        upsert(job);
      }
      const link = response.headers.get("Link");
      const next = link && link.match(/<([^>]+)>;\s*rel="next"/);
      path = next ? next[1] : null;
    }
    for (const [name, entry] of rows) {
      if (!seen.has(name)) {
        entry.tr.remove();
        rows.delete(name);
      }
    }
    updateCount();
  }

  // --- workspaces -------------------------------------------------------------------------

  function gauge(dimension, workspace) {
    const limit = dimension.limit;
    const label = `${dimension.label} in ${workspace}`;
    const wrap = el("div", { class: "gauge" });
    wrap.append(el("span", { class: "gauge-label", text: dimension.label }));
    if (limit) {
      wrap.append(
        el("meter", {
          min: 0,
          max: limit,
          value: Math.min(dimension.used, limit),
          high: limit * 0.9,
          optimum: 0,
          "aria-label": label,
        }),
      );
      const share = Math.round((100 * dimension.used) / limit);
      wrap.append(
        el("span", {
          class: "gauge-value",
          text: `${number(dimension.used)} / ${number(limit)} ${dimension.unit} (${share} %)`,
        }),
      );
    } else {
      wrap.append(
        el("span", {
          class: "gauge-value",
          text: `${number(dimension.used)} ${dimension.unit} (no limit)`,
        }),
      );
    }
    return wrap;
  }

  async function loadWorkspaces() {
    const { body } = await api("/api/workspaces");
    const box = $("workspaces");
    box.replaceChildren(
      ...body.map((ws) => {
        const card = el("article", { class: "workspace", "aria-label": `workspace ${ws.workspace}` });
        card.append(
          el("h3", { text: ws.workspace }),
          el("p", {
            class: "meta",
            text:
              `${ws.provider || "not in the config"} · ${number(ws.in_flight_jobs)} in flight · ` +
              `${number(ws.queued_jobs)} queued (${number(ws.queued)} requests)`,
          }),
          ...ws.dimensions.map((d) => gauge(d, ws.workspace)),
        );
        addWorkspaceOption(ws.workspace);
        return card;
      }),
    );
  }

  function refreshWorkspacesSoon() {
    if (workspacesTimer) return;
    workspacesTimer = setTimeout(() => {
      workspacesTimer = null;
      loadWorkspaces().catch(showError);
    }, 1000);
  }

  // --- events -----------------------------------------------------------------------------

  function addEvent(event) {
    const list = $("events");
    const text = `${event.job || "?"}: ${event.from ? `${event.from} → ` : ""}${event.to}` +
      (event.detail ? ` (${event.detail})` : "");
    const when = el("time", { dateTime: event.at || "", text: (event.at || "").replace("T", " ") });
    list.prepend(el("li", {}, when, " ", el("span", { text })));
    while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  }

  function onMessage(kind, data) {
    if (kind === "job") {
      addEvent(data.event);
      if (data.job) upsert(data.job);
      if (current && data.event.job && (data.event.job === current || data.job?.parent === current)) {
        showJob(current).catch(showError);
      }
      refreshWorkspacesSoon();
    } else if (kind === "progress") {
      upsert(data);
      if (current && (data.name === current || data.parent === current)) showJob(current).catch(showError);
      refreshWorkspacesSoon();
    }
  }

  // Server-sent events read with fetch (EventSource cannot send the Authorization header),
  // reconnecting with Last-Event-ID, so no event is lost while away.
  async function follow() {
    for (;;) {
      try {
        const extra = lastEventId === null ? {} : { "Last-Event-ID": String(lastEventId) };
        const response = await fetch("/api/events", {
          headers: { ...headers(), ...extra, Accept: "text/event-stream" },
        });
        if (!response.ok) {
          let body = null;
          try { body = await response.json(); } catch (_) { body = null; }
          throw Object.assign(new Error((body && body.error) || response.statusText), {
            status: response.status,
          });
        }
        setConnection("live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let kind = "message", id = null;
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) kind = line.slice(7);
              else if (line.startsWith("id: ")) id = line.slice(4);
              else if (line.startsWith("data: ")) data.push(line.slice(6));
            }
            if (id !== null) lastEventId = Number(id);
            if (data.length) onMessage(kind, JSON.parse(data.join("\n")));
          }
        }
        setConnection("reconnecting…");
      } catch (error) {
        setConnection(error.status === 401 || error.status === 403 ? "token needed" : "reconnecting…");
        if (error.status) showError(error);
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
      // Events resume from Last-Event-ID; progress is a state: read it anew.
      await loadAll().catch(() => {});
    }
  }

  function setConnection(text) {
    $("connection").textContent = text;
    $("connection").dataset.state = text === "live" ? "live" : "down";
  }

  // --- the job page -----------------------------------------------------------------------

  function field(term, value) {
    return [el("dt", { text: term }), el("dd", { text: value === null || value === undefined ? "—" : String(value) })];
  }

  async function showJob(name) {
    const { body: job } = await api(`/api/jobs/${name.split("/").map(encodeURIComponent).join("/")}`);
    if (current !== name) return;
    $("job-title").textContent = job.name;
    const summary = el("dl");
    summary.append(
      ...field("state", job.state),
      ...field("outcome", job.outcome),
      ...field("workspace", job.workspace),
      ...field("model", job.model),
      ...field("endpoint", job.endpoint),
      ...field("requests", number(job.total)),
      ...field("succeeded", number(job.succeeded)),
      ...field("failed", number(job.failed)),
      ...field("pending", number(job.pending)),
      ...field("remote job", job.remote_id),
      ...field("remote status", job.remote_status),
      ...field("created", job.created_at),
      ...field("finished", job.finished_at),
      ...field("error", job.error),
    );
    const bar = el("progress", { max: 1, value: job.progress || 0, "aria-label": `progress of ${job.name}` });
    $("job-summary").replaceChildren(bar, summary);
    const cancelling = FINAL.has(job.state) || job.cancel_requested;
    $("job-cancel").disabled = cancelling;
    $("job-cancel").textContent = job.cancel_requested && !FINAL.has(job.state) ? "Cancel requested" : "Cancel job";
    const files = job.files.map((file) =>
      el("li", {}, fileLink(file.url, `${file.kind}: ${file.path.split("/").pop()}`),
        el("span", { class: "meta", text: ` ${number(file.lines)} lines, ${number(file.bytes)} bytes` })));
    if (job.links.summary) files.push(el("li", {}, fileLink(job.links.summary, "summary: job.json")));
    $("job-files").replaceChildren(...(files.length ? files : [el("li", { text: "none yet" })]));
    $("job-parts-section").hidden = job.parts.length === 0;
    $("job-parts").replaceChildren(
      ...job.parts.map((part) =>
        el("tr", {},
          el("th", { scope: "row" }, el("a", { href: jobHref(part.name), text: part.name })),
          el("td", {}, stateBadge(part.state)), progressCell(part),
          el("td", { class: "num", text: number(part.pending) }), el("td", { text: part.outcome || "" }))),
    );
    $("job-history").replaceChildren(
      ...job.events.map((event) =>
        el("tr", {},
          el("td", {}, el("time", { dateTime: event.at || "", text: (event.at || "").replace("T", " ") })),
          el("td", { text: event.from || "" }), el("td", { text: event.to }),
          el("td", { text: event.remote_status || "" }), el("td", { text: event.detail || "" }))),
    );
  }

  function fileLink(url, text) {
    const link = el("a", { href: url, text });
    link.addEventListener("click", async (click) => {
      if (!token) return; // an open endpoint: the browser fetches it itself
      click.preventDefault();
      try {
        const response = await fetch(url, { headers: headers() });
        if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
        window.open(URL.createObjectURL(await response.blob()), "_blank", "noopener");
      } catch (error) {
        showError(error);
      }
    });
    return link;
  }

  async function cancel(name) {
    if (!token) {
      notice("Enter the API token above to cancel a job.");
      $("token").focus();
      return;
    }
    try {
      const path = `/api/jobs/${name.split("/").map(encodeURIComponent).join("/")}/cancel`;
      const { body } = await api(path, { method: "POST" });
      notice(body.message);
      upsert(body.job);
      if (current === name) await showJob(name);
    } catch (error) {
      showError(error);
    }
  }

  function showError(error) {
    notice(error.status === 401 || error.status === 403 ? `${error.message}` : `Error: ${error.message}`);
  }

  // --- routing ----------------------------------------------------------------------------

  function route() {
    const match = location.hash.match(/^#\/jobs\/(.+)$/);
    current = match ? decodeURIComponent(match[1]) : null;
    $("overview").hidden = current !== null;
    $("job-page").hidden = current === null;
    if (current !== null) {
      $("job-title").textContent = current;
      showJob(current).catch(showError);
    }
  }

  async function loadAll() {
    await Promise.all([loadJobs(), loadWorkspaces()]);
    notice("");
  }

  function start() {
    $("token").value = token;
    $("token-form").addEventListener("submit", (submit) => {
      submit.preventDefault();
      token = $("token").value.trim();
      if (token) sessionStorage.setItem("orchestrator-token", token);
      else sessionStorage.removeItem("orchestrator-token");
      notice(token ? "Token set for this tab." : "Token cleared.");
      loadAll().catch(showError);
    });
    for (const id of ["filter-state", "filter-workspace"]) {
      $(id).addEventListener("change", () => rows.forEach((entry) => applyFilter(entry.tr)));
    }
    $("job-cancel").addEventListener("click", () => current && cancel(current));
    window.addEventListener("hashchange", route);
    setInterval(() => {
      for (const entry of rows.values()) {
        const cell = entry.tr && entry.tr.querySelector(".age");
        if (cell) cell.textContent = duration(ageOf(entry));
      }
    }, 5000);
    route();
    loadAll().catch(showError).finally(follow);
  }

  start();
})();
