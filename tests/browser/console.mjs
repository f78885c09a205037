// The console in a real browser, as each role meets it: Playwright drives Debian's Chromium
// against a running platform that `cli/tests/it/console.rs` started (`pulsaga up --demo`), which
// passes what it printed in the environment. Run twice: to read, as every role; then, with
// PULSAGA_PARKED_SAGA, PULSAGA_RUNNING_SAGA and PULSAGA_DEAD_LETTER, to retry the parked saga,
// compensate the running one and re-drive that dead letter as admin. Exits non-zero on the first failed check;
// saves screenshots of the main pages in PULSAGA_SCREENSHOTS.

import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const base = env("PULSAGA_CONSOLE");
const link = env("PULSAGA_SIGN_IN_LINK");
const tokens = {
  admin: env("PULSAGA_TOKEN_ADMIN"),
  auditor: env("PULSAGA_TOKEN_AUDITOR"),
  advertiser: env("PULSAGA_TOKEN_ADVERTISER"),
};
const running = process.env.PULSAGA_RUNNING_SAGA;
const parked = running ? env("PULSAGA_PARKED_SAGA") : null;
const deadLetter = running ? env("PULSAGA_DEAD_LETTER") : null;
const order = running ? null : env("PULSAGA_ORDER");
const shots = env("PULSAGA_SCREENSHOTS");
mkdirSync(shots, { recursive: true });
const axe = readFileSync(new URL("./node_modules/axe-core/axe.min.js", import.meta.url), "utf8");

const errors = [];

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}${errors.length ? `\nscript errors: ${errors.join("; ")}` : ""}`);
  console.log(`ok: ${what}`);
}

/** The API as `role` calls it, outside the browser: what the console is compared against. */
async function api(role, path, options = {}) {
  const response = await fetch(`${base}/v1${path}`, {
    ...options,
    headers: { authorization: `Bearer ${tokens[role]}`, "content-type": "application/json" },
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

/** No serious or critical accessibility violation on the page as it stands (axe-core). */
async function accessible(page, what) {
  // Evaluated, not added as a script tag: the console's Content-Security-Policy refuses those.
  await page.evaluate(axe);
  const result = await page.evaluate(async () => window.axe.run(document, { resultTypes: ["violations"] }));
  const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of serious) console.error(`${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  check(serious.length === 0, `${what}: no serious accessibility violation`);
}

