"""README.md stays true: its settings table is the service's settings model, its test command is what CI runs,
and every relative link in README.md and docs/*.md points at something that exists.

``python -m tests.test_readme`` prints a settings table from ``service.config.Settings`` (descriptions taken
from the model) to start from when a setting is added."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from service.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
EMPTY = {"", "–", "-"}  # how the table writes "no default": unset or an empty list

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
TABLE_ROW = re.compile(r"^\|\s*`(GAN_[A-Z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|\s*$", re.M)


# --- settings


def env_name(name: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def env_default(field: FieldInfo) -> str:
    """The default as one would write it in the environment ('' for unset or an empty list)."""
    value = field.get_default(call_default_factory=True)
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Path):
        return value.as_posix()
    return str(value)


def model_settings() -> dict[str, str]:
    return {env_name(name): env_default(field) for name, field in Settings.model_fields.items()}


def settings_table() -> str:
    """A Markdown table of every setting, from the model: the starting point for README's table."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = env_default(field)
        shown = f"`{default}`" if default else "–"
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{env_name(name)}` | {shown} | {meaning} |")
    return "\n".join(rows)


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}[ \t]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def readme_settings() -> dict[str, tuple[str, str]]:
    """``{variable: (default cell, meaning cell)}`` from README's settings table; fails on duplicates."""
    rows: dict[str, tuple[str, str]] = {}
    for name, default, meaning in TABLE_ROW.findall(section(README.read_text(), "Settings")):
        assert name not in rows, f"README's settings table lists {name} twice"
        rows[name] = (default.strip(), meaning.strip())
    return rows


def test_settings_table_lists_exactly_the_settings_model():
    documented, actual = set(readme_settings()), set(model_settings())
    problems = []
    if actual - documented:
        problems.append(
            f"missing from README's table: {sorted(actual - documented)} "
            "(python -m tests.test_readme prints rows to start from)"
        )
    if documented - actual:
        problems.append(f"in README's table but not in Settings: {sorted(documented - actual)}")
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize("name", sorted(model_settings()))
def test_settings_table_default_and_meaning(name: str):
    rows = readme_settings()
    if name not in rows:
        pytest.skip(f"{name} is not in the table (reported by the test above)")
    cell, meaning = rows[name]
    expected = model_settings()[name]
    if cell in EMPTY:
        written = ""
    else:
        code = re.fullmatch(r"`([^`]*)`", cell)
        assert code, f"{name}: write the default as `value` or –, not {cell!r}"
        written = code.group(1)
    assert written == expected, (
        f"{name}: README says default {written or '(unset)'!r}, Settings has {expected!r}"
    )
    assert meaning, f"{name}: the meaning column is empty"


# --- the commands CI runs


def test_readme_quotes_the_ci_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line and not line.startswith("#"))
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.M | re.S)
    assert any(command.strip() in block.splitlines() for block in blocks), (
        f"README.md must show .ci/run's test command exactly, as a line of a bash block:\n{command}"
    )


# --- links


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (without the -1, -2 suffixes of repeated headings)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    prose = CODE_SPAN.sub("code", FENCE.sub("", path.read_text()))
    return LINK.findall(prose)


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_relative_links_point_at_existing_files(doc: Path):
    broken = []
    for target in links(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            broken.append(f"{target} (absolute URL: link to the repository's files relatively)")
            continue
        if target.startswith("/"):
            broken.append(f"{target} (absolute path)")
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    assert not broken, f"{doc.relative_to(REPO_ROOT)}: " + "; ".join(broken)


def test_readme_has_links_to_check():
    assert len(links(README)) > 5  # the link pattern still matches README's links


if __name__ == "__main__":
    print(settings_table())
