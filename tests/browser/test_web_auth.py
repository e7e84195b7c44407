"""Signing up and in through the browser, with errors a person understands."""

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    Person,
    Server,
    Watch,
    expect_signed_out,
    shoot,
    sign_in,
    unique_name,
)
from tests.conftest import PASSWORD


def test_page_is_todoapp_and_starts_signed_out(page: Page) -> None:
    expect(page).to_have_title("todoapp")
    expect_signed_out(page)
    expect(page.get_by_role("link", name="Forgot password?")).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    shoot(page, "sign-in")


def test_create_account_with_field_errors_then_success(
    page: Page, watch: Watch, server: Server, make_person: Callable[..., Person]
) -> None:
    watch.allow(409, 422)
    taken = make_person("taken")
    page.get_by_role("link", name="Create account").click()
    expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
    username = unique_name("newbie")

    # Each field's error sits next to it, from the server's 422 list.
    page.get_by_label("Email").fill(f"{username}@example.com")
    page.get_by_label("Username").fill("no spaces allowed")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_label("Username")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Email")).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_text("Use only letters, digits and _ . - (no spaces).")).to_be_visible()
    expect(page.get_by_text("Use 8 to 72 characters")).to_be_visible()
    shoot(page, "sign-up-errors")

    # A taken username (409) is said in plain words, next to the username.
    page.get_by_label("Username").fill(taken.username.upper())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_text("That username is already taken.")).to_be_visible()
    expect(page.get_by_label("Username")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Password")).not_to_have_attribute("aria-invalid", "true")

    page.get_by_label("Username").fill(username)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Todos", level=1)).to_be_visible()
    expect(page.get_by_role("list", name="Todos")).to_be_attached()
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    with server.api() as api:
        answer = api.post("/auth/token", data={"username": username, "password": PASSWORD})
    assert answer.status_code == 200


def test_sign_in_with_username_or_email(
    page: Page, watch: Watch, make_person: Callable[..., Person]
) -> None:
    watch.allow(401)
    eve = make_person("eve")
    page.get_by_label("Username or email").fill(eve.username)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("do not match")
    expect(page.get_by_label("Username or email")).to_have_value(eve.username)

    sign_in(page, eve.email.upper())
    page.get_by_role("link", name="Profile", exact=True).click()
    expect(page.get_by_label("Username")).to_have_value(eve.username)


def test_throttled_sign_in_says_how_long_to_wait(
    page: Page, watch: Watch, make_person: Callable[..., Person]
) -> None:
    watch.allow(401, 429)
    fay = make_person("fay")
    page.get_by_label("Username or email").fill(fay.username)
    for _ in range(5):
        page.get_by_label("Password").fill("wrong password")
        with page.expect_response("**/auth/token") as answer:
            page.get_by_role("button", name="Sign in").click()
        assert answer.value.status == 401
        expect(page.get_by_role("alert")).to_contain_text("do not match")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Too many attempts")
    expect(page.get_by_role("alert")).to_contain_text("15 minutes")
    expect_signed_out(page)


def test_disabled_account_is_told_so(
    page: Page, watch: Watch, server: Server, make_person: Callable[..., Person]
) -> None:
    watch.allow(403)
    gus = make_person("gus")
    boss = make_person("boss", role="admin")
    with server.api() as api:
        headers = {"Authorization": f"Bearer {boss.token(server)}"}
        answer = api.patch(f"/admin/users/{gus.id}", json={"is_active": False}, headers=headers)
    assert answer.status_code == 200
    page.get_by_label("Username or email").fill(gus.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("This account is disabled")
    expect_signed_out(page)


def test_a_busy_server_is_said_in_plain_words(
    page: Page, watch: Watch, make_person: Callable[..., Person]
) -> None:
    # An overloaded server's answer, exactly as the contract words it (a real one needs
    # a flood of logins): the page says to wait, and for how long, keeping the form.
    watch.allow(503)
    abe = make_person("abe")
    busy = {"status": 503, "json": {"detail": "server busy: try again shortly"}}
    page.route(
        "**/auth/token",
        lambda route: route.fulfill(**busy, headers={"Retry-After": "3"}),
        times=1,
    )
    page.get_by_label("Username or email").fill(abe.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text(
        "The server is busy right now. Please try again in 3 seconds."
    )
    expect(page.get_by_label("Password")).to_have_value(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Todos", level=1)).to_be_visible()
