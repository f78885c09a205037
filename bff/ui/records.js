// The records behind the sagas: dead letters (and their redrive), the audit of a stream or a
// flow, and the campaigns.

import {
  ApiError, PAGE, SERVICES, api, badge, confirmed, go, h, notice, postJson, show, when,
} from "./core.js";

// ---- Dead letters ----------------------------------------------------------------------------

export async function deadLetters(params) {
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

export async function deadLetter(id) {
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

export async function audit(params) {
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

export async function campaigns() {
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
