// The admin view (role admin only): every user and every todo.

import { ApiError, api } from "../api.js";
import { busy, button, debounce, field, h, messageBox, newId, screen } from "../dom.js";
import { describe } from "../errors.js";
import { pager } from "./todos.js";

const PAGE_SIZE = 20;

export function adminView(app, { params }) {
  const tab = params[0] === "todos" ? "todos" : "users";
  const tabs = [
    ["users", "Users", usersPanel],
    ["todos", "Todos", todosPanel],
  ];
  const tablist = h("div", { role: "tablist", "aria-label": "Admin", class: "tabs" });
  const panelId = newId("admin-panel");
  const buttons = tabs.map(([key, label]) =>
    h(
      "button",
      {
        type: "button",
        role: "tab",
        id: `admin-tab-${key}`,
        "aria-selected": String(key === tab),
        "aria-controls": panelId,
        tabindex: key === tab ? "0" : "-1",
        onclick: () => app.go(`#/admin/${key}`),
      },
      label,
    ),
  );
  tablist.append(...buttons);
  // Arrow keys move between tabs (the ARIA tabs pattern); Tab goes into the panel.
  tablist.addEventListener("keydown", (event) => {
    const index = buttons.indexOf(document.activeElement);
    if (index < 0) return;
    let next = null;
    if (event.key === "ArrowRight") next = (index + 1) % buttons.length;
    if (event.key === "ArrowLeft") next = (index - 1 + buttons.length) % buttons.length;
    if (event.key === "Home") next = 0;
    if (event.key === "End") next = buttons.length - 1;
    if (next === null) return;
    event.preventDefault();
    buttons[next].focus();
    buttons[next].click();
  });
  const [, , makePanel] = tabs.find(([key]) => key === tab);
  const panel = h(
    "div",
    { role: "tabpanel", id: panelId, "aria-labelledby": `admin-tab-${tab}`, class: "tabpanel" },
    makePanel(app),
  );
  const view = screen("Admin", tablist, panel);
  if (params[0]) view.querySelector(`#admin-tab-${tab}`).setAttribute("data-autofocus", "");
  return view;
}

function usersPanel(app) {
  const search = field("Search users", { type: "search", name: "q", autocomplete: "off" }, { hint: "Username, email or name." });
  const list = h("ul", { class: "user-list", "aria-label": "Users" });
  const counter = h("p", { class: "counter", role: "status" });
  const box = messageBox();
  const more = button("Load more", { class: "secondary", hidden: true });
  let shown = 0;
  let total = null;

  const query = (extra) => {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE), ...extra });
    const q = search.control.value.trim();
    if (q) params.set("q", q);
    return params.toString();
  };
  const gone = new Set(); // deleted here: a page read before the delete must not bring them back
  const pages = pager("/admin/users", query, (data, next) => {
    if (!next) {
      list.replaceChildren();
      shown = 0;
      total = typeof data.total === "number" ? data.total : null;
    }
    const items = data.items.filter((user) => !gone.has(user.id));
    list.append(...items.map(row));
    shown += items.length;
    update();
  });

  function update() {
    counter.textContent =
      shown === 0 ? "No users match." : total !== null && total > shown ? `Showing ${shown} of ${total} users` : `${shown} ${shown === 1 ? "user" : "users"}`;
    more.hidden = !pages.hasMore;
  }

  async function load(next = false) {
    box.hide();
    try {
      await pages.load(next);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        box.show(describe(error), { actions: [button("Try again", { onclick: () => load(next) })] });
      }
    }
  }

  search.control.addEventListener("input", debounce(() => load(), 250));
  more.addEventListener("click", () => busy(more, () => load(true)));

  function row(user) {
    const li = h("li", { class: "user" });
    const draw = () => {
      const self = app.user && app.user.id === user.id;
      const badges = [
        user.role === "admin" ? h("span", { class: "badge badge-admin" }, "Admin") : null,
        user.is_active ? null : h("span", { class: "badge badge-warn" }, "Disabled"),
        user.is_verified === false ? h("span", { class: "badge" }, "Unverified") : null,
        self ? h("span", { class: "badge badge-ok" }, "You") : null,
      ];
      const names = [user.firstname, user.lastname].filter(Boolean).join(" ");
      const actions = self
        ? [h("p", { class: "hint" }, "You cannot disable, demote or delete yourself here.")]
        : [
            action(user.is_active ? `Disable ${user.username}` : `Enable ${user.username}`, user.is_active ? "Disable" : "Enable", () =>
              change({ is_active: !user.is_active }),
            ),
            user.role === "admin"
              ? action(`Demote ${user.username}`, "Demote", () => change({ role: "user" }), "Make an ordinary user")
              : action(`Make ${user.username} admin`, "Make admin", () => change({ role: "admin" })),
            action(`Delete ${user.username}`, "Delete", remove, null, "danger"),
          ];
      li.replaceChildren(
        h(
          "div",
          { class: "user-info" },
          h("p", { class: "user-name" }, h("strong", {}, user.username), " ", badges),
          h("p", { class: "user-meta" }, user.email, names ? ` · ${names}` : ""),
        ),
        h("div", { class: "user-actions" }, actions),
      );
    };

    function action(name, text, run, title = null, kind = "secondary") {
      const btn = button(text, { class: `${kind} small`, "aria-label": name, title });
      btn.addEventListener("click", () => busy(btn, run));
      return btn;
    }

    async function change(body) {
      const focusedLabel = document.activeElement?.getAttribute("aria-label");
      try {
        const { data } = await api("PATCH", `/admin/users/${user.id}`, { json: body });
        Object.assign(user, data);
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 401)) app.notify(describe(error, "that user"), { kind: "error" });
        return;
      }
      draw();
      // The button changed its name (Disable -> Enable): keep the keyboard on this row.
      const again = [...li.querySelectorAll("button")].find((b) => b.getAttribute("aria-label") === focusedLabel);
      (again || li.querySelector("button"))?.focus();
      app.notify("User updated.");
    }

    async function remove() {
      if (!window.confirm(`Delete the account ${user.username} and all its todos? This cannot be undone.`)) return;
      try {
        await api("DELETE", `/admin/users/${user.id}`);
        gone.add(user.id);
      } catch (error) {
        if (!(error instanceof ApiError && (error.status === 401 || error.status === 404))) {
          app.notify(describe(error, "that user"), { kind: "error" });
          return;
        }
      }
      const next = li.nextElementSibling || li.previousElementSibling;
      li.remove();
      shown -= 1;
      if (total !== null) total -= 1;
      update();
      (next?.querySelector("button") || search.control).focus();
      app.notify("User deleted.");
    }

    draw();
    return li;
  }

  load();
  return [search.wrap, box.el, counter, list, more];
}

