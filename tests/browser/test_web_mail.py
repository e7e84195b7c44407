"""Links that come by mail, caught by a real SMTP server: password reset, verification."""

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    Outbox,
    Person,
    Server,
    Watch,
    expect_signed_out,
    link_in,
    shoot,
    sign_in,
    unique_name,
)
from tests.conftest import PASSWORD


def test_forgot_password_then_reset_from_the_mailed_link(
    page: Page, watch: Watch, server: Server, outbox: Outbox, make_person: Callable[..., Person]
) -> None:
    watch.allow(400)
    una = make_person("una")
    page.get_by_role("link", name="Forgot password?").click()
    page.get_by_label("Email").fill(una.email.upper())
    page.get_by_role("button", name="Send reset link").click()
    expect(page.get_by_role("status").filter(has_text="reset link is on its way")).to_be_visible()

    mail = outbox.wait_for(una.email, subject="reset")
    link = link_in(mail, "#/reset-password?token=")
    assert link.startswith(server.base + "/")
    page.goto(link)
    expect(page.get_by_role("button", name="Set new password")).to_be_visible()
    shoot(page, "reset-password")
    page.get_by_label("New password").fill("my new password 1")
    page.get_by_role("button", name="Set new password").click()
    expect_signed_out(page)
    expect(page.get_by_role("status")).to_contain_text("new password is set")
    sign_in(page, una.username, "my new password 1")

    # A reset link works once.
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect_signed_out(page)
    page.goto(link)
    page.get_by_label("New password").fill("another password 2")
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid or has expired")
    with server.api() as api:
        form = {"username": una.username, "password": "another password 2"}
        assert api.post("/auth/token", data=form).status_code == 401


def test_verify_email_from_the_mailed_link_and_ask_for_a_new_one(
    page: Page, watch: Watch, outbox: Outbox
) -> None:
    watch.allow(400)
    username = unique_name("vic")
    address = f"{username}@example.com"
    page.get_by_role("link", name="Create account").click()
    page.get_by_label("Email").fill(address)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Todos", level=1)).to_be_visible()
    expect(page.get_by_text("Your email address is not verified yet")).to_be_visible()
    first = link_in(outbox.wait_for(address, text="#/verify-email?token="), "#/verify-email")

    expect(page.get_by_role("link", name="Profile")).to_have_count(1)  # the nav's, alone
    page.get_by_role("link", name="send a new link").click()
    expect(page.get_by_text("Not verified", exact=True)).to_be_visible()
    page.get_by_role("button", name="Send verification email").click()
    expect(page.get_by_text("We sent a new verification link")).to_be_visible()
    second = link_in(
        outbox.wait_for(address, text="#/verify-email?token=", nth=2), "#/verify-email"
    )
    assert second != first

    page.goto(first)  # older than the newer mail's link: refused
    expect(page.get_by_role("alert")).to_contain_text("invalid or has expired")
    page.goto(second)
    expect(page.get_by_role("heading", name="Email verified")).to_be_visible()
    shoot(page, "verify-email")
    page.get_by_role("link", name="Continue").click()
    expect(page.get_by_text("Your email address is not verified yet")).to_have_count(0)
    page.get_by_role("link", name="Profile").click()
    expect(page.get_by_text("Your email address is verified.")).to_be_visible()
