"""The todos screen in a real browser: add, tick, edit, delete and undo, find, page."""

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.conftest import Person, Server, Watch, add_todos, shoot, sign_in


def test_add_tick_edit_and_delete_with_undo(
    page: Page, server: Server, make_person: Callable[..., Person]
) -> None:
    ada = make_person("ada")
    sign_in(page, ada.username)
    todos = page.get_by_role("list", name="Todos")

    page.get_by_label("New todo").fill("Buy milk")
    page.get_by_label("Priority").select_option("5")
    page.get_by_role("button", name="Add").click()
    expect(todos.get_by_role("checkbox", name="Buy milk")).to_be_visible()
    expect(page.get_by_label("New todo")).to_have_value("")
    page.get_by_label("New todo").fill("Write report")
    page.get_by_label("New todo").press("Enter")
    expect(todos.get_by_role("listitem")).to_have_count(2)
    expect(todos.get_by_role("listitem").first).to_contain_text("Write report")  # newest first

    page.get_by_role("checkbox", name="Buy milk").check()
    expect(page.get_by_role("checkbox", name="Buy milk")).to_be_checked()

    page.get_by_role("button", name="Edit Write report").click()
    expect(page.get_by_label("Title")).to_have_value("Write report")
    page.get_by_label("Title").fill("Write the report")
    page.get_by_label("Description").fill("by Friday")
    page.get_by_label("Priority").select_option("2")
    shoot(page, "todo-edit")
    page.get_by_role("button", name="Save").click()
    item = todos.get_by_role("listitem").filter(has_text="Write the report")
    expect(item).to_contain_text("by Friday")
    expect(item).to_contain_text("P2")

    # What the server holds is what the screen shows.
    with server.api() as api:
        token = ada.token(server)
        listed = api.get("/todos?sort=id", headers={"Authorization": f"Bearer {token}"}).json()
    assert [
        (t["title"], t["description"], t["priority"], t["complete"]) for t in listed["items"]
    ] == [
        ("Buy milk", "", 5, True),
        ("Write the report", "by Friday", 2, False),
    ]

    page.get_by_role("button", name="Delete Buy milk").click()
    expect(page.get_by_role("checkbox", name="Buy milk")).to_have_count(0)
    page.get_by_role("button", name="Undo").click()
    restored = page.get_by_role("checkbox", name="Buy milk")
    expect(restored).to_be_checked()  # the way back keeps what it had
    with server.api() as api:
        listed = api.get("/todos?sort=id", headers={"Authorization": f"Bearer {token}"}).json()
    assert [(t["title"], t["priority"], t["complete"]) for t in listed["items"]] == [
        ("Write the report", 2, False),
        ("Buy milk", 5, True),
    ]
    shoot(page, "todos")


def test_search_filters_and_sort(
    page: Page, server: Server, make_person: Callable[..., Person]
) -> None:
    bo = make_person("bo")
    add_todos(server, bo, "Buy milk", priority=1)
    add_todos(server, bo, "Call the bank", priority=5)
    add_todos(server, bo, "Buy stamps", priority=3, complete=True)
    add_todos(server, bo, "Answer mail", priority=5, description="about the milk order")
    sign_in(page, bo.username)
    items = page.get_by_role("list", name="Todos").get_by_role("listitem")
    expect(items).to_have_count(4)

    titles = items.locator(".todo-title")

    page.get_by_label("Search").fill("MILK")  # title or description, any case
    expect(titles).to_have_text(["Answer mail", "Buy milk"])
    page.get_by_label("Search").fill("")
    expect(items).to_have_count(4)

    page.get_by_role("radio", name="Done").check()
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("Buy stamps")
    page.get_by_role("radio", name="Open").check()
    expect(items).to_have_count(3)
    page.get_by_role("group", name="Filter by priority").get_by_role("radio", name="5").check()
    expect(items).to_have_count(2)
    page.get_by_role("radio", name="All").check()
    page.get_by_role("radio", name="Any").check()
    expect(items).to_have_count(4)

    page.get_by_label("Sort").select_option("title")
    expect(titles).to_have_text(["Answer mail", "Buy milk", "Buy stamps", "Call the bank"])
    page.get_by_label("Sort").select_option("-priority")  # ties: oldest first
    expect(titles).to_have_text(["Call the bank", "Answer mail", "Buy stamps", "Buy milk"])


def test_load_more_walks_every_page_once(
    page: Page, server: Server, make_person: Callable[..., Person]
) -> None:
    cy = make_person("cy")
    made = add_todos(server, cy, *(f"Task {n:02d}" for n in range(45)))
    sign_in(page, cy.username)
    items = page.get_by_role("list", name="Todos").get_by_role("listitem")
    expect(items).to_have_count(20)
    expect(page.get_by_text("Showing 20 of 45 todos")).to_be_visible()
    page.get_by_role("button", name="Load more").click()
    expect(items).to_have_count(40)
    page.get_by_role("button", name="Load more").click()
    expect(items).to_have_count(45)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    # Newest first, each once.
    expect(items.locator(".todo-title")).to_have_text([todo["title"] for todo in reversed(made)])


def test_field_errors_and_a_network_failure_keep_what_was_typed(
    page: Page, watch: Watch, make_person: Callable[..., Person]
) -> None:
    dee = make_person("dee")
    sign_in(page, dee.username)
    watch.allow(422)
    watch.allow_network_failures()

    too_long = "x" * 201
    title = page.get_by_label("New todo")
    title.evaluate("el => el.removeAttribute('maxlength')")  # as a pasted text could be
    title.fill(too_long)
    page.get_by_role("button", name="Add").click()
    expect(title).to_have_attribute("aria-invalid", "true")
    error_id = title.get_attribute("aria-describedby") or ""
    assert error_id
    expect(page.get_by_text("Use at most 200 characters.")).to_be_visible()
    expect(title).to_have_value(too_long)

    # The network goes away while adding: the text stays, the message says so.
    page.route("**/todos", lambda route: route.abort("internetdisconnected"))
    title.fill("Pay the rent")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("alert")).to_contain_text("Could not reach the server")
    expect(title).to_have_value("Pay the rent")
    page.unroute("**/todos")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("checkbox", name="Pay the rent")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)
