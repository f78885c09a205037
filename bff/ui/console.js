// The Pulsaga console: a few views over the /v1 API, called with the signed-in user's bearer
// token, so roles and tenancy apply exactly as in the API. No framework and no build step: the
// BFF serves these modules as written (docs/adr/0005-console-without-a-build-step.md). This one
// routes and signs in; the views are in sagas.js and records.js, what they share in core.js.

import { TOKEN_KEY, api, failed, go, h, notice, session, show } from "./core.js";
import { audit, campaigns, deadLetter, deadLetters } from "./records.js";
import { sagaDetail, sagaList } from "./sagas.js";

// ---- Routing -------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query) };
}

function home() {
  if (!session.me) return "/signin";
  return session.me.role === "admin" || session.me.role === "auditor" ? "/sagas" : "/campaigns";
}

async function render() {
  if (session.live) {
    clearInterval(session.live);
    session.live = null;
  }
  // A sign-in link carries the token in the fragment: keep it for the session, then drop it
  // from the address bar and the history.
  const link = location.hash.match(/^#token=(.+)$/);
  if (link) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(link[1]));
    history.replaceState(null, "", "#/");
  }
  if (!session.me && sessionStorage.getItem(TOKEN_KEY)) {
    try {
      session.me = await api("/me");
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      signIn(error.message);
      return;
    }
  }
  header();
  const { parts, params } = route();
  if (!session.me) return signIn();
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
  who.textContent = session.me ? `${session.me.subject} · ${session.me.role}${session.me.tenant ? ` · tenant ${session.me.tenant}` : ""}` : "";
  signOut.hidden = !session.me;
  for (const link of document.querySelectorAll("nav a[data-roles]")) {
    link.hidden = !session.me || !link.dataset.roles.split(" ").includes(session.me.role);
  }
}

// ---- Sign-in -------------------------------------------------------------------------------

function signIn(problem) {
  const token = h("textarea", { id: "token", name: "token", required: true, autocomplete: "off" });
  const form = h("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, token.value.trim());
      session.me = null;
      await render();
      if (session.me) go(home());
    },
  },
    h("label", { for: "token" }, "Bearer token (`pulsaga token --role R` mints one; `pulsaga up` prints a sign-in link)"),
    token,
    h("p", {}, h("button", { type: "submit", class: "primary" }, "Sign in")),
  );
  show(h("h1", {}, "Sign in"), problem ? notice(`Sign-in refused: ${problem}`, "error") : null, form);
}

// ---- Start ---------------------------------------------------------------------------------

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  session.me = null;
  go("/signin");
});
window.addEventListener("hashchange", render);
render();
