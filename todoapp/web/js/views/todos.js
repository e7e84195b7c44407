// The signed-in user's todos: add, search, filter, sort, load more, tick, edit, delete.

import { ApiError, api } from "../api.js";
import { busy, button, debounce, field, h, messageBox, newId, screen, setFieldError } from "../dom.js";
import { clearFormError, describe, showFormError } from "../errors.js";

export const PRIORITIES = [
  ["1", "1 (lowest)"],
  ["2", "2"],
  ["3", "3"],
  ["4", "4"],
  ["5", "5 (highest)"],
];

const SORTS = [
  ["-id", "Newest first"],
  ["id", "Oldest first"],
  ["-priority", "Highest priority first"],
  ["priority", "Lowest priority first"],
  ["title", "Title A to Z"],
  ["-title", "Title Z to A"],
];

const PAGE_SIZE = 20;

// The list's settings outlive one visit to the screen (edit and come back).
const settings = { q: "", status: "all", priority: "", sort: "-id" };

/** The query string of GET /todos for the current settings. */
export function listQuery(current, extra = {}) {
  const params = new URLSearchParams();
  if (current.q) params.set("q", current.q);
  if (current.status === "open") params.set("complete", "false");
  if (current.status === "done") params.set("complete", "true");
  if (current.priority) params.set("priority", current.priority);
  params.set("sort", current.sort);
  params.set("limit", String(PAGE_SIZE));
  for (const [key, value] of Object.entries(extra)) params.set(key, String(value));
  return params.toString();
}

/**
 * Pages of a list endpoint: by next_cursor where the server gives one, else by offset.
 * load(false) starts over, load(true) appends the next page; stale answers are dropped.
 */
export function pager(path, queryOf, onPage) {
  let seq = 0;
  let cursor = null;
  let offset = 0;
  let more = false;
  return {
    get hasMore() {
      return more;
    },
    async load(next = false) {
      const mine = ++seq;
      let extra = {};
      if (next && cursor !== null) extra = { cursor };
      else if (next) extra = { offset };
      const { data } = await api("GET", `${path}?${queryOf(extra)}`);
      if (mine !== seq) return false;
      if ("next_cursor" in data) {
        cursor = data.next_cursor;
        more = cursor !== null;
      } else {
        cursor = null;
        offset = (next ? offset : 0) + data.items.length;
        more = typeof data.total === "number" && offset < data.total;
      }
      onPage(data, next);
      return true;
    },
  };
}

function radios(legend, name, choices, current, onChange) {
  const group = h("fieldset", { class: "segmented" }, h("legend", {}, legend));
  const groupName = newId(name);
  for (const [value, text] of choices) {
    group.append(
      h(
        "label",
        { class: "segment" },
        h("input", {
          type: "radio",
          name: groupName,
          value,
          checked: value === current,
          onchange: () => onChange(value),
        }),
        text,
      ),
    );
  }
  return group;
}