async function signInByPasting(browser, role) {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${base}/ui/`);
  await page.getByLabel(/Bearer token/).fill(tokens[role]);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#who").filter({ hasText: role }).waitFor();
  return page;
}

const browser = await chromium.launch({ executablePath: env("PULSAGA_CHROMIUM"), args: ["--no-sandbox"] });
try {
  // Admin, through the sign-in link `pulsaga up` prints.
  const admin = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  admin.on("pageerror", (error) => errors.push(String(error)));
  admin.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  await admin.goto(link);
  await admin.locator("#who").filter({ hasText: "admin" }).waitFor();
  check(!admin.url().includes("token="), "the sign-in link's token leaves the address bar");
  if (running) await act(browser, admin);
  else await read(browser, admin);
  check(errors.length === 0, `no script error in the page${errors.length ? `: ${errors.join("; ")}` : ""}`);
} finally {
  await browser.close();
}

/**
 * Retries the parked saga, compensates the running one and re-drives the dead letter, each with
 * a reason, as the admin.
 */
async function act(browser, admin) {
  await retry(admin);
  await compensate(admin);
  await redrive(browser, admin);
}

/** The parked saga's failed compensation, tried again once its service is back: it ends compensated. */
async function retry(admin) {
  await admin.goto(`${base}/ui/#/sagas/${parked}`);
  await admin.getByRole("heading", { name: /^Saga / }).waitFor();
  const status = admin.locator("dl.meta .status");
  check(await status.textContent() === "parked", "the saga is shown parked");
  check((await admin.getByText(/compensation trigger kept failing/).count()) > 0, "with why it parked");
  await admin.screenshot({ path: join(shots, "parked.png"), fullPage: true });
  await accessible(admin, "a parked saga");
  await admin.getByRole("button", { name: "retry" }).click();
  await admin.getByLabel(/Reason/).fill("tracking takes writes again after its failover");
  await admin.getByRole("button", { name: "Confirm retry" }).click();
  await admin.locator('[data-entry="operator_acted"]').waitFor();
  const acted = await admin.locator('[data-entry="operator_acted"]').textContent();
  check(acted.includes("retry by admin: tracking takes writes again"), "the retry is in the timeline with its actor and reason");
  const deadline = Date.now() + 60_000;
  while ((await api("admin", `/sagas/${parked}`)).body.saga.status !== "compensated") {
    if (Date.now() > deadline) throw new Error("check failed: the retried saga ended compensated within a minute");
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  await admin.reload();
  await admin.getByRole("heading", { name: /^Saga / }).waitFor();
  check(await status.textContent() === "compensated", "retried, the saga ends compensated");
}

async function compensate(admin) {
  await admin.goto(`${base}/ui/#/sagas/${running}`);
  await admin.getByRole("heading", { name: /^Saga / }).waitFor();
  check(await admin.getByRole("button", { name: "retry" }).isDisabled(), "a running saga cannot be retried");
  await admin.getByRole("button", { name: "compensate" }).click();
  await admin.getByLabel(/Reason/).fill("payments is hung; the order was cancelled by phone");
  await admin.getByRole("button", { name: "Confirm compensate" }).click();
  await admin.locator('[data-entry="operator_acted"]').waitFor();
  const acted = await admin.locator('[data-entry="operator_acted"]').textContent();
  check(acted.includes("compensate by admin: payments is hung"), "the action is in the timeline with its actor and reason");
  const log = (await api("admin", `/sagas/${running}`)).body.timeline;
  check(log.some((e) => e.entry === "operator_acted" && e.actor === "admin" && e.reason?.startsWith("payments is hung")),
    "the saga log records the actor and the reason");
}

/** Finds the dead letter in the list, reads why it failed and what it carried, and re-drives it. */
async function redrive(browser, admin) {
  await admin.getByRole("link", { name: "Dead letters" }).click();
  await admin.getByRole("heading", { name: "Dead letters" }).waitFor();
  const row = admin.locator(`[data-dead-letter="${deadLetter}"]`);
  await row.waitFor();
  check((await row.textContent()).includes("attempts exhausted"), "the dead letter is listed with its cause");
  // Payments, frozen, does not answer: the others' dead letters are listed, and it is named.
  check((await admin.getByText(/Not answering.*payments/).count()) === 1, "a service that does not answer is named");
  await accessible(admin, "the dead-letter list");
  await row.getByRole("link").click();
  await admin.getByRole("heading", { name: /^Dead letter / }).waitFor();
  const body = await admin.getByLabel("Body").textContent();
  check(body.includes("Refused Writes Ltd"), "its body is shown decoded");
  check((await admin.getByText(/read-only transaction/).count()) > 0, "its error says why it failed");
  await admin.screenshot({ path: join(shots, "dead-letter.png"), fullPage: true });
  await accessible(admin, "a dead letter");

  const auditor = await signInByPasting(browser, "auditor");
  check(await auditor.getByRole("link", { name: "Dead letters" }).isHidden(), "no dead letters offered to an auditor");
  const refused = await api("auditor", `/dead-letters/${deadLetter}/redrive`, { method: "POST", body: "{}" });
  check(refused.status === 403, "the API refuses the auditor's re-drive (403)");

  await admin.getByRole("button", { name: "re-drive" }).click();
  await admin.getByLabel(/Reason/).fill("the database takes writes again after the failover");
  await admin.getByRole("button", { name: "Confirm re-drive" }).click();
  await admin.getByText(/by admin: the database takes writes again/).waitFor();
  check(await admin.getByRole("button", { name: "re-drive" }).isDisabled(), "a re-driven dead letter cannot be re-driven again");
  const recorded = (await api("admin", `/dead-letters/${deadLetter}`)).body;
  check(recorded.status === "redriven" && recorded.redriven_by === "admin", "the API records the re-drive and its actor");
}

/** Every role reads what it may, and is refused the rest. */
async function read(browser, admin) {
  await admin.getByRole("heading", { name: "Sagas" }).waitFor();
  const listed = await api("admin", "/sagas?limit=1000");
  const compensated = listed.body.sagas.filter((s) => s.status === "compensated").length;
  const shown = await admin.locator('[data-count="compensated"]').textContent();
  check(Number(shown) === compensated, `the counts show ${compensated} compensated saga(s)`);
  await admin.screenshot({ path: join(shots, "sagas.png"), fullPage: true });
  await accessible(admin, "the saga list");

  // Find the demo's compensated saga by its order id.
  await admin.getByLabel(/order id/).fill(order);
  await admin.getByRole("button", { name: "Filter" }).click();
  await admin.waitForFunction(() => location.hash.includes("key="));
  const rows = admin.getByRole("table", { name: "Sagas" }).locator("tbody tr").filter({ hasText: "compensated" });
  await rows.first().waitFor();
  check((await rows.count()) === 1, `one compensated saga for ${order}`);
  await rows.first().getByRole("link").click();
  await admin.getByRole("heading", { name: /^Saga / }).waitFor();

  // Its compensations, in reverse order of the steps they undo.
  const sagaId = admin.url().split("/sagas/")[1];
  const detail = (await api("admin", `/sagas/${sagaId}`)).body;
  const done = detail.timeline.filter((e) => e.entry === "step_succeeded").map((e) => e.step);
  const expected = [...done].reverse().concat("trigger");
  const drawn = await admin.getByRole("list", { name: "Compensations in the order they ran" })
    .locator("li").evaluateAll((items) => items.map((li) => li.dataset.step));
  check(JSON.stringify(drawn) === JSON.stringify(expected), `compensations drawn in reverse: ${drawn.join(" → ")}`);
  const axis = await admin.getByRole("table", { name: "Steps on a time axis" }).locator("tbody tr").count();
  check(axis === done.length + 1 + expected.length, "every step and compensation on the time axis");
  check(await admin.getByRole("button", { name: "compensate" }).isDisabled(), "no action on a saga that ended");
  await admin.screenshot({ path: join(shots, "saga.png"), fullPage: true });
  await accessible(admin, "the saga detail");
  await admin.getByText(/Raw log entries/).click();
  check(await admin.locator("details pre").first().isVisible(), "the raw log entries are one click away");

  // The flow across services, under the events that caused them.
  await admin.getByRole("link", { name: /every service's events/ }).click();
  await admin.getByRole("heading", { name: /^Flow / }).waitFor();
  const services = await admin.getByRole("table", { name: "Events" }).locator("tbody tr td:first-child").allTextContents();
  check(new Set(services).size >= 4, `the flow shows events of ${new Set(services).size} services`);
  await admin.screenshot({ path: join(shots, "flow.png"), fullPage: true });

  // The saga's campaign as it stood when it was created, beside its events up to then.
  const stream = `campaign-${detail.saga.campaign_id}`;
  const created = (await api("admin", `/audit/campaigns/streams/${stream}`)).body[0].recorded_at;
  await admin.goto(`${base}/ui/#/audit?service=campaigns&stream=${stream}&as_of=${encodeURIComponent(created)}`);
  await admin.getByRole("heading", { name: `State as of ${created}` }).waitFor();
  const then = JSON.parse(await admin.getByRole("region", { name: "State" }).locator("pre").textContent());
  check(then.spent === 0 && then.details.campaign_id === detail.saga.campaign_id, "the campaign's state as of its creation: nothing spent");
  check((await admin.getByText(/^1 of \d+ events ·/).count()) === 1, "only the events up to then are listed");
  await accessible(admin, "the audit of a stream as of a time");

  // Auditor: reads everything, acts on nothing.
  const auditor = await signInByPasting(browser, "auditor");
  await auditor.goto(`${base}/ui/#/sagas/${sagaId}`);
  await auditor.getByRole("heading", { name: /^Saga / }).waitFor();
  check(await auditor.getByRole("region", { name: "Operations" }).count() === 0, "the auditor is offered no action");
  const refused = await api("auditor", `/sagas/${sagaId}/retry`, { method: "POST", body: "{}" });
  check(refused.status === 403, "the API refuses the auditor's action (403)");

  // Advertiser: their tenant's campaigns only; no saga.
  const advertiser = await signInByPasting(browser, "advertiser");
  await advertiser.getByRole("heading", { name: "Campaigns" }).waitFor();
  const mine = (await api("advertiser", "/campaigns")).body.map((c) => c.campaign_id).sort();
  const all = (await api("admin", "/campaigns")).body.map((c) => c.campaign_id);
  const seen = (await advertiser.locator("[data-campaign]").evaluateAll((rows) => rows.map((r) => r.dataset.campaign))).sort();
  check(JSON.stringify(seen) === JSON.stringify(mine), `the advertiser sees their ${mine.length} campaign(s)`);
  check(all.some((id) => !seen.includes(id)), "another tenant's campaigns stay hidden");
  check(await advertiser.getByRole("link", { name: "Sagas" }).isHidden(), "no saga list offered to an advertiser");
  await advertiser.goto(`${base}/ui/#/sagas`);
  await advertiser.getByText(/Not allowed for your role/).waitFor();
  check(true, "the saga list is refused to the advertiser");
  await accessible(advertiser, "the campaign list");
}
