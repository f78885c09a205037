// The Pulsaga console: a few views over the /v1 API, called with the signed-in user's bearer
// token, so roles and tenancy apply exactly as in the API. No framework and no build step: the
// BFF serves this file as written (docs/adr/0005-console-without-a-build-step.md).

const TOKEN_KEY = "pulsaga.token";
const STATUSES = ["running", "compensating", "parked", "completed", "compensated"];
const SERVICES = ["campaigns", "tracking", "commissions", "payments", "sagas"];
const PAGE = 50;
const LIVE_EVERY_MS = 5000;

const view = document.getElementById("view");
let me = null;
let live = null;

// ---- DOM and formatting helpers ------------------------------------------------------------

/** An element with attributes (`on*` functions become listeners) and children (text or nodes). */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    // Through the CSSOM: the Content-Security-Policy refuses style attributes.
    else if (key === "style") node.style.cssText = value;
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function show(...nodes) {
  view.replaceChildren(...nodes.flat().filter((node) => node !== null && node !== undefined && node !== false));
  view.focus();
}

function badge(status) {
  return h("span", { class: `status ${status}` }, (status || "unknown").replaceAll("_", " "));
}

function relative(iso) {
  if (!iso) return "";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  const units = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return `${Math.round(seconds / size)} ${unit} ago`;
  }
  return "just now";
}

function when(iso) {
  return h("time", { datetime: iso, title: iso }, relative(iso));
}

function millis(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

function notice(text, kind = "") {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// ---- The API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { accept: "application/json", ...(options.headers || {}) };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`/v1${path}`, { ...options, headers });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { detail: text };
  }
  if (!response.ok) {
    throw new ApiError(response.status, (body && (body.detail || body.title)) || response.statusText);
  }
  return body;
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    location.hash = "#/signin";
    return notice("Your token was refused; sign in again.", "error");
  }
  if (error instanceof ApiError && error.status === 403) {
    return notice(`Not allowed for your role: ${error.message}`, "error");
  }
  return notice(String(error.message || error), "error");
}

// ---- Routing -------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query) };
}

function go(path, params) {
  const query = params ? new URLSearchParams([...params].filter(([, v]) => v !== "")).toString() : "";
  location.hash = `#${path}${query ? `?${query}` : ""}`;
}

function home() {
  if (!me) return "/signin";
  return me.role === "admin" || me.role === "auditor" ? "/sagas" : "/campaigns";
}

async function render() {
  if (live) {
    clearInterval(live);
    live = null;
  }
  // A sign-in link carries the token in the fragment: keep it for the session, then drop it
  // from the address bar and the history.
  const link = location.hash.match(/^#token=(.+)$/);
  if (link) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(link[1]));
    history.replaceState(null, "", "#/");
  }
  if (!me && sessionStorage.getItem(TOKEN_KEY)) {
    try {
      me = await api("/me");
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      signIn(error.message);
      return;
    }
  }
  header();
  const { parts, params } = route();
  if (!me) return signIn();
  try {
    switch (parts[0]) {
      case "sagas":
        return parts[1] ? await sagaDetail(parts[1]) : await sagaList(params);
      case "audit":
        return await audit(params);
      case "dead-letters":
        return parts[1] ? await deadLetter(parts[1]) : await deadLetters(params);
      case "campaigns":
        return await campaigns();
      case "signin":
        return signIn();
      default:
        go(home());
    }
  } catch (error) {
    show(failed(error));
  }
}

function header() {
  const who = document.getElementById("who");
  const signOut = document.getElementById("sign-out");
  who.textContent = me ? `${me.subject} · ${me.role}${me.tenant ? ` · tenant ${me.tenant}` : ""}` : "";
  signOut.hidden = !me;
  for (const link of document.querySelectorAll("nav a[data-roles]")) {
    link.hidden = !me || !link.dataset.roles.split(" ").includes(me.role);
  }
}

// ---- Sign-in -------------------------------------------------------------------------------

function signIn(problem) {
  const token = h("textarea", { id: "token", name: "token", required: true, autocomplete: "off" });
  const form = h("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, token.value.trim());
      me = null;
      await render();
      if (me) go(home());
    },
  },
    h("label", { for: "token" }, "Bearer token (`pulsaga token --role R` mints one; `pulsaga up` prints a sign-in link)"),
    token,
    h("p", {}, h("button", { type: "submit", class: "primary" }, "Sign in")),
  );
  show(h("h1", {}, "Sign in"), problem ? notice(`Sign-in refused: ${problem}`, "error") : null, form);
}

