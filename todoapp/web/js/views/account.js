// The signed-in user's own account: profile, password, email verification, devices.

import { ApiError, api, forget, signIn } from "../api.js";
import { busy, button, field, h, messageBox, screen, setFieldError, timeEl } from "../dom.js";
import { clearFormError, describe, showFormError } from "../errors.js";

export async function profileView(app) {
  let etag = null;
  let me;
  try {
    const answer = await api("GET", "/users/me");
    me = answer.data;
    etag = answer.etag;
  } catch (error) {
    return screen("Profile", h("p", { role: "alert", class: "message message-error" }, describe(error)));
  }

  // --- details ---------------------------------------------------------------------
  const firstname = field("First name", { name: "firstname", autocomplete: "given-name", maxlength: 45 });
  const lastname = field("Last name", { name: "lastname", autocomplete: "family-name", maxlength: 45 });
  const email = field("Email", { type: "email", name: "email", autocomplete: "email" });
  const username = field(
    "Username",
    { name: "username", autocomplete: "username", autocapitalize: "none", spellcheck: "false", maxlength: 45 },
    { hint: "3 to 45 letters, digits, or _ . -" },
  );
  const fields = { firstname, lastname, email, username };
  const box = messageBox();
  const verification = h("div", { class: "verification" });

  function fill(user, tag) {
    me = user;
    etag = tag;
    firstname.control.value = user.firstname ?? "";
    lastname.control.value = user.lastname ?? "";
    email.control.value = user.email;
    username.control.value = user.username;
    showVerification();
  }

  function showVerification() {
    if (me.is_verified === undefined) {
      verification.replaceChildren();
      return;
    }
    if (me.is_verified) {
      verification.replaceChildren(h("p", { class: "badge-line" }, h("span", { class: "badge badge-ok" }, "Verified"), " Your email address is verified."));
      return;
    }
    const resend = button("Send verification email", { class: "secondary" });
    const sent = messageBox();
    resend.addEventListener("click", () =>
      busy(resend, async () => {
        try {
          await api("POST", "/auth/request-verify");
          sent.show(`We sent a new verification link to ${me.email}. It works for 24 hours.`, { kind: "success" });
        } catch (error) {
          if (error instanceof ApiError && error.status === 409) {
            me.is_verified = true;
            showVerification();
          } else {
            sent.show(describe(error));
          }
        }
      }),
    );
    verification.replaceChildren(
      h("p", { class: "badge-line" }, h("span", { class: "badge badge-warn" }, "Not verified"), " Your email address is not verified yet."),
      resend,
      sent.el,
    );
  }

  async function reloadLatest() {
    try {
      const answer = await api("GET", "/users/me");
      fill(answer.data, answer.etag);
      app.setUser(answer.data);
      clearFormError(fields, box);
      box.show("This is your profile as it is now. Make your changes again and save.", { kind: "info" });
    } catch (error) {
      box.show(describe(error));
    }
  }

  const save = h("button", { type: "submit", class: "primary" }, "Save");
  const details = h(
    "form",
    { novalidate: true, "aria-labelledby": "profile-details" },
    h("h2", { id: "profile-details" }, "Your details"),
    box.el,
    firstname.wrap,
    lastname.wrap,
    email.wrap,
    verification,
    username.wrap,
    h("div", { class: "actions" }, save),
  );
  details.addEventListener("submit", (event) => {
    event.preventDefault();
    clearFormError(fields, box);
    const body = {};
    for (const [key, f] of Object.entries(fields)) {
      const value = f.control.value.trim();
      if ((me[key] ?? "") !== value) body[key] = value;
    }
    if (body.email === "") return setFieldError(email, "This is required.");
    if (body.username === "") return setFieldError(username, "This is required.");
    if (!Object.keys(body).length) {
      box.show("Nothing changed.", { kind: "info" });
      return undefined;
    }
    return busy(save, async () => {
      try {
        const answer = await api("PATCH", "/users/me", { json: body, ifMatch: etag || undefined });
        fill(answer.data, answer.etag);
        app.setUser(answer.data);
        box.show(
          body.email !== undefined && answer.data.is_verified === false
            ? "Saved. We sent a link to your new address: open it to verify the address."
            : "Saved.",
          { kind: "success" },
        );
      } catch (error) {
        if (error instanceof ApiError && error.status === 412) {
          box.show("Your profile was changed somewhere else since this page loaded, so nothing was saved. What you typed is still here.", {
            actions: [button("Reload", { class: "primary", onclick: reloadLatest })],
          });
        } else if (!(error instanceof ApiError && error.status === 401)) {
          showFormError(error, fields, box, "your account");
        }
      }
    });
  });

  // --- password ---------------------------------------------------------------------
  const current = field("Current password", { type: "password", name: "current_password", autocomplete: "current-password" });
  const fresh = field(
    "New password",
    { type: "password", name: "new_password", autocomplete: "new-password" },
    { hint: "8 to 72 characters. Other devices will be signed out." },
  );
  const pwFields = { current_password: current, new_password: fresh };
  const pwBox = messageBox();
  const change = h("button", { type: "submit", class: "primary" }, "Change password");
  const password = h(
    "form",
    { novalidate: true, "aria-labelledby": "profile-password" },
    h("h2", { id: "profile-password" }, "Password"),
    pwBox.el,
    current.wrap,
    fresh.wrap,
    h("div", { class: "actions" }, change, h("a", { href: "#/forgot-password" }, "Forgot it?")),
  );
  password.addEventListener("submit", (event) => {
    event.preventDefault();
    clearFormError(pwFields, pwBox);
    if (!current.control.value) return setFieldError(current, "This is required.");
    if (!fresh.control.value) return setFieldError(fresh, "This is required.");
    const newPassword = fresh.control.value;
    return busy(change, async () => {
      try {
        await api("PUT", "/users/me/password", {
          json: { current_password: current.control.value, new_password: newPassword },
        });
      } catch (error) {
        if (error instanceof ApiError && error.status === 400) {
          setFieldError(current, "This is not your current password.");
          current.control.focus();
        } else if (!(error instanceof ApiError && error.status === 401)) {
          showFormError(error, pwFields, pwBox);
        }
        return;
      }
      current.control.value = "";
      fresh.control.value = "";
      // A password change ends every session, this one too: start a new one here.
      try {
        await signIn(me.username, newPassword);
        pwBox.show("Password changed. Your other devices were signed out.", { kind: "success" });
      } catch {
        forget("signed-out");
        app.notify("Password changed. Sign in with your new password.", { timeout: 0 });
        app.go("#/sign-in");
      }
    });
  });

  // --- delete the account -------------------------------------------------------------
  const dangerBox = messageBox();
  const destroy = button("Delete my account", { class: "danger" });
  destroy.addEventListener("click", () =>
    busy(destroy, async () => {
      if (!window.confirm("Delete your account and all your todos? This cannot be undone.")) return;
      try {
        await api("DELETE", "/users/me");
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 401)) dangerBox.show(describe(error, "your account"));
        return;
      }
      forget("signed-out");
      app.user = null;
      app.notify("Your account and its todos are deleted.", { timeout: 0 });
      app.go("#/sign-in");
    }),
  );

  fill(me, etag);
  return screen(
    "Profile",
    h("p", { class: "lead" }, "Signed in as ", h("strong", {}, me.username), me.role === "admin" ? " (administrator)" : null, "."),
    details,
    password,
    h(
      "section",
      { class: "danger-zone", "aria-labelledby": "profile-delete" },
      h("h2", { id: "profile-delete" }, "Delete account"),
      h("p", {}, "Your account and all its todos are removed for good."),
      dangerBox.el,
      destroy,
    ),
  );
}

