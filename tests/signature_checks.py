"""Helpers shared by test_main.py and test_signature_extractor.py: reading pattern.txt by
section, loading profiles, and the checks every run must pass."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from iotsig.profile import validate_profile

HANDWRITTEN_PROFILE = Path(__file__).resolve().parent / "profiles" / "tplink-plug" / "profile.yaml"
DOMAIN = "use1-api.tplinkra.com"
OUTPUTS = ("pattern.txt", "profile.yaml", "signature.csv")
C_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
NO_BASELINE = "could not be told apart"


def sections(pattern_text: str) -> dict[str, str]:
    """pattern.txt's sections by the first word of their title: 'Event', 'Background' or
    'Likely' (the background section), 'Left'; the header is under ''."""
    parts = re.split(r"^={78}\n(.*)\n={78}\n", pattern_text, flags=re.M)
    found = {"": parts[0]}
    for title, body in zip(parts[1::2], parts[2::2]):
        found[title.split()[0]] = title + "\n" + body
    return found


def block_names(section: str) -> list[str]:
    """The pattern names of a section's numbered blocks, in order."""
    return re.findall(r"^\d+\. (\S+)$", section, flags=re.M)


def background_section(pattern_text: str) -> str:
    found = sections(pattern_text)
    return found.get("Background") or found["Likely"]


def load_profile(path: Path) -> dict:
    """profile.yaml as the firewall needs it: loads with yaml.safe_load, and checks."""
    profile = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    assert validate_profile(profile) == []
    return profile


class IncludeLoader(yaml.SafeLoader):
    """Loads the hand-written profiles, which use the firewall's `!include path#key` tag.
    The included Amazon Echo profile is not copied here, so its address and MAC stand in
    as documentation values (TEST-NET-1, a locally administered MAC)."""


def _include(loader, node):
    key = loader.construct_scalar(node).rpartition("#")[2]
    return {"device-info.ipv4": "192.0.2.1", "device-info.mac": "02:00:00:00:00:01"}[key]


IncludeLoader.add_constructor("!include", _include)


def load_handwritten() -> dict:
    return yaml.load(HANDWRITTEN_PROFILE.read_text(encoding="utf-8"), Loader=IncludeLoader)


def policy_names(profile: dict) -> list[str]:
    names = list(profile.get("single-policies") or {})
    for interaction in (profile.get("interactions") or {}).values():
        names += list(interaction)
    return names


def strings_in(value) -> list[str]:
    """Every string in a loaded YAML document, keys included."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return [value] if isinstance(value, str) else []


def assert_clean_run(result, output_dir: Path | None = None) -> None:
    """No traceback, every message one line in the `PROG: level: ...` style, and no
    unfinished (.part) file left in the output directory."""
    assert "Traceback" not in result.stdout + result.stderr
    for line in result.stderr.splitlines():  # (a usage error too: no usage block)
        assert re.match(r"^[\w.-]+\.py: (warning|error): \S", line), line
    if output_dir is not None and Path(output_dir).exists():
        leftovers = [p.name for p in Path(output_dir).rglob("*") if p.name.endswith(".part")]
        assert leftovers == []


def assert_no_outputs(output_dir: Path) -> None:
    for name in OUTPUTS:
        assert not (Path(output_dir) / name).exists(), name
