"""Checks every internal link of the built book: the page exists and so does the #anchor.

Usage: python3 scripts/docs/check_links.py BOOK_DIR
Prints one `ok`/`FAIL` line per page (a page passes when every link on it resolves), then
`N passed, M failed`. External links (http:, https:, mailto:, …) are listed by count, never fetched.
Exit 1 when a link is broken.
"""

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

BOOK = Path(sys.argv[1]).resolve()
# mdBook's own pages and assets: print.html repeats every page (its links are rewritten to anchors of
# itself and are checked like the rest); 404.html uses the site's absolute root, checked too.
SKIP_DIRS = {"css", "fonts", "FontAwesome", "searchindex"}


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("id", "name"):
            if attrs.get(name) and (name == "id" or tag == "a"):
                self.ids.add(attrs[name])
        for name in ("href", "src"):
            if attrs.get(name) is not None and tag in ("a", "img", "link", "script", "iframe"):
                self.links.append(attrs[name])


pages = {}


def parse(path):
    if path not in pages:
        page = Page()
        page.feed(path.read_text(errors="replace"))
        pages[path] = page
    return pages[path]


def resolve(source, link):
    """The problem with one link, or None when it resolves."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc:
        return "external"
    if not parts.path:
        target = source
    elif parts.path.startswith("/"):
        target = BOOK / unquote(parts.path).lstrip("/")
    else:
        target = (source.parent / unquote(parts.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    if BOOK not in target.parents and target != BOOK:
        return f"leaves the book: {link}"
    if not target.is_file():
        return f"no such page: {link}"
    if parts.fragment and target.suffix == ".html":
        if unquote(parts.fragment) not in parse(target).ids:
            return f"no anchor #{parts.fragment} in {target.relative_to(BOOK)}: {link}"
    return None


passed = failed = external = 0
for html in sorted(BOOK.rglob("*.html")):
    rel = html.relative_to(BOOK)
    if rel.parts[0] in SKIP_DIRS:
        continue
    problems = []
    for link in parse(html).links:
        if link.startswith(("mailto:", "javascript:", "data:")):
            continue
        problem = resolve(html, link)
        if problem == "external":
            external += 1
        elif problem:
            problems.append(problem)
    if problems:
        failed += 1
        print(f"FAIL {rel}")
        for problem in sorted(set(problems)):
            print(f"       {problem}")
    else:
        passed += 1
        print(f"ok   {rel}")

print(f"links: {len(pages)} pages read, {external} external links not fetched")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
