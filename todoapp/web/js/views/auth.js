// Signed-out screens: sign in, create an account, forgot and reset password, verify email.

import { ApiError, api, isSignedIn, forget, signIn } from "../api.js";
import { busy, field, h, messageBox, screen, setFieldError } from "../dom.js";
import { clearFormError, describe, showFormError } from "../errors.js";

function required(fields) {
  let first = null;
  for (const f of fields) {
    if (!f.control.value.trim()) {
      setFieldError(f, "This is required.");
      first = first || f;
    }
  }
  if (first) first.control.focus();
  return first === null;
}

export function signInView(app) {
  const login = field("Username or email", {
    name: "username",
    autocomplete: "username",
    autocapitalize: "none",
    spellcheck: "false",
    "data-autofocus": true,
  });
  const password = field("Password", { type: "password", name: "password", autocomplete: "current-password" });
  const box = messageBox();
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { novalidate: true }, box.el, login.wrap, password.wrap, h("div", { class: "actions" }, submit));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearFormError({ login, password }, box);
    if (!required([login, password])) return;
    busy(submit, async () => {
      try {
        await signIn(login.control.value.trim(), password.control.value);
      } catch (error) {
        box.show(signInError(error));
        return;
      }
      password.control.value = "";
      await app.signedIn();
    });
  });
  return screen(
    "Sign in",
    form,
    h(
      "p",
      { class: "aside" },
      h("a", { href: "#/forgot-password" }, "Forgot password?"),
      " · New here? ",
      h("a", { href: "#/sign-up" }, "Create account"),
    ),
  );
}

function signInError(error) {
  if (error instanceof ApiError && error.status === 401) {
    return "That username or email and password do not match. Check them and try again.";
  }
  if (error instanceof ApiError && error.status === 403) {
    return "This account is disabled. Please contact an administrator.";
  }
  return describe(error);
}

export function signUpView(app) {
  const email = field("Email", { type: "email", name: "email", autocomplete: "email", "data-autofocus": true });
  const username = field(
    "Username",
    { name: "username", autocomplete: "username", autocapitalize: "none", spellcheck: "false", maxlength: 45 },
    { hint: "3 to 45 letters, digits, or _ . -" },
  );
  const password = field(
    "Password",
    { type: "password", name: "password", autocomplete: "new-password" },
    { hint: "8 to 72 characters." },
  );
  const firstname = field("First name (optional)", { name: "firstname", autocomplete: "given-name", maxlength: 45 });
  const lastname = field("Last name (optional)", { name: "lastname", autocomplete: "family-name", maxlength: 45 });
  const fields = { email, username, password, firstname, lastname };
  const box = messageBox();
  const submit = h("button", { type: "submit", class: "primary" }, "Create account");
  const form = h(
    "form",
    { novalidate: true },
    box.el,
    email.wrap,
    username.wrap,
    password.wrap,
    firstname.wrap,
    lastname.wrap,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearFormError(fields, box);
    if (!required([email, username, password])) return;
    const body = {
      email: email.control.value.trim(),
      username: username.control.value.trim(),
      password: password.control.value,
    };
    for (const key of ["firstname", "lastname"]) {
      const value = fields[key].control.value.trim();
      if (value) body[key] = value;
    }
    busy(submit, async () => {
      try {
        await api("POST", "/auth/register", { json: body, auth: false });
      } catch (error) {
        showFormError(error, fields, box, "the account");
        return;
      }
      try {
        await signIn(body.username, body.password);
      } catch (error) {
        box.show(`Your account is ready, but signing in failed: ${describe(error)}`, { kind: "info" });
        return;
      }
      app.notify("Welcome! Your account is ready. We sent you an email to verify your address.");
      await app.signedIn();
    });
  });
  return screen(
    "Create an account",
    form,
    h("p", { class: "aside" }, "Already have an account? ", h("a", { href: "#/sign-in" }, "Sign in")),
  );
}

