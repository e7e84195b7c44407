// Small helpers to build the page from data without ever parsing data as HTML.

let uid = 0;

/** A new id, unique in this page. */
export function newId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

const PROPERTIES = new Set(["value", "checked", "selected", "indeterminate"]);

/** h("button", {type: "button", onclick: fn}, "Text", child, ...) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (PROPERTIES.has(key)) el[key] = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/**
 * A labelled form field with room for its error, which is tied to the control by
 * aria-describedby and aria-invalid. Returns {wrap, control, error}.
 */
export function field(label, attrs = {}, { hint, kind = "input", options = [] } = {}) {
  const id = newId("field");
  const errorId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : null;
  let control;
  if (kind === "select") {
    control = h(
      "select",
      { id, ...attrs },
      options.map(([value, text]) => h("option", { value }, text)),
    );
    if (attrs.value !== undefined) control.value = String(attrs.value);
  } else if (kind === "textarea") {
    control = h("textarea", { id, ...attrs });
  } else {
    control = h("input", { id, type: "text", ...attrs });
  }
  control.setAttribute("aria-describedby", [hintId, errorId].filter(Boolean).join(" "));
  const error = h("p", { class: "field-error", id: errorId, hidden: true });
  const wrap = h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
    control,
    error,
  );
  return { wrap, control, error };
}

export function setFieldError(f, message) {
  if (message) {
    f.error.textContent = message;
    f.error.hidden = false;
    f.control.setAttribute("aria-invalid", "true");
  } else {
    f.error.textContent = "";
    f.error.hidden = true;
    f.control.removeAttribute("aria-invalid");
  }
}

/** A message box for a whole form or screen: role=alert for errors, status otherwise. */
export function messageBox() {
  const box = h("div", { class: "message", hidden: true });
  return {
    el: box,
    show(text, { kind = "error", actions = [] } = {}) {
      box.className = `message message-${kind}`;
      box.setAttribute("role", kind === "error" ? "alert" : "status");
      box.replaceChildren(h("p", {}, text));
      if (actions.length) box.append(h("div", { class: "actions" }, actions));
      box.hidden = false;
    },
    hide() {
      box.hidden = true;
      box.replaceChildren();
    },
  };
}

export function button(text, attrs = {}) {
  return h("button", { type: "button", ...attrs }, text);
}

const DATE_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : DATE_TIME.format(date);
}

/** A <time> element showing a timestamp in the reader's own time zone. */
export function timeEl(iso) {
  return h("time", { datetime: iso }, when(iso));
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** A screen: its heading (focused after navigation) and its content. */
export function screen(title, ...children) {
  return h("section", { class: "screen" }, h("h1", { tabindex: "-1" }, title), children);
}

/** Run an async action with a button showing that it is busy; never double-submits. */
export async function busy(btn, action) {
  if (btn.getAttribute("aria-disabled") === "true") return undefined;
  btn.setAttribute("aria-disabled", "true");
  btn.classList.add("is-busy");
  try {
    return await action();
  } finally {
    btn.removeAttribute("aria-disabled");
    btn.classList.remove("is-busy");
  }
}