export function todosView(app) {
  const verifiedNote =
    app.user && app.user.is_verified === false
      ? h(
          "p",
          { class: "message message-info" },
          "Your email address is not verified yet: open the link we mailed you, or ",
          h("a", { href: "#/profile" }, "send a new link"),
          ".",
        )
      : null;

  // --- adding -----------------------------------------------------------------------
  const title = field("New todo", { name: "title", maxlength: 200, autocomplete: "off", placeholder: "What needs doing?" });
  const priority = field("Priority", { name: "priority", value: "3" }, { kind: "select", options: PRIORITIES });
  const addBox = messageBox();
  const addButton = h("button", { type: "submit", class: "primary" }, "Add");
  const addForm = h(
    "form",
    { class: "add-form", novalidate: true, "aria-label": "Add a todo" },
    addBox.el,
    h("div", { class: "row" }, title.wrap, priority.wrap, h("div", { class: "field field-button" }, addButton)),
  );
  addForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const fields = { title, priority };
    clearFormError(fields, addBox);
    const text = title.control.value.trim();
    if (!text) {
      setFieldError(title, "Type what needs doing first.");
      title.control.focus();
      return;
    }
    busy(addButton, async () => {
      let created;
      try {
        ({ data: created } = await api("POST", "/todos", {
          json: { title: text, priority: Number(priority.control.value) },
        }));
      } catch (error) {
        showFormError(error, fields, addBox, "the todo"); // what was typed stays
        return;
      }
      title.control.value = "";
      title.control.focus();
      prepend(created);
      app.notify("Todo added.");
    });
  });

  // --- finding ------------------------------------------------------------------------
  const search = field("Search", { type: "search", name: "q", value: settings.q, autocomplete: "off" });
  search.control.addEventListener(
    "input",
    debounce(() => {
      settings.q = search.control.value.trim();
      reload();
    }, 250),
  );
  search.control.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      settings.q = search.control.value.trim();
      reload();
    }
  });
  const status = radios(
    "Show",
    "status",
    [
      ["all", "All"],
      ["open", "Open"],
      ["done", "Done"],
    ],
    settings.status,
    (value) => {
      settings.status = value;
      reload();
    },
  );
  const level = radios(
    "Filter by priority",
    "level",
    [["", "Any"], ...PRIORITIES.map(([value]) => [value, value])],
    settings.priority,
    (value) => {
      settings.priority = value;
      reload();
    },
  );
  const sort = field("Sort", { name: "sort", value: settings.sort }, { kind: "select", options: SORTS });
  sort.control.addEventListener("change", () => {
    settings.sort = sort.control.value;
    reload();
  });
  const filters = h("div", { class: "filters" }, search.wrap, sort.wrap, status, level);

  // --- the list -------------------------------------------------------------------------
  const list = h("ul", { class: "todo-list", "aria-label": "Todos" });
  const counter = h("p", { class: "counter", role: "status" });
  const empty = h("p", { class: "empty", hidden: true });
  const listBox = messageBox();
  const more = button("Load more", { class: "secondary", hidden: true });
  let total = null;
  let shown = 0;

  const gone = new Set(); // deleted here: a page read before the delete must not bring them back
  const pages = pager("/todos", (extra) => listQuery(settings, extra), (data, next) => {
    if (!next) {
      list.replaceChildren();
      shown = 0;
      total = typeof data.total === "number" ? data.total : null;
    }
    const items = data.items.filter((todo) => !gone.has(todo.id));
    for (const todo of items) list.append(item(todo));
    shown += items.length;
    update();
  });

  function update() {
    const filtered = settings.q || settings.status !== "all" || settings.priority;
    if (shown === 0) {
      counter.textContent = "";
      empty.textContent = filtered ? "No todos match." : "Nothing to do yet: add your first todo above.";
      empty.hidden = false;
    } else {
      empty.hidden = true;
      const noun = total === 1 ? "todo" : "todos";
      counter.textContent =
        total !== null && total > shown ? `Showing ${shown} of ${total} ${noun}` : `${shown} ${shown === 1 ? "todo" : "todos"}`;
    }
    more.hidden = !pages.hasMore;
  }

  async function reload(next = false) {
    listBox.hide();
    list.setAttribute("aria-busy", "true");
    try {
      await pages.load(next);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      listBox.show(describe(error), { actions: [button("Try again", { onclick: () => reload(next) })] });
    } finally {
      list.removeAttribute("aria-busy");
    }
  }

  more.addEventListener("click", () =>
    busy(more, async () => {
      const before = list.children.length;
      await reload(true);
      // Keep the keyboard where the reader is: on the first of the new todos.
      const first = list.children[before]?.querySelector("input");
      if (more.hidden && first) first.focus();
    }),
  );

  function prepend(todo) {
    list.prepend(item(todo));
    shown += 1;
    if (total !== null) total += 1;
    update();
  }

  function removed(li) {
    const next = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    shown -= 1;
    if (total !== null) total -= 1;
    update();
    (next?.querySelector("input") || title.control).focus();
  }

  function item(todo) {
    const id = newId("todo");
    const li = h("li", { class: `todo${todo.complete ? " is-done" : ""}`, "data-id": todo.id });
    const box = h("input", { type: "checkbox", id, checked: todo.complete });
    const descId = todo.description ? `${id}-desc` : null;
    if (descId) box.setAttribute("aria-describedby", descId);
    let saving = false;
    box.addEventListener("change", async () => {
      if (saving) return;
      saving = true;
      const wanted = box.checked;
      li.classList.toggle("is-done", wanted);
      try {
        // One field only: it cannot overwrite anyone's edit of the others, so no If-Match.
        const { data } = await api("PATCH", `/todos/${todo.id}`, { json: { complete: wanted } });
        Object.assign(todo, data);
      } catch (error) {
        box.checked = !wanted;
        li.classList.toggle("is-done", !wanted);
        if (!(error instanceof ApiError && error.status === 401)) {
          app.notify(describe(error, "this todo"), { kind: "error" });
        }
      } finally {
        saving = false;
      }
    });
    const edit = button("Edit", {
      class: "secondary small",
      "aria-label": `Edit ${todo.title}`,
      onclick: () => app.go(`#/todos/${todo.id}/edit`),
    });
    const remove = button("Delete", { class: "danger small", "aria-label": `Delete ${todo.title}` });
    remove.addEventListener("click", () =>
      busy(remove, async () => {
        try {
          await api("DELETE", `/todos/${todo.id}`);
          gone.add(todo.id);
        } catch (error) {
          if (error instanceof ApiError && error.status === 404) {
            removed(li);
            app.notify("That todo was already deleted.");
          } else if (!(error instanceof ApiError && error.status === 401)) {
            app.notify(describe(error, "this todo"), { kind: "error" });
          }
          return;
        }
        removed(li);
        app.notify("Todo deleted.", { action: ["Undo", () => restore(todo)], timeout: 12000 });
      }),
    );
    li.append(
      box,
      h(
        "div",
        { class: "todo-body" },
        h("label", { for: id, class: "todo-title" }, todo.title),
        todo.description ? h("p", { class: "todo-desc", id: descId }, todo.description) : null,
      ),
      h("span", { class: `prio prio-${todo.priority}` }, `P${todo.priority}`, h("span", { class: "visually-hidden" }, " priority")),
      h("div", { class: "todo-actions" }, edit, remove),
    );
    return li;
  }

  async function restore(todo) {
    // A way back: the same todo again (as a new row, so with a new id and date).
    const body = { title: todo.title, description: todo.description, priority: todo.priority, complete: todo.complete };
    try {
      const { data } = await api("POST", "/todos", { json: body });
      prepend(data);
      app.notify("Todo restored.");
      list.firstElementChild?.querySelector("input")?.focus();
    } catch (error) {
      app.notify(`Could not bring it back: ${describe(error)}`, { kind: "error", timeout: 0 });
    }
  }

  reload();
  return screen(
    "Todos",
    verifiedNote,
    addForm,
    h("h2", { class: "visually-hidden" }, "Your list"),
    filters,
    listBox.el,
    counter,
    list,
    empty,
    more,
  );
}

