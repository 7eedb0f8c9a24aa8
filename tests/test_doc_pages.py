"""docs/architecture.md names real files, and every module of the package."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "architecture.md"


def test_every_path_the_architecture_page_names_exists():
    text = DOC.read_text()
    paths = set(
        re.findall(
            r"\b((?:src/nanogpt|configs|scripts|benchmarks|tests|docs)/[\w/.-]+\.(?:py|yaml|md))\b", text
        )
    )
    assert len(paths) > 20  # the page names the modules by their paths
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}; update the page"


def test_the_architecture_page_names_every_module_and_notebook():
    text = DOC.read_text()
    package = ROOT / "src" / "nanogpt"
    # by its path in the package (training/record.py), as names repeat across wings (cli/train.py)
    modules = [p for p in package.rglob("*.py") if p.name != "__init__.py" or p.parent.name == "loggers"]
    named = {m.replace("src/nanogpt/", "") for m in re.findall(r"[\w/]+\.py", text)} | tree_paths(text)
    unnamed = sorted(str(p.relative_to(package)) for p in modules if str(p.relative_to(package)) not in named)
    assert not unnamed, f"docs/architecture.md does not say where these modules fit: {unnamed}"
    notebooks = [p.stem for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    assert all(name in text for name in notebooks), f"add the notebooks to docs/architecture.md: {notebooks}"


def tree_paths(text: str) -> set[str]:
    """The paths an annotated file tree (``├── name``) spells, each joined to its parents."""
    paths, stack = set(), []
    for line in text.splitlines():
        # the names before the comment: "├── sample.py evaluate.py   what they are"
        match = re.match(r"^([│ ]*)[├└]── (.+?)(?:\s{2,}|$)", line)
        if not match:
            continue
        depth, names = len(match.group(1)) // 4, match.group(2).split()
        stack[depth:] = [names[0]]
        paths.update("".join(stack[:depth]) + name for name in names)
    return paths


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(
        r"```.*?```", "", page.read_text(), flags=re.S
    )  # a "# comment" in a code block is no heading
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_every_link_between_the_readme_and_the_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "broken links; fix the link or the heading:\n" + "\n".join(broken)
