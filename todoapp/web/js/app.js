// The shell: who is signed in, the header, the hash router, and notices.

import * as client from "./api.js";
import { ApiError, api } from "./api.js";
import { button, clear, h } from "./dom.js";
import { describe } from "./errors.js";
import { adminView } from "./views/admin.js";
import { devicesView, profileView } from "./views/account.js";
import { forgotView, resetView, signInView, signUpView, verifyView } from "./views/auth.js";
import { editTodoView, todosView } from "./views/todos.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const account = document.getElementById("account");
const notices = document.getElementById("notices");

// Where each hash goes. auth: "in" (signed in only), "out" (signed out only), "any".
const ROUTES = [
  { path: /^\/sign-in$/, auth: "out", view: signInView },
  { path: /^\/sign-up$/, auth: "out", view: signUpView },
  { path: /^\/forgot-password$/, auth: "any", view: forgotView },
  { path: /^\/reset-password$/, auth: "any", view: resetView },
  { path: /^\/verify-email$/, auth: "any", view: verifyView },
  { path: /^\/todos$/, auth: "in", view: todosView, nav: "todos" },
  { path: /^\/todos\/(\d+)\/edit$/, auth: "in", view: editTodoView, nav: "todos" },
  { path: /^\/profile$/, auth: "in", view: profileView, nav: "profile" },
  { path: /^\/devices$/, auth: "in", view: devicesView, nav: "devices" },
  { path: /^\/admin(?:\/(users|todos))?$/, auth: "in", admin: true, view: adminView, nav: "admin" },
];

const app = {
  user: null,
  afterSignIn: null, // the hash asked for before signing in
  go(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  },
  setUser(user) {
    app.user = user;
    renderHeader(currentRoute()?.nav);
  },
  notify,
  async signedIn() {
    await loadUser();
    const target = app.afterSignIn || "#/todos";
    app.afterSignIn = null;
    app.go(target);
  },
  signOutHere,
  signOutEverywhere,
};

// --- notices ---------------------------------------------------------------------
let noticeTimer = null;

/** A short message in the live region; with {action: [label, fn]} a button too. */
function notify(text, { action = null, timeout = 8000, kind = "info" } = {}) {
  clearTimeout(noticeTimer);
  const close = () => {
    clearTimeout(noticeTimer);
    clear(notices);
  };
  const parts = [h("p", {}, text)];
  if (action) {
    const [label, run] = action;
    parts.push(
      button(label, {
        class: "link-button",
        onclick: () => {
          close();
          run();
        },
      }),
    );
  }
  parts.push(button("×", { class: "icon-button", "aria-label": "Dismiss message", onclick: close }));
  notices.replaceChildren(h("div", { class: `notice notice-${kind}` }, parts));
  if (timeout) noticeTimer = setTimeout(close, timeout);
}

// --- session -----------------------------------------------------------------------
async function loadUser() {
  const { data } = await api("GET", "/users/me");
  app.user = data;
  return data;
}

async function currentSession() {
  try {
    const { data } = await api("GET", "/users/me/sessions");
    return data.find((session) => session.current) ?? null;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null; // a server without sessions
    throw error;
  }
}

async function signOutHere() {
  try {
    const current = await currentSession();
    if (current) await api("DELETE", `/users/me/sessions/${current.id}`);
    else await api("POST", "/auth/logout");
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) {
      notify(`${describe(error)} You are still signed in.`, { kind: "error" });
      return;
    }
  }
  app.user = null;
  client.forget("signed-out");
  notify("You are signed out.");
  app.go("#/sign-in");
}

async function signOutEverywhere() {
  try {
    await api("POST", "/auth/logout");
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) {
      notify(`${describe(error)} You are still signed in.`, { kind: "error" });
      return;
    }
  }
  app.user = null;
  client.forget("signed-out");
  notify("You are signed out on every device.");
  app.go("#/sign-in");
}

client.onSignedOut((reason) => {
  const wasIn = app.user !== null;
  app.user = null;
  if (!wasIn) return;
  if (reason === "expired") notify("Your session has ended. Please sign in again.", { timeout: 0 });
  if (reason === "other-tab") notify("You signed out in another tab.", { timeout: 0 });
  const route = currentRoute();
  if (route && route.auth === "in") app.afterSignIn = location.hash;
  render();
});

