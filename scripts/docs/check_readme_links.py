"""Checks the relative links of a Markdown file outside the book (README.md): the file exists and, for a
`#anchor` into a Markdown file, a heading with that GitHub-style slug exists.

Usage: python3 scripts/docs/check_readme_links.py FILE.md
Prints `N passed, M failed` (one per link); exit 1 when a link is broken. External links are not fetched.
"""

import re
import sys
from pathlib import Path

source = Path(sys.argv[1]).resolve()


def slugs(markdown):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', repeats numbered."""
    seen, out = {}, set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip()
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


text = source.read_text()
text_outside_code = re.sub(r"```.*?```", "", text, flags=re.S)
passed = failed = 0
for target in re.findall(r"\]\(([^)\s]+)\)", text_outside_code):
    if re.match(r"^[a-z]+:", target):
        continue
    path, _, anchor = target.partition("#")
    file = (source.parent / path).resolve() if path else source
    problem = None
    if not file.exists():
        problem = "no such file"
    elif anchor and file.suffix == ".md" and anchor not in slugs(file.read_text()):
        problem = f"no heading #{anchor}"
    if problem:
        failed += 1
        print(f"FAIL {source.name}: {target}: {problem}")
    else:
        passed += 1
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
