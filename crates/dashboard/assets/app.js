// The nanoclaw dashboard. No framework and no innerHTML: everything shown is built with
// textContent, since much of it (chat text, skill names, audit paths) is untrusted.
"use strict";

let csrf = "";
let chatSource = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options) {
  const init = Object.assign({ headers: {} }, options || {});
  if (init.body !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRF-Token"] = csrf;
    init.body = JSON.stringify(init.body);
  }
  const response = await fetch(path, init);
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    location.reload();
  }
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// A point in time, in the browser's zone, as a <time> element (machine-readable too).
function when(ms) {
  if (ms === undefined || ms === null) return "–";
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return el("time", { datetime: d.toISOString() },
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`);
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || ""}` }, text);
}

// A task run's status, coloured by how it went.
function runBadge(status) {
  const kinds = { ok: "ok", failed: "bad", missed: "bad", skipped: "warn", queued: "warn" };
  return badge(status, kinds[status]);
}

function stateBadge(state) {
  const kinds = { connected: "ok", starting: "warn", reconnecting: "warn", down: "bad", stopped: "" };
  return badge(state, kinds[state]);
}

function table(headers, rows, onRow) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length === 0
      ? el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, "nothing here yet"))
      : rows.map((cells, i) => el("tr", onRow ? { class: "clickable", onclick: () => onRow(i) } : {},
        cells.map((c) => el("td", {}, c))))));
}

function card(label, value) {
  return el("div", { class: "card" }, el("div", { class: "value" }, value), el("div", { class: "label" }, label));
}