/** "Chrome on Linux" from a User-Agent header, or a plain fallback. */
export function deviceName(userAgent) {
  if (!userAgent) return "Unknown device";
  const browsers = [
    [/Edg\//, "Edge"],
    [/OPR\/|Opera/, "Opera"],
    [/Firefox\//, "Firefox"],
    [/Chrome\/|Chromium\/|CriOS\//, "Chrome"],
    [/Safari\//, "Safari"],
    [/curl\//, "curl"],
    [/python/i, "Python"],
  ];
  const systems = [
    [/Android/, "Android"],
    [/iPhone|iPad|iPod/, "iOS"],
    [/Windows/, "Windows"],
    [/Mac OS X|Macintosh/, "macOS"],
    [/CrOS/, "ChromeOS"],
    [/Linux/, "Linux"],
  ];
  const browser = browsers.find(([pattern]) => pattern.test(userAgent))?.[1];
  const system = systems.find(([pattern]) => pattern.test(userAgent))?.[1];
  if (browser && system) return `${browser} on ${system}`;
  return browser || system || userAgent.slice(0, 40);
}

export async function devicesView(app) {
  const list = h("ul", { class: "device-list", "aria-label": "Devices" });
  const box = messageBox();

  async function load() {
    let sessions;
    try {
      ({ data: sessions } = await api("GET", "/users/me/sessions"));
    } catch (error) {
      box.show(describe(error), { actions: [button("Try again", { onclick: load })] });
      return;
    }
    box.hide();
    list.replaceChildren(...sessions.map(row));
  }

  function row(session) {
    const name = deviceName(session.user_agent);
    const signOut = button("Sign out", {
      class: session.current ? "secondary small" : "danger small",
      "aria-label": `Sign out ${name}${session.current ? " (this device)" : ""}, session ${session.id}`,
    });
    const li = h(
      "li",
      { class: "device" },
      h(
        "div",
        {},
        h("p", { class: "device-name" }, name, session.current ? h("span", { class: "badge badge-ok" }, "This device") : null),
        h("p", { class: "device-meta" }, "Signed in ", timeEl(session.created_at), " · last active ", timeEl(session.last_used_at)),
      ),
      signOut,
    );
    signOut.addEventListener("click", () => {
      if (session.current) {
        app.signOutHere();
        return undefined;
      }
      return busy(signOut, async () => {
        try {
          await api("DELETE", `/users/me/sessions/${session.id}`);
        } catch (error) {
          if (!(error instanceof ApiError && error.status === 404)) {
            if (!(error instanceof ApiError && error.status === 401)) box.show(describe(error, "that session"));
            return;
          }
        }
        const next = li.nextElementSibling || li.previousElementSibling;
        li.remove();
        next?.querySelector("button")?.focus();
        app.notify("That device is signed out.");
      });
    });
    return li;
  }

  await load();
  return screen(
    "Devices",
    h("p", {}, "Where you are signed in now. Sign out a device you do not recognise, or use “Sign out everywhere” at the top."),
    box.el,
    list,
  );
}
