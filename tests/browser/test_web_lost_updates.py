"""ETags in the browser: a lost update is shown, not made; lists walk by next_cursor."""

from collections.abc import Callable

from playwright.sync_api import Page, Request, expect

from tests.browser.conftest import Person, Server, Watch, add_todos, shoot, sign_in


def test_a_todo_changed_elsewhere_is_not_overwritten(
    page: Page, watch: Watch, server: Server, make_person: Callable[..., Person]
) -> None:
    watch.allow(412)
    wes = make_person("wes")
    [todo] = add_todos(server, wes, "Shared plan")
    sign_in(page, wes.username)
    page.get_by_role("button", name="Edit Shared plan").click()
    page.get_by_label("Title").fill("My version")

    with server.api() as api:  # someone else, after the form was loaded
        headers = {"Authorization": f"Bearer {wes.token(server)}"}
        answer = api.patch(f"/todos/{todo['id']}", json={"title": "Their version"}, headers=headers)
    assert answer.status_code == 200

    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("changed somewhere else")
    expect(page.get_by_label("Title")).to_have_value("My version")  # nothing typed is lost
    shoot(page, "lost-update")
    page.get_by_role("button", name="Reload").click()
    expect(page.get_by_label("Title")).to_have_value("Their version")
    page.get_by_label("Title").fill("Both versions")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("checkbox", name="Both versions")).to_be_visible()


def test_a_profile_changed_elsewhere_is_not_overwritten(
    page: Page, watch: Watch, server: Server, make_person: Callable[..., Person]
) -> None:
    watch.allow(412)
    xan = make_person("xan")
    sign_in(page, xan.username)
    page.get_by_role("link", name="Profile", exact=True).click()
    expect(page.get_by_label("Username")).to_have_value(xan.username)
    page.get_by_label("First name").fill("Mine")
    with server.api() as api:
        headers = {"Authorization": f"Bearer {xan.token(server)}"}
        assert api.patch("/users/me", json={"lastname": "Theirs"}, headers=headers).is_success
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("changed somewhere else")
    page.get_by_role("button", name="Reload").click()
    expect(page.get_by_label("Last name")).to_have_value("Theirs")
    page.get_by_label("First name").fill("Mine")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text="Saved")).to_be_visible()


def test_load_more_follows_next_cursor(
    page: Page, server: Server, make_person: Callable[..., Person]
) -> None:
    yan = make_person("yan")
    add_todos(server, yan, *(f"Item {n:02d}" for n in range(25)))
    sign_in(page, yan.username)
    items = page.get_by_role("list", name="Todos").get_by_role("listitem")
    expect(items).to_have_count(20)
    add_todos(server, yan, "Added meanwhile")  # keyset pages neither skip nor repeat

    def is_next_page(request: Request) -> bool:
        return "/todos?" in request.url and "cursor=" in request.url

    with page.expect_request(is_next_page) as next_page:
        page.get_by_role("button", name="Load more").click()
    assert "offset=" not in next_page.value.url
    expect(items).to_have_count(25)
    expect(items.locator(".todo-title").last).to_have_text("Item 00")
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
