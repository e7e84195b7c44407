// API errors in words a person understands.

import { ApiError } from "./api.js";
import { setFieldError } from "./dom.js";

export function waitText(seconds) {
  if (seconds === null || seconds === undefined) return "a little while";
  if (seconds < 60) return seconds === 1 ? "1 second" : `${seconds} seconds`;
  const minutes = Math.ceil(seconds / 60);
  return minutes === 1 ? "1 minute" : `${minutes} minutes`;
}

function sentence(text) {
  const trimmed = String(text).trim();
  if (!trimmed) return "";
  const first = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

/** One field error of FastAPI's 422 list, as a short sentence. */
export function fieldMessage(error) {
  const ctx = error.ctx || {};
  switch (error.type) {
    case "missing":
      return "This is required.";
    case "string_too_short":
      return ctx.min_length === 1 ? "This cannot be empty." : `Use at least ${ctx.min_length} characters.`;
    case "string_too_long":
      return `Use at most ${ctx.max_length} characters.`;
    case "string_pattern_mismatch":
      return "Use only letters, digits and _ . - (no spaces).";
    case "greater_than_equal":
    case "less_than_equal":
      return "Choose a value from the list.";
    case "value_error": {
      const message = String(error.msg || "").replace(/^Value error, /, "");
      if (message.startsWith("must be 8-72 bytes")) {
        return "Use 8 to 72 characters (accented letters and emoji count as more than one).";
      }
      return sentence(message);
    }
    default:
      return sentence(error.msg || "This value is not accepted.");
  }
}

/** Plain words for any failed call (not 422 field errors, which go next to fields). */
export function describe(error, what = "that") {
  if (!(error instanceof ApiError)) {
    return "Something went wrong in this page. Reload it and try again.";
  }
  const detail = typeof error.detail === "string" ? error.detail : "";
  switch (error.status) {
    case 0:
      return "Could not reach the server. Check your connection and try again: nothing you typed was lost.";
    case 400:
      return sentence(detail || "The server did not accept this.");
    case 401:
      return "Your session has ended. Please sign in again.";
    case 403:
      return detail === "email not verified"
        ? "Verify your email address first: open the link in the mail we sent you."
        : "You are not allowed to do that.";
    case 404:
      return `Not found: ${what} may have been deleted already.`;
    case 409:
      return sentence(conflictText(detail));
    case 412:
      return "This changed since you loaded it (maybe in another tab or on another device).";
    case 413:
      return "That is too large to send.";
    case 422:
      return "Some values are not accepted: see the messages next to the fields.";
    case 429:
      return `Too many attempts. Please wait ${waitText(error.retryAfter)} and try again.`;
    case 503:
      return detail === "database unavailable"
        ? "The server cannot reach its database right now. Please try again shortly."
        : `The server is busy right now. Please try again in ${waitText(error.retryAfter)}.`;
    default:
      return "Something went wrong on the server. Please try again in a moment.";
  }
}

function conflictText(detail) {
  if (/username/i.test(detail)) return "That username is already taken. Please choose another";
  if (/email/i.test(detail)) return "An account with that email address already exists";
  return detail || "That conflicts with the current state";
}

/**
 * Show an error on a form: 422 field errors and 409 "taken" conflicts next to their
 * fields (by API field name), everything else in the form's message box.
 * fields: {apiName: fieldObject}. Returns nothing; focuses the first field in error.
 */
export function showFormError(error, fields, box, what) {
  for (const f of Object.values(fields)) setFieldError(f, null);
  box.hide();
  let first = null;
  const mark = (name, message) => {
    const f = fields[name];
    if (!f) return false;
    setFieldError(f, message);
    first = first || f;
    return true;
  };
  if (error instanceof ApiError && error.status === 422 && error.fieldErrors.length) {
    const rest = [];
    for (const item of error.fieldErrors) {
      const name = Array.isArray(item.loc) ? item.loc[item.loc.length - 1] : null;
      if (!mark(name, fieldMessage(item))) rest.push(fieldMessage(item));
    }
    if (rest.length) box.show(rest.join(" "));
  } else if (error instanceof ApiError && error.status === 409 && typeof error.detail === "string") {
    const name = /username/i.test(error.detail) ? "username" : /email/i.test(error.detail) ? "email" : null;
    if (!name || !mark(name, describe(error, what))) box.show(describe(error, what));
  } else {
    box.show(describe(error, what));
  }
  if (first) first.control.focus();
}

export function clearFormError(fields, box) {
  for (const f of Object.values(fields)) setFieldError(f, null);
  box.hide();
}
