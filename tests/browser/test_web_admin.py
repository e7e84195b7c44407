"""The admin view: only for admins; users and every todo, by their accessible names."""

from collections.abc import Callable

from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import (
    Person,
    Server,
    add_todos,
    shoot,
    sign_in,
)


def admin_user_of(server: Server, admin: Person, user_id: int) -> dict[str, object]:
    with server.api() as api:
        headers = {"Authorization": f"Bearer {admin.token(server)}"}
        answer = api.get(f"/admin/users/{user_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    data: dict[str, object] = answer.json()
    return data


def test_non_admins_never_see_the_admin_view(
    page: Page, server: Server, make_person: Callable[..., Person]
) -> None:
    hal = make_person("hal")
    sign_in(page, hal.username)
    expect(page.get_by_role("link", name="Profile", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    page.goto(server.base + "/#/admin")
    expect(page.get_by_role("heading", name="Todos", level=1)).to_be_visible()
    expect(page.get_by_role("tab", name="Users")).to_have_count(0)


def accept(dialog: Dialog) -> None:
    dialog.accept()


def test_admin_searches_promotes_demotes_disables_enables_and_deletes(
    page: Page, server: Server, make_person: Callable[..., Person]
) -> None:
    root = make_person("root", role="admin")
    ivy = make_person("ivy")
    make_person("other")
    sign_in(page, root.username)
    page.get_by_role("link", name="Admin").click()
    expect(page.get_by_role("tab", name="Users")).to_have_attribute("aria-selected", "true")
    users = page.get_by_role("list", name="Users")

    page.get_by_label("Search users").fill(ivy.username.upper())
    expect(users.get_by_role("listitem")).to_have_count(1)
    expect(users).to_contain_text(ivy.email)
    shoot(page, "admin-users")

    page.get_by_role("button", name=f"Make {ivy.username} admin").click()
    expect(page.get_by_role("button", name=f"Demote {ivy.username}")).to_be_visible()
    assert admin_user_of(server, root, ivy.id)["role"] == "admin"
    page.get_by_role("button", name=f"Demote {ivy.username}").click()
    expect(page.get_by_role("button", name=f"Make {ivy.username} admin")).to_be_visible()
    assert admin_user_of(server, root, ivy.id)["role"] == "user"

    page.get_by_role("button", name=f"Disable {ivy.username}").click()
    expect(page.get_by_role("button", name=f"Enable {ivy.username}")).to_be_focused()
    assert admin_user_of(server, root, ivy.id)["is_active"] is False
    page.get_by_role("button", name=f"Enable {ivy.username}").click()
    expect(page.get_by_role("button", name=f"Disable {ivy.username}")).to_be_visible()
    assert admin_user_of(server, root, ivy.id)["is_active"] is True

    page.once("dialog", accept)
    page.get_by_role("button", name=f"Delete {ivy.username}").click()
    expect(users.get_by_role("listitem")).to_have_count(0)
    with server.api() as api:
        headers = {"Authorization": f"Bearer {root.token(server)}"}
        assert api.get(f"/admin/users/{ivy.id}", headers=headers).status_code == 404

    # The admin's own row offers nothing that would lock them out.
    page.get_by_label("Search users").fill(root.username)
    expect(users.get_by_role("listitem")).to_have_count(1)
    expect(page.get_by_role("button", name=f"Disable {root.username}")).to_have_count(0)
    expect(page.get_by_role("button", name=f"Delete {root.username}")).to_have_count(0)


def test_admin_sees_and_deletes_anyones_todos(
    page: Page, server: Server, make_person: Callable[..., Person]
) -> None:
    boss = make_person("boss", role="admin")
    jo = make_person("jo")
    [todo] = add_todos(server, jo, "Jo's secret plan")
    add_todos(server, boss, "Not a match")  # so that the search has something to leave out
    sign_in(page, boss.username)
    page.get_by_role("link", name="Admin").click()
    page.get_by_role("tab", name="Todos").click()
    everything = page.get_by_role("list", name="All todos")
    page.get_by_label("Search todos").fill("secret plan")
    expect(everything.get_by_role("listitem")).to_have_count(1)
    expect(everything).to_contain_text(jo.username)  # the owner, by name
    shoot(page, "admin-todos")
    page.once("dialog", accept)
    page.get_by_role("button", name="Delete Jo's secret plan").click()
    expect(everything.get_by_role("listitem")).to_have_count(0)
    with server.api() as api:
        headers = {"Authorization": f"Bearer {jo.token(server)}"}
        assert api.get(f"/todos/{todo['id']}", headers=headers).status_code == 404