export function forgotView() {
  const email = field("Email", { type: "email", name: "email", autocomplete: "email", "data-autofocus": true });
  const box = messageBox();
  const submit = h("button", { type: "submit", class: "primary" }, "Send reset link");
  const form = h("form", { novalidate: true }, box.el, email.wrap, h("div", { class: "actions" }, submit));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearFormError({ email }, box);
    if (!required([email])) return;
    busy(submit, async () => {
      try {
        await api("POST", "/auth/forgot-password", { json: { email: email.control.value.trim() }, auth: false });
      } catch (error) {
        showFormError(error, { email }, box);
        return;
      }
      box.show(
        "If that address belongs to an account, a reset link is on its way. Check your inbox (and spam folder); the link works for an hour.",
        { kind: "success" },
      );
    });
  });
  return screen(
    "Forgot your password?",
    h("p", {}, "Type the email address of your account and we will send you a link to set a new password."),
    form,
    h("p", { class: "aside" }, h("a", { href: isSignedIn() ? "#/profile" : "#/sign-in" }, "Back")),
  );
}

export function resetView(app, { query }) {
  const token = query.get("token");
  if (!token) {
    return screen(
      "Set a new password",
      h("p", { role: "alert", class: "message message-error" }, "This link is incomplete. Copy the whole link from the mail, or ask for a new one."),
      h("p", {}, h("a", { href: "#/forgot-password" }, "Ask for a new link")),
    );
  }
  const password = field(
    "New password",
    { type: "password", name: "new_password", autocomplete: "new-password", "data-autofocus": true },
    { hint: "8 to 72 characters." },
  );
  const box = messageBox();
  const submit = h("button", { type: "submit", class: "primary" }, "Set new password");
  const form = h("form", { novalidate: true }, box.el, password.wrap, h("div", { class: "actions" }, submit));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearFormError({ new_password: password }, box);
    if (!required([password])) return;
    busy(submit, async () => {
      try {
        await api("POST", "/auth/reset-password", {
          json: { token, new_password: password.control.value },
          auth: false,
        });
      } catch (error) {
        if (error instanceof ApiError && error.status === 400) {
          box.show("This reset link is invalid or has expired (links work once, for an hour).", {
            actions: [h("a", { href: "#/forgot-password" }, "Ask for a new link")],
          });
        } else {
          showFormError(error, { new_password: password }, box);
        }
        return;
      }
      password.control.value = "";
      // Every session ended with the reset, this browser's included.
      if (isSignedIn()) forget("signed-out");
      app.user = null;
      app.notify("Your new password is set. Sign in with it.", { timeout: 0 });
      app.go("#/sign-in");
    });
  });
  return screen("Set a new password", form);
}

const verifications = new Map(); // token -> promise: a link is used once per page

export async function verifyView(app, { query }) {
  const token = query.get("token");
  const next = isSignedIn()
    ? h("a", { href: "#/todos", class: "button primary" }, "Continue")
    : h("a", { href: "#/sign-in", class: "button primary" }, "Sign in");
  if (!token) {
    return screen(
      "Verify your email",
      h("p", { role: "alert", class: "message message-error" }, "This link is incomplete. Copy the whole link from the mail."),
      next,
    );
  }
  if (!verifications.has(token)) {
    verifications.set(token, api("POST", "/auth/verify", { json: { token }, auth: false }));
  }
  try {
    const { data } = await verifications.get(token);
    if (app.user && data && app.user.id === data.id) app.setUser({ ...app.user, ...data });
    return screen(
      "Email verified",
      h("p", { role: "status", class: "message message-success" }, "Thank you: your email address is verified."),
      next,
    );
  } catch (error) {
    verifications.delete(token);
    const text =
      error instanceof ApiError && error.status === 400
        ? "This verification link is invalid or has expired. You can ask for a new one from your profile."
        : describe(error);
    return screen(
      "Verify your email",
      h("p", { role: "alert", class: "message message-error" }, text),
      isSignedIn() ? h("a", { href: "#/profile", class: "button primary" }, "Go to your profile") : next,
    );
  }
}
