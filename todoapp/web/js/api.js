// The HTTP client: the public API of todoapp, nothing else.
//
// The access token lives in this module's memory only. Staying signed in across reloads
// is the refresh cookie's job (HttpOnly, set by the server): POST /auth/refresh with no
// body and the header X-Requested-With. One refresh at a time: within a tab through a
// single in-flight promise, across tabs through a Web Lock, because a refresh token used
// twice ends its whole session ("reuse is theft").

const REFRESH_LOCK = "todoapp-refresh";
// Not a secret: only remembers that this browser signed in, so that a first visit does
// not ask for a refresh that can only fail.
const SIGNED_IN_MARK = "todoapp.signed-in";
const CHANNEL = typeof BroadcastChannel === "function" ? new BroadcastChannel("todoapp") : null;

let accessToken = null;
let refreshTimer = null;
let refreshing = null;
const signedOutListeners = new Set();

export class ApiError extends Error {
  constructor(status, detail, { retryAfter = null, response = null } = {}) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status; // 0: the request never reached the server
    this.detail = detail; // a sentence, or FastAPI's list of field errors (422)
    this.retryAfter = retryAfter; // seconds, from Retry-After
    this.response = response;
  }

  get fieldErrors() {
    return Array.isArray(this.detail) ? this.detail : [];
  }
}

export function isSignedIn() {
  return accessToken !== null;
}

export function hasSignedInBefore() {
  try {
    return localStorage.getItem(SIGNED_IN_MARK) === "1";
  } catch {
    return true; // storage refused: just ask
  }
}

function remember(signedIn) {
  try {
    if (signedIn) localStorage.setItem(SIGNED_IN_MARK, "1");
    else localStorage.removeItem(SIGNED_IN_MARK);
  } catch {
    // private mode or storage disabled: every load asks for a refresh instead
  }
}

/** Called (with a reason) whenever the session is found to be over. */
export function onSignedOut(listener) {
  signedOutListeners.add(listener);
}

/** Messages from other tabs of this app: {type: "signed-in" | "signed-out"}. */
export function onOtherTab(listener) {
  if (CHANNEL) CHANNEL.addEventListener("message", (event) => listener(event.data));
}

function tellOtherTabs(type) {
  if (CHANNEL) CHANNEL.postMessage({ type });
}

function keepToken(body) {
  accessToken = body.access_token;
  remember(true);
  clearTimeout(refreshTimer);
  // Renew a minute before expiry so that requests rarely meet an expired token; a
  // 401 is still handled (one refresh, one retry) when a timer was late.
  const seconds = Math.max(Number(body.expires_in) - 60, 15);
  refreshTimer = setTimeout(() => {
    refresh()
      .then((renewed) => {
        if (!renewed) dropToken("expired");
      })
      .catch(() => {}); // the server could not be asked: the next request tries again
  }, seconds * 1000);
}

function dropToken(reason) {
  const wasSignedIn = accessToken !== null;
  accessToken = null;
  clearTimeout(refreshTimer);
  remember(false);
  if (wasSignedIn || reason) {
    for (const listener of signedOutListeners) listener(reason);
  }
}

function retryAfterOf(response) {
  const value = response.headers.get("Retry-After");
  if (value === null) return null;
  const seconds = Number.parseInt(value, 10);
  if (Number.isFinite(seconds)) return Math.max(seconds, 0);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(Math.ceil((date - Date.now()) / 1000), 0);
}

async function bodyOf(response) {
  const type = response.headers.get("Content-Type") || "";
  if (response.status === 204 || !type.includes("json")) return null;
  try {
    return await response.json();
  } catch {
    return null;
  }
}

async function send(method, path, { json, form, headers = {}, auth = true } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = new URLSearchParams(form);
  }
  if (auth && accessToken) init.headers.Authorization = `Bearer ${accessToken}`;
  try {
    return await fetch(path, init);
  } catch {
    throw new ApiError(0, "network");
  }
}

async function toResult(response) {
  const data = await bodyOf(response);
  if (!response.ok) {
    const detail = data && "detail" in data ? data.detail : response.statusText;
    throw new ApiError(response.status, detail, { retryAfter: retryAfterOf(response), response });
  }
  return { status: response.status, data, etag: response.headers.get("ETag"), headers: response.headers };
}

/**
 * One API call. Resolves to {status, data, etag, headers}; rejects with ApiError.
 * A 401 on a signed-in call gets one refresh and one retry; if the refresh fails the
 * session is over and the sign-out listeners hear about it.
 */
export async function api(method, path, options = {}) {
  const { ifMatch, auth = true } = options;
  const headers = { ...(options.headers || {}) };
  if (ifMatch) headers["If-Match"] = ifMatch;
  let response = await send(method, path, { ...options, headers, auth });
  if (response.status === 401 && auth && accessToken !== null) {
    const renewed = await refresh();
    if (!renewed) {
      dropToken("expired");
      return toResult(response);
    }
    response = await send(method, path, { ...options, headers, auth });
    if (response.status === 401) dropToken("expired");
  }
  return toResult(response);
}

async function refreshNow() {
  const response = await fetch("/auth/refresh", {
    method: "POST",
    headers: { Accept: "application/json", "X-Requested-With": "todoapp" },
    credentials: "same-origin",
  });
  if (response.ok) {
    keepToken(await response.json());
    return true;
  }
  if (response.status >= 500 || response.status === 429) {
    const data = await bodyOf(response);
    throw new ApiError(response.status, data?.detail ?? response.statusText, {
      retryAfter: retryAfterOf(response),
    });
  }
  return false; // 401: no cookie, or its session is over
}

/**
 * Trade the refresh cookie for a new access token. Resolves to true or false (no
 * session); rejects with ApiError when the server could not be asked.
 */
export function refresh() {
  if (refreshing === null) {
    const run = async () => {
      try {
        return await refreshNow();
      } catch (error) {
        if (error instanceof ApiError) throw error;
        throw new ApiError(0, "network");
      }
    };
    const locked = navigator.locks ? navigator.locks.request(REFRESH_LOCK, run) : run();
    refreshing = locked.finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** On load: resume the session the refresh cookie holds, if this browser has one. */
export async function resume() {
  if (!hasSignedInBefore()) return false;
  const ok = await refresh();
  if (!ok) remember(false);
  return ok;
}

export async function signIn(login, password) {
  const response = await send("POST", "/auth/token", {
    form: { username: login, password },
    auth: false,
  });
  const { data } = await toResult(response);
  keepToken(data);
  tellOtherTabs("signed-in");
  return data;
}

/** Forget the token here and in every tab (the server side is done by the caller). */
export function forget(reason = "signed-out") {
  dropToken(reason);
  tellOtherTabs("signed-out");
}

/** Another tab signed out: this tab's session is the same one, so it is over too. */
export function forgetQuietly(reason) {
  dropToken(reason);
}
