"""Sessions in the browser: the refresh cookie, tabs, devices, signing out."""

from collections.abc import Callable

from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import (
    Person,
    Server,
    Watch,
    expect_signed_out,
    shoot,
    sign_in,
)
from tests.conftest import PASSWORD


def open_app(context: BrowserContext, server: Server) -> Page:
    page = context.new_page()
    page.goto(server.base + "/")
    return page


def test_reload_keeps_the_session_with_no_token_in_storage(
    page: Page, context: BrowserContext, make_person: Callable[..., Person]
) -> None:
    pat = make_person("pat")
    sign_in(page, pat.username)
    page.get_by_label("New todo").fill("Survives a reload")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("checkbox", name="Survives a reload")).to_be_visible()

    page.reload()
    expect(page.get_by_role("checkbox", name="Survives a reload")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out", exact=True)).to_be_visible()

    # The access token lives in memory only; the refresh token in an HttpOnly cookie.
    stored = page.evaluate(
        "() => JSON.stringify([{...localStorage}, {...sessionStorage}, document.cookie])"
    )
    assert "eyJ" not in stored  # no JWT anywhere a script could read
    [cookie] = [c for c in context.cookies() if c["name"] == "todoapp_refresh"]
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/auth"


def test_two_tabs_share_the_session_and_sign_out_together(
    context: BrowserContext, server: Server, make_person: Callable[..., Person]
) -> None:
    quinn = make_person("quinn")
    first = open_app(context, server)
    sign_in(first, quinn.username)
    second = open_app(context, server)
    expect(second.get_by_role("heading", name="Todos", level=1)).to_be_visible()

    # Both tabs reload at once: their refreshes take turns, so neither presents a
    # refresh token the other has already used (that would end the session).
    first.evaluate("location.reload()")
    second.evaluate("location.reload()")
    for tab in (first, second):
        expect(tab.get_by_role("heading", name="Todos", level=1)).to_be_visible()
    second.get_by_label("New todo").fill("From the second tab")
    second.get_by_role("button", name="Add").click()
    expect(second.get_by_role("checkbox", name="From the second tab")).to_be_visible()
    first.reload()
    expect(first.get_by_role("checkbox", name="From the second tab")).to_be_visible()

    second.get_by_role("button", name="Sign out", exact=True).click()
    expect_signed_out(second)
    expect_signed_out(first)  # told by the other tab, at once
    expect(first.get_by_role("status")).to_contain_text("signed out in another tab")
    first.reload()
    expect_signed_out(first)


def test_sign_out_here_leaves_other_devices_signed_in(
    contexts: Callable[..., BrowserContext], server: Server, make_person: Callable[..., Person]
) -> None:
    rae = make_person("rae")
    laptop = open_app(contexts(), server)
    phone = open_app(contexts(), server)
    sign_in(laptop, rae.username)
    sign_in(phone, rae.username)

    laptop.get_by_role("button", name="Sign out", exact=True).click()
    expect_signed_out(laptop)
    laptop.reload()
    expect_signed_out(laptop)

    phone.reload()
    expect(phone.get_by_role("heading", name="Todos", level=1)).to_be_visible()
    phone.get_by_label("New todo").fill("Still here")
    phone.get_by_role("button", name="Add").click()
    expect(phone.get_by_role("checkbox", name="Still here")).to_be_visible()


def test_sign_out_everywhere_ends_every_device(
    contexts: Callable[..., BrowserContext],
    watch: Watch,
    server: Server,
    make_person: Callable[..., Person],
) -> None:
    watch.allow(401)
    sam = make_person("sam")
    laptop = open_app(contexts(), server)
    phone = open_app(contexts(), server)
    sign_in(laptop, sam.username)
    sign_in(phone, sam.username)

    laptop.get_by_role("button", name="Sign out everywhere").click()
    expect_signed_out(laptop)
    phone.get_by_label("New todo").fill("Typed before noticing")
    phone.get_by_role("button", name="Add").click()
    expect_signed_out(phone)
    expect(phone.get_by_role("status")).to_contain_text("Your session has ended")


def test_devices_list_signs_out_another_device(
    contexts: Callable[..., BrowserContext],
    watch: Watch,
    server: Server,
    make_person: Callable[..., Person],
) -> None:
    watch.allow(401)
    tia = make_person("tia")
    laptop = open_app(contexts(user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0"), server)
    phone_agent = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Safari/604.1"
    phone = open_app(contexts(user_agent=phone_agent), server)
    sign_in(phone, tia.username)
    sign_in(laptop, tia.username)

    laptop.get_by_role("link", name="Devices").click()
    devices = laptop.get_by_role("list", name="Devices").get_by_role("listitem")
    expect(devices).to_have_count(2)
    expect(devices.first).to_contain_text("Chrome on Linux")  # newest first: this one
    expect(devices.first).to_contain_text("This device")
    expect(devices.nth(1)).to_contain_text("Safari on iOS")
    shoot(laptop, "devices")

    devices.nth(1).get_by_role("button", name="Sign out").click()
    expect(devices).to_have_count(1)
    phone.get_by_role("link", name="Profile", exact=True).click()
    expect_signed_out(phone)
    laptop.reload()
    expect(laptop.get_by_role("list", name="Devices").get_by_role("listitem")).to_have_count(1)


def test_a_disabled_user_is_signed_out_on_their_next_request(
    contexts: Callable[..., BrowserContext],
    watch: Watch,
    server: Server,
    make_person: Callable[..., Person],
) -> None:
    watch.allow(401, 403)
    boss = make_person("boss", role="admin")
    kim = make_person("kim")
    kims = open_app(contexts(), server)
    sign_in(kims, kim.username)
    kims.get_by_label("New todo").fill("Before")
    kims.get_by_role("button", name="Add").click()
    expect(kims.get_by_role("checkbox", name="Before")).to_be_visible()

    admins = open_app(contexts(), server)
    sign_in(admins, boss.username)
    admins.get_by_role("link", name="Admin").click()
    admins.get_by_label("Search users").fill(kim.username)
    admins.get_by_role("button", name=f"Disable {kim.username}").click()
    expect(admins.get_by_role("button", name=f"Enable {kim.username}")).to_be_visible()

    # Kim's next request meets the revocation: back to the sign-in screen.
    kims.get_by_label("New todo").fill("After")
    kims.get_by_role("button", name="Add").click()
    expect_signed_out(kims)
    expect(kims.get_by_role("status")).to_contain_text("Your session has ended")
    kims.reload()
    expect_signed_out(kims)
    kims.get_by_label("Username or email").fill(kim.username)
    kims.get_by_label("Password").fill(PASSWORD)
    kims.get_by_role("button", name="Sign in").click()
    expect(kims.get_by_role("alert")).to_contain_text("This account is disabled")


def test_sign_out_returns_to_sign_in_and_stays_signed_out(
    page: Page, server: Server, make_person: Callable[..., Person]
) -> None:
    zed = make_person("zed")
    sign_in(page, zed.username)
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect_signed_out(page)
    expect(page.get_by_role("status")).to_contain_text("You are signed out")
    page.reload()
    expect_signed_out(page)
    page.goto(server.base + "/#/profile")  # a signed-in screen asks to sign in, then goes there
    sign_in_form = page.get_by_role("button", name="Sign in")
    expect(sign_in_form).to_be_visible()
    page.get_by_label("Username or email").fill(zed.username)
    page.get_by_label("Password").fill(PASSWORD)
    sign_in_form.click()
    expect(page.get_by_role("heading", name="Profile")).to_be_visible()


def test_a_401_is_answered_by_one_refresh_and_one_retry(
    page: Page, watch: Watch, make_person: Callable[..., Person]
) -> None:
    # An access token that expired on the way (standing in for 30 minutes of waiting):
    # the page refreshes once, retries once, and the person notices nothing.
    watch.allow(401)
    una = make_person("una")
    sign_in(page, una.username)
    refreshes: list[str] = []
    page.on("request", lambda r: refreshes.append(r.url) if "/auth/refresh" in r.url else None)
    expired = {"status": 401, "json": {"detail": "token expired"}}
    page.route(
        "**/todos?*",
        lambda route: route.fulfill(**expired, headers={"WWW-Authenticate": "Bearer"}),
        times=1,
    )
    page.get_by_role("radio", name="Open").check()
    expect(page.get_by_text("Nothing to do yet")).to_be_hidden()
    expect(page.get_by_text("No todos match.")).to_be_visible()
    assert len(refreshes) == 1
    expect(page.get_by_role("button", name="Sign out", exact=True)).to_be_visible()