function todosPanel(app) {
  const search = field("Search todos", { type: "search", name: "q", autocomplete: "off" });
  const list = h("ul", { class: "admin-todo-list", "aria-label": "All todos" });
  const counter = h("p", { class: "counter", role: "status" });
  const box = messageBox();
  const more = button("Load more", { class: "secondary", hidden: true });
  const owners = new Map(); // owner id -> username, for the page's rows
  let shown = 0;
  let total = null;

  const query = (extra) => {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE), sort: "-id", ...extra });
    const q = search.control.value.trim();
    if (q) params.set("q", q);
    return params.toString();
  };
  const gone = new Set(); // deleted here: a page read before the delete must not bring them back
  const pages = pager("/admin/todos", query, (data, next) => {
    if (!next) {
      list.replaceChildren();
      shown = 0;
      total = typeof data.total === "number" ? data.total : null;
    }
    const items = data.items.filter((todo) => !gone.has(todo.id));
    list.append(...items.map(row));
    shown += items.length;
    update();
    nameOwners(items);
  });

  function update() {
    counter.textContent =
      shown === 0 ? "No todos match." : total !== null && total > shown ? `Showing ${shown} of ${total} todos` : `${shown} ${shown === 1 ? "todo" : "todos"}`;
    more.hidden = !pages.hasMore;
  }

  async function nameOwners(items) {
    for (const id of new Set(items.map((todo) => todo.owner_id))) {
      if (!owners.has(id)) {
        try {
          const { data } = await api("GET", `/admin/users/${id}`);
          owners.set(id, data.username);
        } catch {
          owners.set(id, `user ${id}`);
        }
      }
      for (const el of list.querySelectorAll(`[data-owner="${id}"]`)) el.textContent = owners.get(id);
    }
  }

  async function load(next = false) {
    box.hide();
    try {
      await pages.load(next);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        box.show(describe(error), { actions: [button("Try again", { onclick: () => load(next) })] });
      }
    }
  }

  search.control.addEventListener("input", debounce(() => load(), 250));
  more.addEventListener("click", () => busy(more, () => load(true)));

  function row(todo) {
    const remove = button("Delete", { class: "danger small", "aria-label": `Delete ${todo.title} (todo ${todo.id})` });
    const li = h(
      "li",
      { class: `admin-todo${todo.complete ? " is-done" : ""}` },
      h(
        "div",
        {},
        h("p", { class: "todo-title" }, todo.title),
        h(
          "p",
          { class: "user-meta" },
          "by ",
          h("span", { "data-owner": todo.owner_id }, owners.get(todo.owner_id) ?? `user ${todo.owner_id}`),
          ` · priority ${todo.priority}`,
          todo.complete ? " · done" : "",
        ),
      ),
      remove,
    );
    remove.addEventListener("click", () =>
      busy(remove, async () => {
        if (!window.confirm("Delete this todo of another user? This cannot be undone.")) return;
        try {
          await api("DELETE", `/admin/todos/${todo.id}`);
          gone.add(todo.id);
        } catch (error) {
          if (!(error instanceof ApiError && (error.status === 401 || error.status === 404))) {
            app.notify(describe(error, "that todo"), { kind: "error" });
            return;
          }
        }
        const next = li.nextElementSibling || li.previousElementSibling;
        li.remove();
        shown -= 1;
        if (total !== null) total -= 1;
        update();
        (next?.querySelector("button") || search.control).focus();
        app.notify("Todo deleted.");
      }),
    );
    return li;
  }

  load();
  return [search.wrap, box.el, counter, list, more];
}