const pages = {
  async overview(main) {
    const o = await api("/api/overview");
    const host = o.host;
    main.append(el("h1", {}, "Overview"));
    if (o.paused) {
      main.append(el("div", { class: "banner bad" },
        `Paused by ${o.paused.by} since ${when(o.paused.since)}: no agent runs until /resume.`));
    }
    if (host && host.runtime_error) {
      main.append(el("div", { class: "banner bad" }, `No sandbox runtime: ${host.runtime_error}`));
    }
    main.append(el("div", { class: "cards" },
      card("version", host ? host.version : "–"),
      card("up since", host ? when(host.started_at) : "–"),
      card("sandbox runtime", host ? (host.runtime || "none") : "–"),
      card("live agents", host ? `${host.live_agents} / ${host.max_agents}` : "–"),
      card("messages waiting", o.queue.waiting),
      card("replies waiting", o.queue.replies),
      card("failures (24 h)", o.failures.total),
      card("approvals waiting", o.approvals_waiting)));
    main.append(el("h2", {}, "Channels"));
    main.append(table(["channel", "state", "since", "last event", "last error", "detail"],
      o.channels.map((c) => [c.name, stateBadge(c.health.state), when(c.health.since),
        when(c.health.last_event), c.health.last_error || "", c.health.detail || ""])));
  },

  async chat(main, arg) {
    const groups = await api("/api/groups");
    const folder = arg || (groups.find((g) => g.group.is_main) || groups[0] || { group: {} }).group.folder;
    main.append(el("h1", {}, "Chat"));
    const picker = el("select", { id: "chat-group", onchange: (e) => { location.hash = `#chat/${e.target.value}`; } },
      groups.map((g) => el("option", { value: g.group.folder, selected: g.group.folder === folder }, g.group.name || g.group.folder)));
    main.append(el("p", {}, "Talking with group ", picker));
    if (!folder) return;
    const log = el("div", { class: "log", id: "chat-log" });
    const activity = el("div", { class: "activity", id: "chat-activity" });
    const input = el("textarea", { id: "chat-input", placeholder: "Message (Enter sends, Shift+Enter for a new line)" });
    const send = el("button", { class: "action primary", id: "chat-send", type: "button" }, "Send");
    main.append(el("div", { class: "chat" }, log, activity, el("div", { class: "compose" }, input, send)));
    const shown = new Set();
    const add = (direction, key, who, text, kind) => {
      if (key && shown.has(key)) return;
      if (key) shown.add(key);
      log.append(el("div", { class: `msg ${direction} ${kind || ""}` }, el("span", { class: "who" }, who), text));
      log.scrollTop = log.scrollHeight;
    };
    for (const line of await api(`/api/chat/${encodeURIComponent(folder)}/history`)) {
      add(line.direction, `${line.direction}-${line.id}`, line.direction === "in" ? line.from : "assistant", line.text, line.from === "error" ? "error" : "");
    }
    let draft = null;
    chatSource = new EventSource(`/api/chat/${encodeURIComponent(folder)}/events`);
    chatSource.onmessage = (e) => {
      const ev = JSON.parse(e.data);
      if (ev.type === "working") activity.textContent = "working…";
      else if (ev.type === "tool") activity.textContent = `${ev.tool}: ${ev.summary}`;
      else if (ev.type === "delta") {
        if (!draft) { draft = el("div", { class: "msg out pending" }, el("span", { class: "who" }, "assistant")); log.append(draft); }
        draft.append(ev.text);
        log.scrollTop = log.scrollHeight;
      } else if (ev.type === "message") {
        if (draft) { draft.remove(); draft = null; }
        activity.textContent = "";
        add("out", `out-${ev.id}`, "assistant", ev.text, ev.kind === "error" ? "error" : "");
      }
    };
    const submit = async () => {
      const text = input.value;
      if (!text.trim()) return;
      input.value = "";
      const id = crypto.randomUUID();
      add("in", null, "you", text, "");
      try {
        const r = await api(`/api/chat/${encodeURIComponent(folder)}`, { body: { id, text } });
        if (r.outcome !== "accepted") activity.textContent = `${r.outcome}${r.detail ? ": " + r.detail : ""}`;
      } catch (err) {
        activity.textContent = `not sent: ${err.message}`;
      }
    };
    send.addEventListener("click", submit);
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); }
    });
    input.focus();
  },

  async groups(main) {
    const groups = await api("/api/groups");
    main.append(el("h1", {}, "Groups"));
    main.append(table(["group", "folder", "trigger", "model", "time zone", "chats wired"],
      groups.map((g) => [
        el("span", {}, g.group.name, g.group.is_main ? " " : "", g.group.is_main ? badge("main", "ok") : ""),
        el("code", {}, g.group.folder), g.group.trigger,
        `${g.group.provider || "default"} / ${g.group.model || "default"}`, g.group.timezone || "host's",
        el("div", {}, g.chats.map((c) => el("div", {},
          `${c.chat.channel}: ${c.chat.name || c.chat.platform_id} `,
          badge(c.wiring.trigger_rule), " ", badge(c.wiring.session_mode))))])));
  },

  async tasks(main, arg) {
    const tasks = await api("/api/tasks");
    main.append(el("h1", {}, "Scheduled tasks"));
    main.append(table(["task", "group", "schedule", "next run", "status", "last run"],
      tasks.map((t) => [el("code", {}, t.task_id), t.group, t.schedule, t.next_run ? el("time", { datetime: t.next_run }, t.next_run_local) : "–",
        badge(t.status, t.status === "active" ? "ok" : ""),
        t.last_run ? runBadge(t.last_run.status) : "–"]),
      (i) => { location.hash = `#tasks/${tasks[i].task_id}`; }));
    const task = tasks.find((t) => t.task_id === arg);
    if (task) {
      main.append(el("h2", {}, `Runs of ${task.task_id}`));
      main.append(el("p", { class: "muted" }, task.prompt));
      const act = async (action) => {
        if (action === "cancel" && !confirm(`Cancel ${task.task_id} for good?`)) return;
        await api(`/api/tasks/${encodeURIComponent(task.task_id)}`, { body: { action } });
        render();
      };
      const pausable = task.status === "active" || task.status === "failing";
      const live = pausable || task.status === "paused";
      main.append(el("p", { class: "actions" },
        el("button", { class: "action primary", id: "task-run-now", onclick: () => act("run_now") }, "Run now"), " ",
        pausable ? el("button", { class: "action", id: "task-pause", onclick: () => act("pause") }, "Pause") : "",
        task.status === "paused" ? el("button", { class: "action", id: "task-resume", onclick: () => act("resume") }, "Resume") : "",
        " ",
        live ? el("button", { class: "action", id: "task-cancel", onclick: () => act("cancel") }, "Cancel") : ""));
      const runs = await api(`/api/tasks/${encodeURIComponent(task.task_id)}/runs`);
      main.append(table(["run", "scheduled for", "finished", "status", "late", "tokens in/out", "error"],
        runs.map((r) => [r.id, when(r.scheduled_for), when(r.finished_at),
          runBadge(r.status),
          `${Math.round(r.late_ms / 1000)} s`, `${r.input_tokens} / ${r.output_tokens}`, r.error || ""])));
    }
  },

  async vault(main) {
    const v = await api("/api/vault");
    main.append(el("h1", {}, "Vault"));
    main.append(el("p", { class: "muted" }, "Secret values never leave the host; only their names and where agents may use them are shown."));
    main.append(el("h2", {}, "Approvals"));
    const decide = async (grant, approve) => {
      await api(`/api/vault/approvals/${grant}`, { body: { approve } });
      render();
    };
    main.append(table(["grant", "group", "secret", "host", "asked", "state", ""],
      v.approvals.map((a) => [`#${a.grant_id}`, a.group_folder, a.secret_name, a.host, when(a.requested_at),
        badge(a.state, a.state === "approved" ? "ok" : a.state === "denied" ? "bad" : "warn"),
        a.state === "pending" ? el("span", {},
          el("button", { class: "action primary", "data-approve": a.grant_id, onclick: () => decide(a.grant_id, true) }, "Approve"), " ",
          el("button", { class: "action", "data-deny": a.grant_id, onclick: () => decide(a.grant_id, false) }, "Deny")) : ""])));
    main.append(el("h2", {}, "Grants"));
    const rows = [];
    for (const s of v.secrets) {
      if (s.grants.length === 0) rows.push([s.name, el("span", { class: "muted" }, "no grants"), "", "", ""]);
      for (const g of s.grants) rows.push([s.name, g.group_folder, `${g.host}${g.path_prefix}`, g.inject, g.needs_approval ? badge("needs approval", "warn") : ""]);
    }
    main.append(table(["secret", "group", "host and path", "injected as", ""], rows));
  },

  async audit(main) {
    main.append(el("h1", {}, "Audit log"));
    const result = el("div", { id: "verify-result" });
    const verify = async () => {
      result.replaceChildren(el("p", { class: "muted" }, "verifying…"));
      const r = await api("/api/audit/verify");
      result.replaceChildren(r.intact
        ? el("div", { class: "banner ok" }, `Chain intact: every row verified (${r.rows}).`)
        : el("div", { class: "banner bad" }, `Chain BROKEN at row ${r.broken_at}: ${r.why}`));
    };
    main.append(el("p", {}, el("button", { class: "action", id: "verify", onclick: verify }, "Verify the hash chain")), result);
    const cells = (r) => [r.id, when(r.at), r.group_folder,
      badge(r.decision, r.decision === "allow" ? "ok" : r.decision === "deny" ? "bad" : ""),
      `${r.method} ${r.host}${r.path}`, r.status === null || r.status === undefined ? "–" : r.status,
      r.secret_name || "", r.reason || ""];
    const rows = await api("/api/audit");
    const log = table(["#", "when", "group", "decision", "request", "status", "secret", "reason"], rows.map(cells));
    main.append(log);
    // Rows are numbered from 1 and never removed (the chain): below the last one shown, there are more.
    let oldest = rows.length ? rows[rows.length - 1].id : 1;
    const more = el("button", { class: "action", id: "audit-older", onclick: async () => {
      const older = await api(`/api/audit?before=${oldest}`);
      for (const r of older) log.tBodies[0].append(el("tr", {}, cells(r).map((c) => el("td", {}, c))));
      if (older.length) oldest = older[older.length - 1].id;
      if (oldest <= 1 || older.length === 0) more.remove();
    } }, "Older rows");
    if (oldest > 1) main.append(el("p", {}, more));
  },

  async skills(main, arg) {
    const groups = await api("/api/groups");
    const folder = arg || (groups.find((g) => g.group.is_main) || groups[0] || { group: {} }).group.folder;
    main.append(el("h1", {}, "Skills"));
    const picker = el("select", { onchange: (e) => { location.hash = `#skills/${e.target.value}`; } },
      groups.map((g) => el("option", { value: g.group.folder, selected: g.group.folder === folder }, g.group.name || g.group.folder)));
    main.append(el("p", {}, "Group ", picker));
    if (!folder) return;
    const skills = await api(`/api/skills/${encodeURIComponent(folder)}`);
    main.append(el("div", { class: "graph" }, el("img", { id: "skill-graph", alt: `skill graph of ${folder}`, src: `/api/skills/${encodeURIComponent(folder)}/graph.svg` })));
    main.append(el("h2", {}, "Enabled for this group"));
    main.append(table(["skill", "state", "source", "asked for", "since", "paused because"],
      skills.map((s) => [s.skill, badge(s.state, s.state === "enabled" ? "ok" : "warn"), s.source,
        s.requested ? "yes" : "required by another", when(s.enabled_at), s.paused_reason || ""])));
  },
};

async function render() {
  if (chatSource) { chatSource.close(); chatSource = null; }
  const [page, ...rest] = (location.hash.slice(1) || "overview").split("/");
  const name = pages[page] ? page : "overview";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  const main = document.getElementById("main");
  const fresh = el("main", { id: "main", "aria-live": "polite" });
  try {
    await pages[name](fresh, rest.map(decodeURIComponent).join("/"));
  } catch (err) {
    fresh.append(el("div", { class: "banner bad" }, `Could not load this page: ${err.message}`));
  }
  main.replaceWith(fresh);
  document.body.dataset.page = name;
  document.body.dataset.ready = "true";
}

async function start() {
  const session = await api("/api/session");
  csrf = session.csrf;
  document.title = `${session.assistant_name} · nanoclaw`;
  document.getElementById("signout").addEventListener("click", async () => {
    await api("/api/logout", { body: {} });
    location.reload();
  });
  window.addEventListener("hashchange", () => { document.body.dataset.ready = "false"; render(); });
  await render();
}

start();