// ---- Saga list -----------------------------------------------------------------------------

async function sagaList(params) {
  const field = (name, label, attrs = {}) =>
    h("label", {}, label, h("input", { name, value: params.get(name) || "", ...attrs }));
  const select = (name, label, options) =>
    h("label", {}, label, h("select", { name },
      h("option", { value: "" }, "any"),
      options.map((o) => h("option", { value: o, selected: params.get(name) === o }, o))));
  const stalled = params.get("stalled_for");
  const form = h("form", {
    class: "filters", role: "search",
    onsubmit: (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const minutes = data.get("stalled_minutes");
      data.delete("stalled_minutes");
      if (minutes) data.set("stalled_for", String(Number(minutes) * 60));
      go("/sagas", data);
    },
  },
    field("key", "Saga, tracking, correlation or order id", { size: 38 }),
    select("type", "Type", ["order-to-payment", "commission-assignment", "order-refund"]),
    select("status", "Status", STATUSES),
    field("campaign_id", "Campaign", { size: 36 }),
    field("partner_id", "Partner", { size: 36 }),
    field("from", "Started from (RFC 3339)", { placeholder: "2026-12-01T00:00:00Z" }),
    field("to", "Started before"),
    h("label", {}, "Stalled for more than (min)",
      h("input", { name: "stalled_minutes", type: "number", min: 0, step: "any", value: stalled ? Number(stalled) / 60 : "" })),
    h("button", { type: "submit", class: "primary" }, "Filter"),
  );
  const query = new URLSearchParams(params);
  query.set("limit", String(PAGE));
  const first = await api(`/sagas?${query}`);
  const counts = h("ul", { class: "counts", "aria-label": "Sagas by status" },
    STATUSES.map((status) => h("li", {},
      h("button", {
        type: "button", "aria-pressed": params.get("status") === status ? "true" : "false",
        onclick: () => {
          const next = new URLSearchParams(params);
          if (next.get("status") === status) next.delete("status");
          else next.set("status", status);
          go("/sagas", next);
        },
      }, badge(status), h("span", { "data-count": status }, first.counts?.[status] ?? 0)))));
  const body = h("tbody");
  const table = h("table", { "aria-label": "Sagas" },
    h("thead", {}, h("tr", {}, ["Saga", "Type", "Status", "Step", "Reason", "Started", "Updated"].map((c) => h("th", { scope: "col" }, c)))),
    body);
  const more = h("button", { type: "button" }, "Load more");
  let next = first.next;
  const append = (sagas) => {
    for (const saga of sagas) {
      body.append(h("tr", {},
        h("td", { class: "mono" }, h("a", { href: `#/sagas/${saga.saga_id}` }, saga.saga_id)),
        h("td", {}, saga.saga_type),
        h("td", {}, badge(saga.status)),
        h("td", {}, saga.current_step || ""),
        h("td", {}, saga.reason || ""),
        h("td", {}, when(saga.started_at)),
        h("td", {}, when(saga.updated_at))));
    }
    more.hidden = !next;
  };
  more.addEventListener("click", async () => {
    query.set("cursor", next);
    const page = await api(`/sagas?${query}`);
    next = page.next;
    append(page.sagas);
  });
  append(first.sagas);
  const liveBox = h("input", { type: "checkbox", id: "live" });
  liveBox.addEventListener("change", () => {
    if (live) clearInterval(live);
    live = liveBox.checked ? setInterval(refresh, LIVE_EVERY_MS) : null;
  });
  async function refresh() {
    const fresh = new URLSearchParams(params);
    fresh.set("limit", String(PAGE));
    const page = await api(`/sagas?${fresh}`).catch(() => null);
    if (!page) return;
    for (const status of STATUSES) {
      const count = counts.querySelector(`[data-count="${status}"]`);
      if (count) count.textContent = page.counts?.[status] ?? 0;
    }
    body.replaceChildren();
    next = page.next;
    append(page.sagas);
  }
  show(
    h("h1", {}, "Sagas"),
    counts,
    form,
    h("p", {}, h("label", { for: "live", style: "flex-direction: row; gap: 0.4rem" }, liveBox, "Live refresh every 5 s")),
    first.sagas.length ? table : notice("No saga matches."),
    h("p", {}, more),
  );
}

