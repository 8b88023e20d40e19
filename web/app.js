// The dashboard: asks for a token once, then shows the page the URL's
// hash names (#/overview, #/charts, #/browse/ID?path=…, #/jobs,
// #/restore, #/forget).

import { AuthError, clearToken, get, setToken, token, whenUnauthorized } from "./api.js";
import { h } from "./dom.js";
import * as overview from "./overview.js";
import * as charts from "./charts.js";
import * as browse from "./browse.js";
import * as jobs from "./jobs.js";
import * as restore from "./restore.js";
import * as forget from "./forget.js";

const pages = { overview, charts, browse, jobs, restore, forget };

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const login = document.getElementById("login");
const form = document.getElementById("token-form");
const input = document.getElementById("token-input");
const tokenError = document.getElementById("token-error");
const logout = document.getElementById("logout");

/** The page and its arguments from the hash: `#/browse/ID?path=/x`. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?", 2);
  const parts = path.split("/").filter((p) => p !== "").map(decodeURIComponent);
  const name = parts[0] && pages[parts[0]] ? parts[0] : "overview";
  return { name, args: parts.slice(1), params: new URLSearchParams(query ?? "") };
}

let shown = 0;

async function route() {
  if (!token()) {
    showLogin("");
    return;
  }
  const { name, args, params } = parseHash();
  const mine = ++shown;
  for (const a of nav.querySelectorAll("a")) {
    a.classList.toggle("current", a.getAttribute("href") === `#/${name}`);
  }
  const view = h("section", { class: "page", "data-page": name }, h("p", { class: "loading" }, "Loading…"));
  main.replaceChildren(view);
  try {
    await pages[name].render(view, args, params);
  } catch (e) {
    if (mine !== shown || e instanceof AuthError) return;
    view.replaceChildren(h("p", { class: "error", role: "alert" }, e.message));
  }
}

function showLogin(message) {
  nav.hidden = true;
  logout.hidden = true;
  main.replaceChildren();
  login.hidden = false;
  tokenError.textContent = message;
  input.focus();
}

whenUnauthorized(() => showLogin("The server refused the token."));

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const t = input.value.trim();
  input.value = "";
  if (t === "") return;
  setToken(t);
  tokenError.textContent = "";
  try {
    // Any route a viewer may read tells whether the token is good.
    await get("/jobs");
  } catch (err) {
    if (!(err instanceof AuthError)) {
      clearToken();
      showLogin(err.message);
    }
    return;
  }
  login.hidden = true;
  nav.hidden = false;
  logout.hidden = false;
  route();
});

logout.addEventListener("click", () => {
  clearToken();
  showLogin("Signed out.");
});

window.addEventListener("hashchange", route);

// The current page's link shows it again, with fresh data.
nav.addEventListener("click", (e) => {
  if (e.target instanceof HTMLAnchorElement && e.target.getAttribute("href") === location.hash) route();
});

if (token()) {
  nav.hidden = false;
  logout.hidden = false;
  route();
} else {
  showLogin("");
}
