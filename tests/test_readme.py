"""The README documents every CSV column exactly as schema.py defines it."""

import importlib.util

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