// ---- Saga detail ---------------------------------------------------------------------------

const COMPENSATION_ENTRIES = new Set([
  "compensation_started", "compensation_command_sent", "compensation_succeeded",
  "compensation_failed", "compensation_retry_due", "compensated",
]);

function entryStep(entry) {
  return entry.sent?.step || entry.step || "";
}

function describe(entry) {
  const step = entryStep(entry);
  switch (entry.entry) {
    case "started": return `started (${entry.data?.kind}${entry.data?.order_id ? `, order ${entry.data.order_id}` : ""})`;
    case "step_command_sent": return `${step}: ${entry.sent.command} sent (attempt ${entry.sent.attempt})`;
    case "step_succeeded": return `${step} succeeded`;
    case "step_failed": return `${step} failed: ${entry.code}: ${entry.reason}`;
    case "step_timed_out": return `${step} timed out (attempt ${entry.attempt})`;
    case "compensation_started": return `compensation started: ${entry.reason}`;
    case "compensation_command_sent": return `undo ${step}: ${entry.sent.command} sent (attempt ${entry.sent.attempt})`;
    case "compensation_succeeded": return `${step} undone`;
    case "compensation_failed": return `undoing ${step} failed (attempt ${entry.attempt}): ${entry.reason}`;
    case "compensation_retry_due": return `undoing ${step}: attempt ${entry.attempt} due`;
    case "parked": return `parked: ${entry.reason}`;
    case "operator_acted": return `${entry.action} by ${entry.actor}${entry.reason ? `: ${entry.reason}` : ""}`;
    case "completed": return "completed";
    case "compensated": return "compensated";
    default: return entry.entry || "entry";
  }
}

function tone(entry) {
  if (entry.entry === "operator_acted") return "operator";
  if (/failed|timed_out|parked/.test(entry.entry)) return "bad";
  if (entry.entry === "completed" || entry.entry === "compensated") return "good";
  return COMPENSATION_ENTRIES.has(entry.entry) ? "compensation" : "forward";
}

/** Per step and direction, from its first command to its answer: [{step, compensation, from, to}]. */
function spans(timeline) {
  const open = new Map();
  const done = [];
  for (const entry of timeline) {
    const compensation = entry.entry.startsWith("compensation");
    const key = `${compensation ? "undo" : "do"}:${entryStep(entry)}`;
    if (entry.entry === "step_command_sent" || entry.entry === "compensation_command_sent") {
      if (!open.has(key)) open.set(key, { step: entryStep(entry), compensation, from: entry.at, to: null, outcome: "sent" });
    } else if (["step_succeeded", "step_failed", "compensation_succeeded", "compensation_failed"].includes(entry.entry)) {
      const span = open.get(key);
      if (span && (entry.entry !== "compensation_failed" || entry.retry_in_ms === undefined)) {
        span.to = entry.at;
        span.outcome = entry.entry.replace("compensation_", "").replace("step_", "");
        open.delete(key);
        done.push(span);
      }
    }
  }
  return [...done, ...open.values()].sort((a, b) => a.from - b.from);
}

