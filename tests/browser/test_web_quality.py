"""Keyboard-only use, visible focus, WCAG AA contrast, phones, and what the page loads."""

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.conftest import PHONE, Person, Server, add_todos, shoot, sign_in

# The WCAG 2 contrast of every visible piece of text against what is behind it.
CONTRAST_PROBLEMS = """
() => {
  const parse = (value) => {
    const m = value.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a),
    a: 1,
  });
  const luminance = ({ r, g, b }) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let colour = { r: 255, g: 255, b: 255, a: 1 };
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const problems = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.clip === "rect(0px, 0px, 0px, 0px)") continue;
    if (el.closest(".visually-hidden, [aria-disabled='true']")) continue;
    const back = background(el);
    const fore = over(parse(style.color), back);
    const [hi, lo] = [luminance(fore), luminance(back)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      problems.push(`${el.tagName} "${el.textContent.trim().slice(0, 40)}": ${ratio.toFixed(2)}`);
    }
  }
  return problems;
}
"""

FOCUS_RING = """
() => {
  let el = document.activeElement;
  if (!el || el === document.body) return "nothing focused";
  // A radio button of a segmented control is drawn by its label.
  if (el.type === "radio") el = el.closest("label");
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
  const ring = style.boxShadow && style.boxShadow !== "none";
  return outline || ring ? "" : `${el.tagName} ${el.getAttribute("aria-label") || el.textContent}`;
}
"""


def focused_name(page: Page) -> str:
    name: str = page.evaluate(
        "() => { const el = document.activeElement;"
        " return el.getAttribute('aria-label') || (el.labels && el.labels[0]"
        " ? el.labels[0].textContent : el.textContent || '').trim(); }"
    )
    return name


def tab_to(page: Page, name: str, limit: int = 30) -> None:
    """Press Tab until the element named `name` has the focus; each stop shows a ring."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        assert page.evaluate(FOCUS_RING) == "", f"no visible focus on {focused_name(page)!r}"
        if focused_name(page) == name:
            return
    raise AssertionError(f"{name!r} is not reachable with Tab")


def test_keyboard_only_from_sign_in_to_delete(
    page: Page, make_person: Callable[..., Person]
) -> None:
    lee = make_person("lee")
    expect(page.get_by_label("Username or email")).to_be_focused()
    page.keyboard.type(lee.username)
    page.keyboard.press("Tab")
    page.keyboard.type(lee.password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Todos", level=1)).to_be_focused()

    tab_to(page, "New todo")
    page.keyboard.type("Typed, not clicked")
    page.keyboard.press("Enter")
    box = page.get_by_role("checkbox", name="Typed, not clicked")
    expect(box).to_be_visible()
    expect(page.get_by_label("New todo")).to_be_focused()

    tab_to(page, "Typed, not clicked")
    page.keyboard.press("Space")
    expect(box).to_be_checked()
    tab_to(page, "Edit Typed, not clicked")
    page.keyboard.press("Enter")
    expect(page.get_by_label("Title")).to_be_focused()
    page.keyboard.press("End")
    page.keyboard.type(" (edited)")
    page.keyboard.press("Enter")
    expect(page.get_by_role("checkbox", name="Typed, not clicked (edited)")).to_be_checked()

    tab_to(page, "Delete Typed, not clicked (edited)")
    page.keyboard.press("Enter")
    expect(page.get_by_role("checkbox", name="Typed, not clicked (edited)")).to_have_count(0)
    expect(page.get_by_label("New todo")).to_be_focused()  # the focus is not lost

    # The filters are reachable too: arrow keys move within a radio group.
    tab_to(page, "All")
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("radio", name="Open")).to_be_checked()


def test_text_contrast_meets_wcag_aa_on_every_screen(
    page: Page, server: Server, make_person: Callable[..., Person]
) -> None:
    mo = make_person("mo", role="admin")
    for priority in range(1, 6):
        add_todos(server, mo, f"Priority {priority} task", priority=priority)
    add_todos(server, mo, "Finished one", complete=True, description="with a description")

    def check(screen: str) -> None:
        problems = page.evaluate(CONTRAST_PROBLEMS)
        assert problems == [], f"{screen}: {problems}"

    check("sign in")
    page.get_by_role("link", name="Create account").click()
    expect(page.get_by_role("button", name="Create account")).to_be_visible()
    check("sign up")
    page.get_by_role("link", name="Sign in").click()
    sign_in(page, mo.username)
    expect(page.get_by_role("checkbox", name="Finished one")).to_be_checked()
    check("todos")
    page.get_by_role("link", name="Profile", exact=True).click()
    expect(page.get_by_label("Username")).to_have_value(mo.username)
    check("profile")
    page.get_by_role("link", name="Admin").click()
    expect(page.get_by_role("list", name="Users").get_by_role("listitem").first).to_be_visible()
    check("admin")


def test_every_screen_fits_a_phone_and_is_photographed(
    page: Page, server: Server, make_person: Callable[..., Person]
) -> None:
    ned = make_person("ned", role="admin")
    add_todos(
        server, ned, "A todo with a rather long name that has to wrap on a small phone screen"
    )
    add_todos(server, ned, "Short one", priority=5, description="and a description")

    def fits(name: str) -> None:
        size = page.viewport_size
        page.set_viewport_size(PHONE)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: {overflow}px wider than a phone"
        if size:
            page.set_viewport_size(size)
        shoot(page, name)

    fits("sign-in")
    page.get_by_role("link", name="Forgot password?").click()
    expect(page.get_by_role("button", name="Send reset link")).to_be_visible()
    fits("forgot-password")
    page.goto(server.base + "/#/sign-up")
    expect(page.get_by_role("button", name="Create account")).to_be_visible()
    fits("sign-up")
    page.goto(server.base + "/#/sign-in")
    sign_in(page, ned.username)
    expect(page.get_by_role("checkbox", name="Short one")).to_be_visible()
    fits("todos")
    page.get_by_role("button", name="Edit Short one").click()
    expect(page.get_by_label("Title")).to_have_value("Short one")
    fits("edit-todo")
    page.get_by_role("link", name="Profile", exact=True).click()
    expect(page.get_by_label("Username")).to_have_value(ned.username)
    fits("profile")
    page.get_by_role("link", name="Admin").click()
    expect(page.get_by_role("list", name="Users").get_by_role("listitem").first).to_be_visible()
    fits("admin-users")
    page.get_by_role("tab", name="Todos").click()
    expect(page.get_by_role("list", name="All todos").get_by_role("listitem").first).to_be_visible()
    fits("admin-todos")
