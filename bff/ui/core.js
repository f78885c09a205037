// What every view of the console shares: its constants, the signed-in caller (`session`), DOM
// and formatting helpers, the /v1 API called with the caller's bearer token, and operator
// actions confirmed with a reason.

export const TOKEN_KEY = "pulsaga.token";
export const STATUSES = ["running", "compensating", "parked", "completed", "compensated"];
export const SERVICES = ["campaigns", "tracking", "commissions", "payments", "sagas"];
export const PAGE = 50;
export const LIVE_EVERY_MS = 5000;

/** The signed-in caller (`/v1/me`), and the timer of a live-refreshing view. */
export const session = { me: null, live: null };

// ---- DOM and formatting helpers ------------------------------------------------------------

/** An element with attributes (`on*` functions become listeners) and children (text or nodes). */
export function h(tag, attrs = {}, ...children) {
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

export function show(...nodes) {
  view.replaceChildren(...nodes.flat().filter((node) => node !== null && node !== undefined && node !== false));
  view.focus();
}

export function badge(status) {
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

export function when(iso) {
  return h("time", { datetime: iso, title: iso }, relative(iso));
}

export function millis(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

export function notice(text, kind = "") {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// ---- The API -------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export async function api(path, options = {}) {
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

export function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    session.me = null;
    location.hash = "#/signin";
    return notice("Your token was refused; sign in again.", "error");
  }
  if (error instanceof ApiError && error.status === 403) {
    return notice(`Not allowed for your role: ${error.message}`, "error");
  }
  return notice(String(error.message || error), "error");
}

export function go(path, params) {
  const query = params ? new URLSearchParams([...params].filter(([, v]) => v !== "")).toString() : "";
  location.hash = `#${path}${query ? `?${query}` : ""}`;
}

// ---- Operator actions ----------------------------------------------------------------------

/**
 * A button row of actions, each confirmed in a dialog that asks for a reason (recorded with the
 * caller's name); `perform(action, reason)` runs the confirmed one, and its error shows below.
 */
export function confirmed({ label, actions, allowed, title, perform, danger = [] }) {
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

export async function postJson(path, body) {
  return api(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}
