"""Print the README's config reference from the pydantic models (`--check README.md` verifies it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path, PurePath
from typing import Literal, get_args, get_origin

from pydantic import BaseModel

from edge_agent.config import Config

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def _toml(value: object) -> str:
    """As it is written in the config file: `protocol = 5` was refused where the table showed `5`, not
    `"5"` (a README review), and `True` is not TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, PurePath):
        value = str(value)
    if isinstance(value, (str, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _default(value: object) -> str:
    if isinstance(value, BaseModel):
        return ""
    if value is None or value == "":
        return "(unset)"
    return f"`{_toml(value)}`"


def reference() -> str:
    lines = [BEGIN, "", "| key | default | meaning |", "|---|---|---|"]
    for section_name, section_field in Config.model_fields.items():
        section_type = section_field.annotation
        assert isinstance(section_type, type) and issubclass(section_type, BaseModel)
        for key, field in section_type.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|")
            symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
            limits = [
                f"{symbols[name]} {getattr(m, name)}"
                for m in field.metadata
                for name in symbols
                if hasattr(m, name)
            ]
            if get_origin(field.annotation) is Literal:
                limits.append("one of " + ", ".join(f"`{_toml(v)}`" for v in get_args(field.annotation)))
            if limits:
                meaning = (meaning + " " if meaning else "") + "(" + ", ".join(limits) + ")"
            default = field.get_default(call_default_factory=True)  # a list field's factory gives []
            lines.append(f"| `{section_name}.{key}` | {_default(default)} | {meaning} |")
    lines += ["", END]
    return "\n".join(lines)


def main() -> int:
    text = reference()
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        readme = Path(sys.argv[2]).read_text(encoding="utf-8")
        start, end = readme.find(BEGIN), readme.find(END)
        if start < 0 or readme[start : end + len(END)] != text:
            print("README config reference is out of date: scripts/gen_config_reference.py --write README.md")
            return 1
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        path = Path(sys.argv[2])
        readme = path.read_text(encoding="utf-8")
        start, end = readme.find(BEGIN), readme.find(END)
        path.write_text(readme[:start] + text + readme[end + len(END) :], encoding="utf-8")
        return 0
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
