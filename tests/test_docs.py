"""The docs hold together: every relative link in README.md and docs/ reaches a file (and a heading, when it names
one), and every docs/ page that the code, the benchmarks or the build files name exists. No model loads."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
NAMED = re.compile(r"\bdocs/[\w./-]+\.md(?:#[\w-]+)?")  # a docs page (and heading) named in code or a message


def prose(text: str):
    """The lines of a Markdown page outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation (backticks, dots, colons ...) dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set:
    found, seen = set(), {}
    for line in prose(page.read_text(encoding="utf-8")):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")  # GitHub numbers a repeated heading: -1, -2 ...
            seen[base] = n + 1
    return found


def broken(target: str, page: Path) -> str:
    """Why `target` (a link as written on `page`) leads nowhere, or ""."""
    path, _, anchor = target.partition("#")
    where = (page.parent / path).resolve() if path else page
    if not where.exists():
        return f"{target}: no file {where.relative_to(ROOT) if where.is_relative_to(ROOT) else where}"
    if anchor and where.suffix == ".md" and anchor not in anchors(where):
        return f"{target}: {where.relative_to(ROOT)} has no heading #{anchor}"
    return ""


def links(page: Path):
    for line in prose(page.read_text(encoding="utf-8")):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):  # code spans hold examples, not links
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... are not ours to check
                yield target


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    problems = [why for target in links(page) if (why := broken(target, page))]
    assert not problems, "\n".join(problems)


def test_the_docs_pages_named_in_code_exist():
    named = [ROOT / "Makefile", ROOT / "pyproject.toml"]
    named += [p for d in ("src", "benchmarks", "tests") for p in sorted((ROOT / d).rglob("*.py"))]
    named += sorted((ROOT / "src").rglob("*.yaml"))
    problems = [
        f"{source.relative_to(ROOT)}: {why}"
        for source in named
        for target in NAMED.findall(source.read_text(encoding="utf-8"))
        if (why := broken(target, ROOT / "README.md"))
    ]
    assert not problems, "\n".join(problems)


def test_the_link_check_sees_a_broken_link_and_a_missing_heading(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Top `x`: y\n\n## Top `x`: y\n\n```\n# not a heading\n```\n")
    page = tmp_path / "b.md"
    assert anchors(tmp_path / "a.md") == {"top-x-y", "top-x-y-1"}
    assert broken("a.md#top-x-y-1", page) == ""
    assert "has no heading #not-a-heading" in broken("a.md#not-a-heading", page)
    assert "no file c.md" in broken("c.md", page)
    page.write_text("[ok](a.md) `[code](nowhere.md)` [web](https://example.org/x.md)\n```\n[fenced](gone.md)\n```\n")
    assert list(links(page)) == ["a.md"]


@pytest.mark.parametrize("page", ["README.md", "docs/training.md"])
def test_the_group_tables_name_every_option(page):
    """Each page's table of config groups lists every option of every group: its YAML files, and the methods."""
    from ftlab.config.compose import groups

    lines = (ROOT / page).read_text().splitlines()
    rows = {line.split("|")[1].strip(" `"): line for line in lines if line.startswith("| `")}
    missing = [f"{g}={o}" for g, options in groups().items() for o in options if f"`{o}`" not in rows.get(g, "")]
    assert not missing, f"{page}'s table of config groups lacks {', '.join(missing)}"
