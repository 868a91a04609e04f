"""Writes the values table of charts/sensorpipe/README.md from the `# --` comments in values.yaml.

A key with a `# --` comment above it is one row (its whole subtree is its default); a key without one is described
through its children. Every value must end up in a row: a value without a description fails the generator, so the
table cannot fall behind the chart. The table sits between the `values:begin` / `values:end` markers.

    chart_values_doc.py VALUES_YAML README_IN README_OUT
"""

from __future__ import annotations

import json
import re
import sys

import yaml

BEGIN, END = "<!-- values:begin -->", "<!-- values:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):")


def descriptions(text: str) -> dict[str, str]:
    """Maps dotted key paths to their `# --` description."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending is not None:
            pending.append(stripped[1:].strip())
            continue
        m = KEY.match(line)
        if not m:
            if stripped and not stripped.startswith("-"):
                pending = None
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m["key"]))
        if pending is not None:
            out[".".join(k for _, k in stack)] = " ".join(pending)
            pending = None
    return out


def rows(values: dict, docs: dict[str, str], prefix: str = "") -> list[tuple[str, str, str]]:
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in docs:
            out.append((path, json.dumps(value), docs[path]))
        elif isinstance(value, dict) and value:
            out.extend(rows(value, docs, path + "."))
        else:
            raise SystemExit(f"values.yaml: `{path}` has no `# --` description")
    return out


def table(values_text: str) -> str:
    docs = descriptions(values_text)
    lines = ["| Key | Default | Description |", "|---|---|---|"]
    for path, default, text in rows(yaml.safe_load(values_text), docs):
        default, text = default.replace("|", "\\|"), text.replace("|", "\\|")
        lines.append(f"| `{path}` | `{default}` | {text} |")
    return "\n".join(lines)


def main() -> None:
    values_path, readme_in, readme_out = sys.argv[1:4]
    values_text = open(values_path, encoding="utf-8").read()
    readme = open(readme_in, encoding="utf-8").read()
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(readme_out, "w", encoding="utf-8") as f:
        f.write(f"{head}{BEGIN}\n{table(values_text)}\n{END}{tail}")


if __name__ == "__main__":
    main()
