"""One's own account in the browser: profile and password."""

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.conftest import Person, Server, Watch, shoot, sign_in, unique_name
from tests.conftest import PASSWORD


def test_profile_names_email_and_username(
    page: Page, watch: Watch, server: Server, make_person: Callable[..., Person]
) -> None:
    watch.allow(409)
    nia = make_person("nia")
    other = make_person("other")
    sign_in(page, nia.username)
    page.get_by_role("link", name="Profile", exact=True).click()
    expect(page.get_by_label("Email")).to_have_value(nia.email)

    page.get_by_label("Username").fill(other.username)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("That username is already taken.")).to_be_visible()
    expect(page.get_by_label("Username")).to_have_attribute("aria-invalid", "true")

    new_name = unique_name("nia2")
    page.get_by_label("First name").fill("Nia")
    page.get_by_label("Last name").fill("Long")
    page.get_by_label("Email").fill(f"{new_name}@example.com")
    page.get_by_label("Username").fill(new_name)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text="Saved")).to_be_visible()
    expect(page.get_by_label("Username")).not_to_have_attribute("aria-invalid", "true")
    shoot(page, "profile-saved")

    with server.api() as api:
        form = {"username": new_name, "password": PASSWORD}
        token = api.post("/auth/token", data=form).json()["access_token"]
        me = api.get("/users/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert (me["firstname"], me["lastname"], me["email"], me["username"]) == (
        "Nia",
        "Long",
        f"{new_name}@example.com",
        new_name,
    )


def test_password_change_keeps_this_browser_signed_in(
    page: Page, watch: Watch, server: Server, make_person: Callable[..., Person]
) -> None:
    watch.allow(400)
    oz = make_person("oz")
    sign_in(page, oz.username)
    page.get_by_role("link", name="Profile", exact=True).click()
    page.get_by_label("Current password").fill("not my password")
    page.get_by_label("New password").fill("a brand new secret")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("This is not your current password.")).to_be_visible()
    expect(page.get_by_label("New password")).to_have_value("a brand new secret")

    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("Password changed.")).to_be_visible()
    expect(page.get_by_label("Current password")).to_have_value("")
    # Still signed in here, with the new password in force.
    page.get_by_role("link", name="Todos").click()
    expect(page.get_by_role("heading", name="Todos", level=1)).to_be_visible()
    with server.api() as api:
        old = api.post("/auth/token", data={"username": oz.username, "password": PASSWORD})
        new = api.post(
            "/auth/token", data={"username": oz.username, "password": "a brand new secret"}
        )
    assert (old.status_code, new.status_code) == (401, 200)
