"""The package, its docs and its README stand alone: no pointer to design notes or trackers a clone lacks, and
every section the code cites (docs/design.md §N) exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared|shared/notes|\b[Ii]ssue \d+|\(issue\b|#1\d\b")


def _texts():
    for path in [*sorted((ROOT / "src").rglob("*.py")), *sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        yield path, path.read_text(encoding="utf-8")


def test_nothing_points_outside_the_repository():
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path, text in _texts()
            for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "references outside the repository:\n" + "\n".join(hits)


def test_cited_design_sections_exist():
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (§\d+)", design, flags=re.M))
    cited = {f"§{n}" for _, text in _texts() for n in re.findall(r"docs/design\.md §(\d+)", text)}
    assert cited and cited <= sections, f"cited {sorted(cited - sections)} missing from docs/design.md"