client.onOtherTab(async (message) => {
  if (message?.type === "signed-out" && client.isSignedIn()) {
    client.forgetQuietly("other-tab");
  } else if (message?.type === "signed-in" && !client.isSignedIn()) {
    try {
      if (await client.refresh()) {
        await loadUser();
        render();
      }
    } catch {
      // the user can still sign in here by hand
    }
  }
});

// --- header ------------------------------------------------------------------------
function renderHeader(active) {
  clear(nav);
  clear(account);
  if (!app.user) {
    nav.hidden = true;
    account.hidden = true;
    return;
  }
  const links = [
    ["todos", "#/todos", "Todos"],
    ["profile", "#/profile", "Profile"],
    ["devices", "#/devices", "Devices"],
  ];
  if (app.user.role === "admin") links.push(["admin", "#/admin", "Admin"]);
  nav.append(
    h(
      "ul",
      {},
      links.map(([key, href, text]) =>
        h("li", {}, h("a", { href, "aria-current": key === active ? "page" : false }, text)),
      ),
    ),
  );
  account.append(
    button("Sign out", { onclick: () => app.signOutHere() }),
    button("Sign out everywhere", { onclick: () => app.signOutEverywhere() }),
  );
  nav.hidden = false;
  account.hidden = false;
}

// --- router --------------------------------------------------------------------------
function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  return { path, query: new URLSearchParams(query) };
}

function currentRoute() {
  const { path } = parseHash();
  return ROUTES.find((route) => route.path.test(path)) || null;
}

let renderCount = 0;
let firstRender = true;

async function render() {
  const mine = ++renderCount;
  const { path, query } = parseHash();
  const route = ROUTES.find((r) => r.path.test(path));
  const signedIn = client.isSignedIn() && app.user !== null;
  if (!route) {
    app.go(signedIn ? "#/todos" : "#/sign-in");
    return;
  }
  if (route.auth === "in" && !signedIn) {
    app.afterSignIn = location.hash;
    app.go("#/sign-in");
    return;
  }
  if (route.auth === "out" && signedIn) {
    app.go("#/todos");
    return;
  }
  if (signedIn && !firstRender) {
    // Roles and accounts change on the server: read them again on every screen change
    // (a disabled account is signed out here, on its next request).
    try {
      await loadUser();
    } catch (error) {
      if (mine !== renderCount || !client.isSignedIn()) return;
      if (error instanceof ApiError && error.status === 401) return;
    }
    if (mine !== renderCount || !client.isSignedIn()) return;
  }
  if (route.admin && app.user?.role !== "admin") {
    app.go("#/todos");
    return;
  }
  renderHeader(route.nav);
  const match = path.match(route.path);
  main.setAttribute("aria-busy", "true");
  let view;
  try {
    view = await route.view(app, { params: match.slice(1), query });
  } catch (error) {
    view = h(
      "section",
      { class: "screen" },
      h("h1", { tabindex: "-1" }, "Something went wrong"),
      h("p", { role: "alert" }, describe(error)),
      button("Try again", { class: "primary", onclick: () => render() }),
    );
  }
  if (mine !== renderCount) return;
  main.replaceChildren(view);
  main.removeAttribute("aria-busy");
  const focusTarget = view.querySelector("[data-autofocus]") || (firstRender ? null : view.querySelector("h1"));
  if (focusTarget) focusTarget.focus();
  firstRender = false;
}

// --- start -------------------------------------------------------------------------
async function boot() {
  document.querySelector(".skip-link")?.addEventListener("click", (event) => {
    event.preventDefault();
    main.focus();
  });
  main.replaceChildren(h("p", { class: "loading" }, "Loading…"));
  try {
    if (await client.resume()) await loadUser();
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) {
      main.replaceChildren(
        h(
          "section",
          { class: "screen" },
          h("h1", { tabindex: "-1" }, "todoapp"),
          h("p", { role: "alert" }, describe(error)),
          button("Try again", { class: "primary", onclick: () => location.reload() }),
        ),
      );
      return;
    }
  }
  window.addEventListener("hashchange", () => render());
  await render();
}

boot();
