// The sagas: a filtered, paged list with live refresh, and one saga's steps, log, time axis and
// operator actions.

import {
  LIVE_EVERY_MS, PAGE, STATUSES, api, badge, confirmed, go, h, millis, notice, postJson, session, show,
  when,
} from "./core.js";

// ---- Saga list -----------------------------------------------------------------------------

export async function sagaList(params) {
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
    if (session.live) clearInterval(session.live);
    session.live = liveBox.checked ? setInterval(refresh, LIVE_EVERY_MS) : null;
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

export async function sagaDetail(id) {
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
    session.me.role === "admin" ? operations(saga) : null,
    h("h2", {}, "Steps"), steps,
    h("h2", {}, "On a time axis"), axis,
    compensations.length ? [h("h2", {}, "Compensations, last step first"), undone] : null,
    h("h2", {}, "Timeline"), entries,
    h("details", {}, h("summary", {}, `Raw log entries (${timeline.length})`),
      h("pre", {}, JSON.stringify(timeline, null, 2))),
  );
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
