"""What goes wrong with a page's layout on a phone or a tablet, measured in the browser.

Front desks run the portal on an iPad (768 and 1024 CSS px wide) and patients open their pages on phones (360, 390):
a page that scrolls sideways, a control pushed off the screen, a tap target too small to hit (WCAG 2.2 2.5.8:
24×24 CSS px, unless it sits in a sentence or has room around it), text under 12 px, a wide table with no box of its
own to scroll in. ``LAYOUT_PROBLEMS`` finds them in the page as it is laid out now; tests/test_layout.py asserts on
it, and ``python -m tests.layout_checks URL MANAGER DESK PASSWORD`` walks every page of a running demo with it
(``make run``) and prints a table, with screenshots of the worst pages in test-artifacts/layout/.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urljoin, urlsplit

WIDTHS = {360: 740, 390: 844, 768: 1024, 1024: 768}
# "small": under 24×24 but with room around it (WCAG 2.5.8's spacing exception), so not a failure, only a note.
KINDS = ("scroll", "offscreen", "overflow", "tap", "small", "text", "table")

# One list of problems: [kind, what, detail]. A box that scrolls on its own (overflow-x auto/scroll/hidden) keeps
# what is inside it; what is visually hidden (the skip link above the page, screen-reader-only text) is left out.
LAYOUT_PROBLEMS = r"""() => {
  const width = document.documentElement.clientWidth, problems = [];
  const name = el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (typeof el.className === "string" && el.className.trim() ? "." + el.className.trim().split(/\s+/).join(".") : "") +
    (el.getAttribute && el.getAttribute("href") ? "[href=" + el.getAttribute("href").slice(0, 40) + "]" : "") +
    (el.getAttribute && el.getAttribute("name") ? "[name=" + el.getAttribute("name") + "]" : "");
  const scrolls = el => ["auto", "scroll", "hidden", "clip"].includes(getComputedStyle(el).overflowX);
  const inScroller = el => {
    for (let node = el.parentElement; node && node !== document.body; node = node.parentElement)
      if (scrolls(node)) return true;
    return false; };
  const hidden = el => { for (let node = el; node; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (style.display === "none" || style.visibility === "hidden" || node.classList.contains("visually-hidden")
          || node.classList.contains("skip-link") || style.clip === "rect(0px, 0px, 0px, 0px)") return true; }
    const box = el.getBoundingClientRect(); return box.width === 0 && box.height === 0; };
  const overflow = document.documentElement.scrollWidth - width;
  if (overflow > 0) problems.push(["scroll", "document", overflow + "px wider than the window"]);

  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest("svg") && el.tagName.toLowerCase() !== "svg" || hidden(el) || inScroller(el)) continue;
    const box = el.getBoundingClientRect();
    if (box.right > width + 1 || box.left < -1)
      problems.push(["offscreen", name(el), Math.round(box.left) + ".." + Math.round(box.right)]);
    const style = getComputedStyle(el);
    if (style.overflowX === "visible" && el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
      problems.push(["overflow", name(el), "content " + el.scrollWidth + "px in " + el.clientWidth + "px"]);
  }

  // Tap targets: WCAG 2.5.8's exceptions: a link inside a sentence, or a 24 px circle around the target's centre
  // that touches no other target (and no other small target's circle).
  const targets = [...document.body.querySelectorAll(
    "a[href], button, input:not([type=hidden]), select, textarea, summary")].filter(el => !hidden(el));
  const boxes = targets.map(el => el.getBoundingClientRect());
  const small = boxes.map(box => box.width < 24 - 0.01 || box.height < 24 - 0.01);
  const inSentence = el => el.tagName === "A" && getComputedStyle(el).display === "inline" &&
    [...el.parentElement.childNodes].some(node => node !== el && node.nodeType === 3 && node.textContent.trim());
  const centre = box => [box.left + box.width / 2, box.top + box.height / 2];
  const distanceTo = ([x, y], box) =>
    Math.hypot(Math.max(box.left - x, 0, x - box.right), Math.max(box.top - y, 0, y - box.bottom));
  const apart = (a, b) => Math.hypot(centre(a)[0] - centre(b)[0], centre(a)[1] - centre(b)[1]);
  targets.forEach((el, i) => {
    if (!small[i] || inSentence(el)) return;
    const crowded = targets.some((other, j) => j !== i && !other.contains(el) && !el.contains(other) &&
      (distanceTo(centre(boxes[i]), boxes[j]) < 12 || (small[j] && apart(boxes[i], boxes[j]) < 24)));
    const size = Math.round(boxes[i].width) + "×" + Math.round(boxes[i].height);
    problems.push([crowded ? "tap" : "small", name(el), size]);
  });

  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || seen.has(el) || ["SCRIPT", "STYLE", "TITLE"].includes(el.tagName) || hidden(el))
      continue;
    seen.add(el);
    // An SVG chart's text is drawn at its font size times the chart's scale (its width over its viewBox's).
    const svg = el.closest("svg"), view = svg && svg.viewBox.baseVal;
    const scale = view && view.width ? svg.getBoundingClientRect().width / view.width : 1;
    const size = Math.round(parseFloat(getComputedStyle(el).fontSize) * scale * 10) / 10;
    if (size < 12) problems.push(["text", name(el), size + "px: " + node.textContent.trim().slice(0, 30)]);
  }

  for (const table of document.body.querySelectorAll("table")) {
    if (!hidden(table) && table.getBoundingClientRect().width > width && !inScroller(table))
      problems.push(["table", name(table), Math.round(table.getBoundingClientRect().width) + "px"]);
  }
  return problems;
}"""


def layout_problems(page) -> list[tuple[str, str, str]]:
    return [tuple(problem) for problem in page.evaluate(LAYOUT_PROBLEMS)]


# Links the walk does not follow: downloads, the API's JSON, what logs out.
SKIP = re.compile(r"\.(pdf|csv|json|svg|png|webp)$|^/api/v1/(?!docs)|^/logout|^/uploads/|^/brand\.css")


def route_of(path: str) -> str:
    """One page per route: /patients/12 and /patients/13 are the same page to look at."""
    return re.sub(r"/\d+", "/N", re.sub(r"/(p|r|v)/[^/]+", r"/\1/T", path))


def _links(page, base: str, selector: str) -> list[str]:
    found = []
    for href in page.eval_on_selector_all(selector, "links => links.map(a => a.getAttribute('href'))"):
        url = urljoin(page.url, href or "")
        parts = urlsplit(url)
        if url.startswith(base) and not SKIP.search(parts.path) and not parts.fragment:
            found.append(parts.path + (f"?{parts.query}" if parts.query else ""))
    return found


def walk(browser, base: str, manager: str, desk: str, password: str, public: list[str], folder: Path | None,
         extra: tuple[str, ...] = (), desk_codes: dict[str, str] | None = None):
    """Every staff page up to two links from the top bar (one per route) and the ``extra`` ones no link leads to (a
    redemption's receipt), the desk with each of ``desk_codes`` looked up, and ``public``, in English and Chinese at
    each of WIDTHS. Yields (language, who, path, width, problems)."""
    from tests.browser_harness import log_in

    for language in ("en", "zh_CN"):
        for who in (manager, desk):
            context = browser.new_context(base_url=base, viewport={"width": 1024, "height": 768}, is_mobile=True,
                                          has_touch=True, device_scale_factor=1)
            page = context.new_page()
            log_in(page, who, password)
            if page.locator(f"form.language-switch button[value={language}]").count():
                with page.expect_navigation():
                    page.click(f"form.language-switch button[value={language}]")
            # Two links deep from the top bar: the patients list, a patient, the patient's welcome slip.
            queue = [(path, 0) for path in dict.fromkeys(_links(page, base, "header.topbar a[href]") + list(extra))]
            routes = {route_of(path) for path, _ in queue}
            while queue:
                path, depth = queue.pop(0)
                page.goto(path)
                if depth < 2:
                    for link in _links(page, base, "main a[href]"):
                        if route_of(link) not in routes:
                            routes.add(route_of(link))
                            queue.append((link, depth + 1))
                yield from _measure(page, language, who, path, folder)
            yield from _desk(page, language, who, folder, desk_codes or {})
            context.close()
        context = browser.new_context(base_url=base, viewport={"width": 390, "height": 844}, is_mobile=True,
                                      has_touch=True, device_scale_factor=1)
        page = context.new_page()
        for path in public:
            page.goto(path + ("&" if "?" in path else "?") + f"lang={language}")
            yield from _measure(page, language, "public", path, folder)
        context.close()


def _desk(page, language, who, folder, desk_codes: dict[str, str]):
    """The desk with each code looked up (an offer and its form, a voucher), as the front desk sees it after a scan."""
    for kind, code in desk_codes.items():
        page.goto("/desk/")
        page.fill("#code", code)
        page.press("#code", "Enter")
        page.wait_for_selector("#desk-panel :is(form, .alert, .voucher, h2)", timeout=5000)
        yield from _measure(page, language, who, f"/desk/ ({kind} {code})", folder)




def _measure(page, language, who, path, folder):
    for width, height in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(50)
        problems = layout_problems(page)
        if problems and folder:
            slug = re.sub(r"[^a-z0-9]+", "-", f"{language}-{who.split('@')[0]}-{path}-{width}".lower()).strip("-")
            page.screenshot(path=str(folder / f"{slug}.png"), full_page=True)
        yield language, who.split("@")[0], path, width, problems


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    from tests.browser_harness import CHROMIUM, CHROMIUM_ARGS

    base, manager, desk, password, *rest = argv
    public = [item for item in rest if item.startswith(("/r/", "/p/", "/v/", "/leaderboard"))]
    extra = tuple(item for item in rest if item.startswith("/") and item not in public)
    desk_codes = dict(item.split("=", 1) for item in rest if "=" in item)
    folder = Path("test-artifacts/layout")
    folder.mkdir(parents=True, exist_ok=True)
    totals: Counter = Counter()
    pages_with: Counter = Counter()
    views = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for language, who, path, width, problems in walk(browser, base, manager, desk, password, public, folder,
                                                                 extra, desk_codes):
            views += 1
            kinds = Counter(kind for kind, _, _ in problems)
            totals.update(kinds)
            pages_with.update(kinds.keys())
            if problems:
                counts = " ".join(f"{kind}={kinds[kind]}" for kind in KINDS if kinds[kind])
                print(f"{language:5} {who:8} {width:4} {path}  {counts}")
                for kind, what, detail in sorted(set(problems))[:12]:
                    print(f"        {kind:9} {what[:90]}  {detail}")
        browser.close()
    print(f"\n{views} page×width views; per kind: problems (views with it)")
    for kind in KINDS:
        print(f"  {kind:9} {totals[kind]:5} ({pages_with[kind]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