export async function editTodoView(app, { params }) {
  const todoId = params[0];
  let etag = null;
  const title = field("Title", { name: "title", maxlength: 200, "data-autofocus": true });
  const description = field("Description", { name: "description", maxlength: 200, rows: 3 }, { kind: "textarea" });
  const priority = field("Priority", { name: "priority" }, { kind: "select", options: PRIORITIES });
  const fields = { title, description, priority };
  const box = messageBox();

  function fill(todo, tag) {
    etag = tag;
    title.control.value = todo.title;
    description.control.value = todo.description;
    priority.control.value = String(todo.priority);
  }

  try {
    const { data, etag: tag } = await api("GET", `/todos/${todoId}`);
    fill(data, tag);
  } catch (error) {
    return screen(
      "Edit todo",
      h("p", { role: "alert", class: "message message-error" }, describe(error, "this todo")),
      h("a", { href: "#/todos", class: "button" }, "Back to todos"),
    );
  }

  async function reloadLatest() {
    try {
      const { data, etag: tag } = await api("GET", `/todos/${todoId}`);
      fill(data, tag);
      clearFormError(fields, box);
      box.show("This is the latest version. Make your changes again and save.", { kind: "info" });
      title.control.focus();
    } catch (error) {
      box.show(describe(error, "this todo"));
    }
  }

  const save = h("button", { type: "submit", class: "primary" }, "Save");
  const form = h(
    "form",
    { novalidate: true },
    box.el,
    title.wrap,
    description.wrap,
    priority.wrap,
    h("div", { class: "actions" }, save, h("a", { href: "#/todos", class: "button secondary" }, "Cancel")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearFormError(fields, box);
    if (!title.control.value.trim()) {
      setFieldError(title, "A todo needs a title.");
      title.control.focus();
      return;
    }
    const body = {
      title: title.control.value.trim(),
      description: description.control.value.trim(),
      priority: Number(priority.control.value),
    };
    busy(save, async () => {
      try {
        await api("PATCH", `/todos/${todoId}`, { json: body, ifMatch: etag || undefined });
      } catch (error) {
        if (error instanceof ApiError && error.status === 412) {
          box.show(
            "This todo was changed somewhere else (another tab or device) since you opened it, so your edit was not saved. Your text is still in the form.",
            { actions: [button("Reload", { class: "primary", onclick: reloadLatest })] },
          );
        } else if (!(error instanceof ApiError && error.status === 401)) {
          showFormError(error, fields, box, "this todo");
        }
        return;
      }
      app.notify("Todo saved.");
      app.go("#/todos");
    });
  });
  return screen("Edit todo", form);
}
