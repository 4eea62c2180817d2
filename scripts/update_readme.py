#!/usr/bin/env python3
"""Regenerate the README's column tables from scripts/iotsig/schema.py."""

import re
from pathlib import Path

from iotsig.schema import ALL_TABLES

README = Path(__file__).resolve().parent.parent / "README.md"


def columns_markdown() -> str:
    return "\n".join(f"### {t.name} CSV\n\n{t.markdown()}\n" for t in ALL_TABLES)


def updated(text: str) -> str:
    return re.sub(
        r"(<!-- columns:start -->\n).*?(<!-- columns:end -->)",
        lambda m: m.group(1) + columns_markdown() + "\n" + m.group(2),
        text,
        flags=re.S,
    )


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__).parse_args()
    README.write_text(updated(README.read_text()))