async function sagaDetail(id) {
  const detail = await api(`/sagas/${encodeURIComponent(id)}`);
  const saga = detail.saga;
  const timeline = detail.timeline || [];
  const start = timeline[0]?.at ?? 0;
  const end = Math.max(start + 1, ...timeline.map((e) => e.at));
  const ms = (micros) => micros / 1000;
  const meta = h("dl", { class: "meta" },
    h("dt", {}, "Status"), h("dd", {}, badge(saga.status)),
    h("dt", {}, "Type"), h("dd", {}, saga.saga_type),
    h("dt", {}, "Current step"), h("dd", {}, saga.current_step || "—"),
    h("dt", {}, "Reason"), h("dd", {}, saga.reason || "—"),
    h("dt", {}, "Started"), h("dd", {}, when(saga.started_at)),
    h("dt", {}, "Updated"), h("dd", {}, when(saga.updated_at)),
    h("dt", {}, "Tracking event"), h("dd", { class: "mono" },
      h("a", { href: `#/audit?service=tracking&stream=tracking-event-${saga.tracking_id}` }, saga.tracking_id)),
    h("dt", {}, "Campaign"), h("dd", { class: "mono" },
      h("a", { href: `#/audit?service=campaigns&stream=campaign-${saga.campaign_id}` }, saga.campaign_id)),
    h("dt", {}, "Partner"), h("dd", { class: "mono" }, saga.partner_id),
    saga.correlation_id ? [h("dt", {}, "Flow"), h("dd", { class: "mono" },
      h("a", { href: `#/audit?correlation=${saga.correlation_id}` }, `${saga.correlation_id} (every service's events)`))] : null,
    saga.archived_at ? [h("dt", {}, "Archived"), h("dd", {}, when(saga.archived_at))] : null,
  );
  const durations = new Map();
  for (const span of spans(timeline)) {
    if (!span.compensation && span.to !== null) durations.set(span.step, ms(span.to - span.from));
  }
  const steps = h("table", { "aria-label": "Steps" },
    h("thead", {}, h("tr", {}, ["Step", "Status", "Attempts", "Duration"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, (detail.steps || []).map((step) => h("tr", {},
      h("td", {}, step.step), h("td", {}, badge(step.status)), h("td", {}, step.attempts || ""),
      h("td", {}, durations.has(step.step) ? millis(durations.get(step.step)) : "")))));
  const axis = h("table", { "aria-label": "Steps on a time axis" },
    h("thead", {}, h("tr", {}, ["", "From start", "Took", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, spans(timeline).map((span) => {
      const left = ((span.from - start) / (end - start)) * 100;
      const width = (((span.to ?? end) - span.from) / (end - start)) * 100;
      return h("tr", { class: span.compensation ? "compensation" : "forward" },
        h("td", {}, span.compensation ? `undo ${span.step}` : span.step),
        h("td", {}, `+${millis(ms(span.from - start))}`),
        h("td", {}, span.to === null ? "no answer yet" : `${millis(ms(span.to - span.from))} · ${span.outcome}`),
        h("td", {}, h("div", { class: "bar-track", "aria-hidden": "true" },
          h("div", { class: `bar ${span.compensation ? "compensation" : ""}`, style: `left:${left}%;width:${Math.max(width, 0.5)}%` }))));
    })));
  const entries = h("ol", { class: "timeline", "aria-label": "Timeline" },
    timeline.map((entry) => h("li", { class: tone(entry), "data-entry": entry.entry },
      h("span", { class: "offset" }, `+${millis(ms(entry.at - start))}`), describe(entry))));
  const compensations = timeline.filter((e) => e.entry === "compensation_command_sent" && e.sent.attempt === 1);
  const undone = h("ol", { "aria-label": "Compensations in the order they ran" },
    compensations.map((e) => {
      const outcome = timeline.filter((o) => o.entry.startsWith("compensation_") && o.entry !== "compensation_command_sent" && entryStep(o) === entryStep(e)).pop();
      return h("li", { "data-step": entryStep(e) }, `undo ${entryStep(e)} (${e.sent.command})`, " ",
        outcome ? badge(outcome.entry === "compensation_succeeded" ? "compensated" : outcome.entry.replace("compensation_", "")) : badge("sent"));
    }));
  show(
    h("p", {}, h("a", { href: "#/sagas" }, "← Sagas")),
    h("h1", {}, "Saga ", h("span", { class: "mono" }, saga.saga_id)),
    meta,
    me.role === "admin" ? operations(saga) : null,
    h("h2", {}, "Steps"), steps,
    h("h2", {}, "On a time axis"), axis,
    compensations.length ? [h("h2", {}, "Compensations, last step first"), undone] : null,
    h("h2", {}, "Timeline"), entries,
    h("details", {}, h("summary", {}, `Raw log entries (${timeline.length})`),
      h("pre", {}, JSON.stringify(timeline, null, 2))),
  );
}

/**
 * A button row of actions, each confirmed in a dialog that asks for a reason (recorded with the
 * caller's name); `perform(action, reason)` runs the confirmed one, and its error shows below.
 */
function confirmed({ label, actions, allowed, title, perform, danger = [] }) {
  const result = h("div", { "aria-live": "polite" });
  const reason = h("textarea", { id: "reason", required: true, rows: 3, maxlength: 2000 });
  const dialog = h("dialog", { "aria-labelledby": "confirm-title" });
  const act = (action) => {
    dialog.replaceChildren(h("form", {
      method: "dialog",
      onsubmit: async (event) => {
        if (event.submitter?.value !== "confirm") return;
        event.preventDefault();
        if (!reason.value.trim()) {
          reason.focus();
          return;
        }
        dialog.close();
        try {
          await perform(action, reason.value.trim());
        } catch (error) {
          result.replaceChildren(failed(error));
        }
      },
    },
      h("h2", { id: "confirm-title" }, title(action)),
      h("label", { for: "reason" }, "Reason (recorded with your name)"), reason,
      h("p", { class: "actions" },
        h("button", { value: "cancel" }, "Cancel"),
        h("button", { value: "confirm", class: danger.includes(action) ? "danger" : "primary" }, `Confirm ${action}`))));
    dialog.showModal();
    reason.focus();
  };
  return h("section", { "aria-label": label },
    h("h2", {}, label),
    h("p", { class: "actions" }, actions.map((action) =>
      h("button", { type: "button", disabled: !allowed.includes(action), onclick: () => act(action) }, action))),
    dialog, result);
}

async function postJson(path, body) {
  return api(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

function operations(saga) {
  // A parked saga can be retried, resumed or compensated; a running one only compensated.
  const allowed = saga.status === "parked" ? ["retry", "resume", "compensate"]
    : saga.status === "running" ? ["compensate"] : [];
  const section = confirmed({
    label: "Operations",
    actions: ["retry", "resume", "compensate"],
    allowed,
    danger: ["compensate"],
    title: (action) => `${action[0].toUpperCase()}${action.slice(1)} saga ${saga.saga_id}?`,
    perform: async (action, reason) => {
      await postJson(`/sagas/${saga.saga_id}/${action}`, { reason });
      await sagaDetail(saga.saga_id);
    },
  });
  if (!allowed.length) section.querySelector("h2").after(h("p", { class: "muted" }, "A saga that ended cannot be acted on."));
  return section;
}

// ---- Dead letters ----------------------------------------------------------------------------

async function deadLetters(params) {
  if (!params.has("status")) params.set("status", "pending");
  const form = h("form", {
    class: "filters", role: "search",
    onsubmit: (event) => { event.preventDefault(); go("/dead-letters", new FormData(form)); },
  },
    h("label", {}, "Service", h("select", { name: "service" },
      h("option", { value: "" }, "any"),
      SERVICES.map((s) => h("option", { value: s, selected: params.get("service") === s }, s)))),
    h("label", {}, "Topic", h("input", { name: "topic", value: params.get("topic") || "", size: 34 })),
    h("label", {}, "Status", h("select", { name: "status" },
      ["pending", "redriven", "all"].map((s) => h("option", { value: s, selected: params.get("status") === s }, s)))),
    h("button", { type: "submit", class: "primary" }, "Filter"));
  const query = new URLSearchParams(params);
  query.set("limit", String(PAGE));
  const first = await api(`/dead-letters?${query}`);
  const topics = h("table", { "aria-label": "Dead-letter topics" },
    h("thead", {}, h("tr", {}, ["Service", "Dead-letter topic", "Pending", "Re-driven"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, first.topics.map((t) => h("tr", {},
      h("td", {}, t.service),
      h("td", { class: "mono" }, h("a", { href: `#/dead-letters?service=${t.service}&topic=${encodeURIComponent(t.topic)}&status=all` },
        `${t.topic}-${t.subscription}-DLQ`)),
      h("td", {}, t.pending),
      h("td", {}, t.redriven)))));
  const body = h("tbody");
  const table = h("table", { "aria-label": "Dead letters" },
    h("thead", {}, h("tr", {}, ["Dead letter", "Service", "Topic", "Message", "Cause", "Error", "Dead-lettered", "Status"]
      .map((c) => h("th", { scope: "col" }, c)))),
    body);
  const more = h("button", { type: "button" }, "Load more");
  let next = first.next;
  const append = (letters) => {
    for (const l of letters) {
      body.append(h("tr", { "data-dead-letter": l.id },
        h("td", { class: "mono" }, h("a", { href: `#/dead-letters/${l.id}` }, l.id)),
        h("td", {}, l.service),
        h("td", { class: "mono" }, l.topic),
        h("td", {}, l.message_type || ""),
        h("td", {}, badge(l.cause)),
        h("td", { class: "error-text", title: l.error }, l.error.length > 120 ? `${l.error.slice(0, 120)}…` : l.error),
        h("td", {}, when(l.dead_lettered_at)),
        h("td", {}, badge(l.status))));
    }
    more.hidden = !next;
  };
  more.addEventListener("click", async () => {
    query.set("cursor", next);
    const page = await api(`/dead-letters?${query}`);
    next = page.next;
    append(page.dead_letters);
  });
  append(first.dead_letters);
  show(
    h("h1", {}, "Dead letters"),
    first.unavailable.length ? notice(`Not answering, their dead letters are missing: ${first.unavailable.join(", ")}`, "error") : null,
    first.topics.length ? topics : notice("No message was ever dead-lettered."),
    form,
    first.dead_letters.length ? table : notice("No dead letter matches."),
    h("p", {}, more),
  );
}

async function deadLetter(id) {
  const l = await api(`/dead-letters/${encodeURIComponent(id)}`);
  const row = (term, value) => [h("dt", {}, term), h("dd", {}, value ?? "")];
  const redrive = confirmed({
    label: "Re-drive",
    actions: ["re-drive"],
    allowed: l.status === "pending" ? ["re-drive"] : [],
    title: () => `Re-drive this ${l.message_type || "message"} to ${l.topic}?`,
    perform: async (_, reason) => {
      await postJson(`/dead-letters/${l.id}/redrive`, { reason });
      await deadLetter(l.id);
    },
  });
  show(
    h("p", {}, h("a", { href: "#/dead-letters" }, "← Dead letters")),
    h("h1", {}, `Dead letter `, h("span", { class: "mono" }, l.id)),
    h("dl", { class: "facts" },
      row("Status", badge(l.status)),
      row("Service", l.service),
      row("Topic", h("span", { class: "mono" }, l.topic)),
      row("Dead-letter topic", h("span", { class: "mono" }, l.dead_letter_topic)),
      row("Key", h("span", { class: "mono" }, l.key)),
      row("Message", l.message_type),
      row("Cause", badge(l.cause)),
      row("Error", h("span", { class: "error-text" }, l.error)),
      row("Attempts", l.attempts),
      row("Dead-lettered", when(l.dead_lettered_at)),
      l.redriven_at ? row("Re-driven", [when(l.redriven_at), ` by ${l.redriven_by}`, l.redrive_reason ? `: ${l.redrive_reason}` : ""]) : null),
    h("h2", {}, "Body"),
    l.body === null ? notice("The body could not be decoded; its bytes are below.") : h("pre", { "aria-label": "Body" }, JSON.stringify(l.body, null, 2)),
    h("h2", {}, "Properties"),
    h("pre", { "aria-label": "Properties" }, JSON.stringify(l.properties, null, 2)),
    h("details", {}, h("summary", {}, `Payload (${l.payload_bytes} bytes, base64)`), h("pre", { class: "wrap" }, l.payload_base64)),
    redrive,
  );
}

// ---- Audit ---------------------------------------------------------------------------------

/** The events in causal order: each after the event whose message caused it, depth-first. */
function causal(events) {
  const byId = new Map(events.map((e) => [e.event_id, e]));
  const parent = (e) => byId.get(e.metadata?.causation_id) || byId.get(e.metadata?.message_id);
  const children = new Map();
  const roots = [];
  for (const event of events) {
    const p = parent(event);
    if (p && p !== event) {
      if (!children.has(p.event_id)) children.set(p.event_id, []);
      children.get(p.event_id).push(event);
    } else {
      roots.push(event);
    }
  }
  const ordered = [];
  const seen = new Set();
  const walk = (event, depth) => {
    if (seen.has(event.event_id)) return;
    seen.add(event.event_id);
    ordered.push([event, depth]);
    for (const child of children.get(event.event_id) || []) walk(child, depth + 1);
  };
  for (const root of roots) walk(root, 0);
  return ordered;
}

function download(name, events) {
  const blob = new Blob(events.map((e) => `${JSON.stringify(e)}\n`), { type: "application/x-ndjson" });
  return h("a", { href: URL.createObjectURL(blob), download: name }, `Export ${events.length} events as JSON lines`);
}

async function audit(params) {
  const service = params.get("service") || "";
  const stream = params.get("stream") || "";
  const correlation = params.get("correlation") || "";
  const asOf = params.get("as_of") || "";
  const streamForm = h("form", {
    class: "filters", "aria-label": "A stream",
    onsubmit: (event) => { event.preventDefault(); go("/audit", new FormData(streamForm)); },
  },
    h("label", {}, "Service", h("select", { name: "service" },
      SERVICES.map((s) => h("option", { value: s, selected: s === service }, s)))),
    h("label", {}, "Stream id", h("input", { name: "stream", value: stream, size: 48, placeholder: "campaign-…" })),
    h("label", {}, "As of (RFC 3339)", h("input", { name: "as_of", value: asOf })),
    h("button", { type: "submit", class: "primary" }, "Read stream"));
  const flowForm = h("form", {
    class: "filters", "aria-label": "A flow",
    onsubmit: (event) => { event.preventDefault(); go("/audit", new FormData(flowForm)); },
  },
    h("label", {}, "Correlation id", h("input", { name: "correlation", value: correlation, size: 38 })),
    h("button", { type: "submit", class: "primary" }, "Show the flow"));
  const out = [];
  if (service && stream) {
    const path = `/audit/${encodeURIComponent(service)}/streams/${encodeURIComponent(stream)}`;
    const [answer, then] = await Promise.all([
      api(path),
      api(`${path}/state${asOf ? `?as_of=${encodeURIComponent(asOf)}` : ""}`).catch((error) => {
        if (error instanceof ApiError && error.status === 404) return null;
        throw error;
      }),
    ]);
    const all = answer.events || answer || [];
    // The service said which version the stream was at then: exactly the events up to it.
    const events = !asOf ? all : then ? all.filter((e) => e.version <= then.version) : [];
    out.push(h("h2", {}, `${service} · ${stream}${asOf ? ` as of ${asOf}` : ""}`),
      h("section", { "aria-label": "State" },
        h("h3", {}, asOf ? `State as of ${asOf}` : "State now"),
        !then ? notice("The stream had no event yet at that time.")
          : then.state === null ? notice(`${service} keeps no state of this stream; its events are below.`)
            : [h("p", {}, `Version ${then.version}, last changed `, when(then.updated_at)),
              h("pre", {}, JSON.stringify(then.state, null, 2))]),
      h("h3", {}, "Events"),
      h("p", {}, `${events.length} of ${all.length} events`, " · ", download(`${stream}.jsonl`, events)),
      eventsTable(events.map((e) => [e, 0]), false));
  }
  if (correlation) {
    const answer = await api(`/audit/correlations/${encodeURIComponent(correlation)}`);
    const events = answer.events || [];
    out.push(h("h2", {}, `Flow ${correlation}`),
      h("p", {}, `${events.length} events across services, each under the one that caused it`, " · ",
        download(`${correlation}.jsonl`, events)),
      eventsTable(causal(events), true));
  }
  show(h("h1", {}, "Audit"), streamForm, flowForm, ...out);
}

function eventsTable(rows, withService) {
  return h("table", { "aria-label": "Events" },
    h("thead", {}, h("tr", {}, [withService ? "Service" : null, "Stream", "Version", "Event", "Recorded", "Actor", "Data"]
      .filter(Boolean).map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map(([e, depth]) => h("tr", { "data-event-type": e.event_type },
      withService ? h("td", {}, e.service) : null,
      h("td", { class: "mono" }, e.stream_id),
      h("td", {}, e.version),
      h("td", { style: `padding-left:${0.6 + depth * 1.2}rem` }, e.event_type),
      h("td", {}, when(e.recorded_at)),
      h("td", {}, e.metadata?.actor || ""),
      h("td", {}, h("details", {}, h("summary", {}, "data"), h("pre", {}, JSON.stringify({ data: e.data, metadata: e.metadata }, null, 2))))))));
}

// ---- Campaigns -----------------------------------------------------------------------------

async function campaigns() {
  const list = await api("/campaigns");
  const money = (minor, currency) => `${(minor / 100).toFixed(2)} ${currency}`;
  show(h("h1", {}, "Campaigns"),
    list.length ? h("table", { "aria-label": "Campaigns" },
      h("thead", {}, h("tr", {}, ["Campaign", "Name", "Advertiser", "Budget", "Reserved", "Available", "Valid until"]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, list.map((c) => h("tr", { "data-campaign": c.campaign_id },
        h("td", { class: "mono" }, h("a", { href: `#/audit?service=campaigns&stream=campaign-${c.campaign_id}` }, c.campaign_id)),
        h("td", {}, c.name),
        h("td", { class: "mono" }, c.advertiser_id),
        h("td", {}, money(c.budget, c.currency)),
        h("td", {}, money(c.reserved, c.currency)),
        h("td", {}, money(c.available, c.currency)),
        h("td", {}, c.valid_until)))))
      : notice("No campaign you may see."));
}

// ---- Start ---------------------------------------------------------------------------------

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  go("/signin");
});
window.addEventListener("hashchange", render);
render();
