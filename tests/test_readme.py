"""The README documents every CSV column exactly as schema.py defines it."""

import importlib.util
import re

from conftest import REPO, SCRIPTS


def test_readme_column_tables_match_the_schema():
    spec = importlib.util.spec_from_file_location("update_readme", SCRIPTS / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (REPO / "README.md").read_text()
    assert module.columns_markdown() in readme, (
        "README column tables are stale: run python scripts/update_readme.py"
    )
    assert module.updated(readme) == readme


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_the_contents_list_every_section_and_every_link_leads_somewhere():
    readme = (REPO / "README.md").read_text()
    text = re.sub(r"^```.*?^```", "", readme, flags=re.S | re.M)  # (no code block)
    headings = re.findall(r"^(#{2,4}) (.+)$", text, flags=re.M)
    anchors = {_anchor(title) for _, title in headings}
    contents = readme.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"\]\(#([^)]+)\)", contents)
    sections = [_anchor(t) for level, t in headings if level == "##" and t != "Contents"]
    assert [a for a in listed if a in sections] == sections
    for target in re.findall(r"\]\(#([^)]+)\)", readme):
        assert target in anchors, target
    for target in re.findall(r"\]\((?!#|https?:)([^)#]+)", readme):
        assert (REPO / target).exists(), target
