"""The fleet inventory (one CSV row per board) and the config each board gets from the fleet template.

Required columns: tenant, site, class_id, device_id. Any other column named ``section.key`` (for example
``camera.source`` or ``mqtt.host``) overrides that key of the template for this board only. The whole file
is checked before any board is touched, and every problem is reported with its line number.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from edge_agent.config import Config, ConfigError, parse_config, to_toml, tomllib
from edge_agent.errors import InputRejected, ProvisioningError
from edge_agent.spreadsheet_text import read_spreadsheet_text

log = logging.getLogger(__name__)

REQUIRED = ("tenant", "site", "class_id", "device_id")
# The certificate CNs the shipped ACL gives back-end rights (its `user` blocks): never a board's id
BACK_END_NAMES = frozenset({"fleet-controller", "edge-receiver"})
# fullmatch, never match: "$" matches before a trailing newline
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_OVERRIDE = re.compile(r"^[a-z_]+\.[a-z_]+$")
_OPTIONAL_PATHS = (
    ("updates", "models_dir"),
    ("updates", "inbox_dir"),
    ("updates", "download_ca_file"),
    ("web", "tls_cert_file"),
    ("web", "tls_key_file"),
    ("web", "client_tokens_file"),
    ("metrics", "token_file"),
    ("metrics", "tls_cert_file"),
    ("metrics", "tls_key_file"),
    ("kt", "roster_file"),
)


@dataclass(frozen=True)
class Board:
    tenant: str
    site: str
    class_id: str
    device_id: str
    overrides: dict[str, str] = field(default_factory=dict)
    line: int = 0


def _rows(text: str, source: str) -> list[tuple[int, list[str]]]:
    """Every row with the line it starts on. A '"' without its closing one takes in the lines after it as
    one cell: past 131,072 characters (a stray '"' in a big inventory) csv.Error, a traceback (a review);
    before that, in the last column, those lines' boards became one board's value, refused (if at all) as
    "TOML syntax" at a line after them. Both are refused, naming the line; no config value spans lines."""
    reader = csv.reader(io.StringIO(text))
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            if any("\n" in cell for cell in row):
                raise ProvisioningError(f"{source}: line {start}: a cell runs over several lines"
                                        + _unclosed_quote(text, start))
            rows.append((reader.line_num, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ProvisioningError(f"{source}: line {start}: {exc}" + _unclosed_quote(text, start)) from exc
    return rows


def _unclosed_quote(text: str, line: int) -> str:
    lines = text.splitlines()
    if line > len(lines) or '"' not in lines[line - 1]:
        return ""
    return ("; a '\"' there without its closing one, perhaps, which takes in the lines after it: close it "
            "or delete it")


def _without_unnamed_columns(text: str, source: str) -> str:
    """Spreadsheets export the empty columns after the last one used (``...,device_id,,``); they were refused
    as "column(s)  appear twice" or "unknown column(s) ;". Unnamed columns with no value are dropped; one
    holding a value is refused by its number."""
    rows = _rows(text, source)
    header = rows[0][1] if rows else []
    unnamed = {i for i, name in enumerate(header) if not name.strip()}
    if not unnamed:
        return text
    for line, row in rows[1:]:
        used = sorted(i + 1 for i in unnamed if i < len(row) and row[i].strip())
        if used:
            raise ProvisioningError(
                f"{source}: column {used[0]} has no name in the header but line {line} has a value in it: "
                "name it (a config key like camera.source) or delete the column"
            )
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        [c for i, c in enumerate(row) if i not in unnamed] for _, row in rows
    )
    return out.getvalue()


def parse_inventory(text: str, source: str = "inventory") -> list[Board]:
    """Every board of the CSV; raise ProvisioningError listing all bad rows and duplicate device ids."""
    if text.lstrip("\ufeff").lower().startswith("sep="):  # was "header lacks column(s) tenant, site, ..."
        raise ProvisioningError(f"{source}: line 1 is Excel's 'sep=' line, not the header: remove Excel's "
                                "sep=, line (the header tenant,site,class_id,device_id must come first)")
    reader = csv.DictReader(io.StringIO(_without_unnamed_columns(text, source)))
    # "tenant, site, ..." (Excel keeps the spaces typed) and "Tenant,Site,..." name the same columns; they
    # were refused as lacking them
    header = [name.strip().lower() for name in reader.fieldnames or []]
    reader.fieldnames = header
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ProvisioningError(
            f"{source}: header lacks column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})"
            # Excel in a comma-decimal locale saves "CSV" with semicolons: the columns look present
            + ("; the columns are separated by ';': save the file as CSV with commas"
               if len(header) == 1 and ";" in header[0] else "")
        )
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:  # csv keeps the last one silently: which value did the author mean?
        raise ProvisioningError(f"{source}: column(s) {', '.join(repeated)} appear twice in the header")
    # A column that is no config key is named here, with the rows' problems: it was found only when the
    # first board's config was rendered, after those were fixed, as a line of the rendered config
    bad_columns = [c for c in header if c not in REQUIRED and not _is_config_key(c)]
    problems: list[str] = []
    if bad_columns:
        problems.append(f"line 1: unknown column(s) {', '.join(bad_columns)}; extra columns must be config "
                        "keys like camera.source (README, 'Config reference')")
    boards: list[Board] = []
    seen: dict[str, tuple[str, int]] = {}  # by the id in lower case: its first spelling and line
    for row in reader:
        line = reader.line_num
        if None in row or any(v is None for v in row.values()):
            problems.append(f"line {line}: wrong number of fields")
            continue
        values = {k: (v or "").strip() for k, v in row.items()}
        if not any(values.values()):
            continue  # ",,," : a spreadsheet's empty row
        # it became a board named "device_id", live on the broker; in another order, in capitals or after a
        # BOM too (round 2: "device_id,tenant,site,class_id" gave a board "class_id"); three names, as a
        # site may be called "site" (round 3)
        if len({values[c].lstrip("\ufeff").lower() for c in REQUIRED} & set(REQUIRED)) >= 3:
            problems.append(f"line {line}: the header row again (two inventories pasted together?): "
                            "delete it")
            continue
        bad = [c for c in REQUIRED if not _ID.fullmatch(values[c])]
        if bad:
            problems.append(
                f"line {line}: invalid {', '.join(bad)} (letters, digits, _ . - only, 1-64 chars)"
            )
            continue
        device = values["device_id"]
        if device in BACK_END_NAMES:
            problems.append(f"line {line}: device id {device!r} is the broker ACL's name for the fleet's "
                            "back end (provisioning/mosquitto/acl): a board under it would read every "
                            "board's data; choose another id")
            continue
        # B-01 and b-01 are one board's names: its .local and HTTPS names, and its folder on a disk that
        # ignores case
        if device.lower() in seen:
            first, at = seen[device.lower()]
            same = "" if first == device else f" as {first!r} (ids that differ only in case name one board)"
            problems.append(f"line {line}: device id {device!r} already used on line {at}{same}")
            continue
        seen[device.lower()] = (device, line)
        overrides = {k: v for k, v in values.items() if k not in REQUIRED and v != ""}
        boards.append(Board(values["tenant"], values["site"], values["class_id"], device, overrides, line))
    if problems:
        raise ProvisioningError(f"{source}: " + "; ".join(problems))
    if not boards:
        raise ProvisioningError(f"{source}: no boards listed")
    _warn_of_shared_classrooms(boards, source)
    return boards


def _warn_of_shared_classrooms(boards: list[Board], source: str) -> None:
    """A class_id on two boards of one site is two boards in one room, or a row copied and not changed:
    their windows are reported as one class's. Warned of, not refused (a big room may have two cameras)."""
    first: dict[tuple[str, str, str], Board] = {}
    for board in boards:
        room = (board.tenant, board.site, board.class_id)
        if room not in first:
            first[room] = board
            continue
        other = first[room]
        log.warning("%s: line %d (%s) and line %d (%s) both have class_id %r at %s/%s: two boards in one "
                    "room? If not, correct the class_id of one (their data would count as one class's)",
                    source, other.line, other.device_id, board.line, board.device_id, board.class_id,
                    board.tenant, board.site)


def _is_config_key(column: str) -> bool:
    if not _OVERRIDE.fullmatch(column):
        return False
    section, _, name = column.partition(".")
    if section == "device" and name in REQUIRED:  # device.tenant beside tenant: which one? (round 4)
        return False
    model = Config.model_fields.get(section)
    return model is not None and name in getattr(model.annotation, "model_fields", {})


def load_inventory(path: Path) -> list[Board]:
    try:
        text = read_spreadsheet_text(path)
    except InputRejected as exc:
        raise ProvisioningError(f"fleet inventory: {exc}") from exc
    return parse_inventory(text, str(path))


def _coerce(section: str, name: str, text: str) -> Any:
    """A CSV cell as the value the config key expects: kept as text for string keys (camera.source "0"),
    else read as the TOML value it spells (number, boolean)."""
    model = Config.model_fields.get(section)
    field_info = model.annotation.model_fields.get(name) if model and model.annotation else None  # type: ignore[union-attr]
    if field_info is not None and _wants_text(field_info.annotation):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _wants_text(annotation: Any) -> bool:
    """A text key: str or Path, a Literal of strings (mqtt.protocol "5", read as TOML it is the number 5),
    or one of them or None."""
    if annotation in (str, Path):
        return True
    origin, args = get_origin(annotation), [a for a in get_args(annotation) if a is not type(None)]
    if origin is Literal:
        return all(isinstance(a, str) for a in args)
    return origin in (Union, UnionType) and bool(args) and all(_wants_text(a) for a in args)


def render_config(template_text: str, board: Board, prefix: Path = Path("/")) -> tuple[str, Config]:
    """The board's config.toml text, validated. ``prefix`` re-roots every path (for checks on a target
    root); the files written to a board always use ``/``."""
    try:
        data: dict[str, Any] = tomllib.loads(template_text)
    except tomllib.TOMLDecodeError as exc:
        raise ProvisioningError(f"fleet template is not valid TOML: {exc}") from exc
    device = data.setdefault("device", {})
    device.update(tenant=board.tenant, site=board.site, class_id=board.class_id, device_id=board.device_id)
    for key, value in board.overrides.items():
        section, name = key.split(".", 1)
        data.setdefault(section, {})[name] = _coerce(section, name, value)
    root = "/" + str(prefix).strip("/") if str(prefix) != "/" else ""
    paths = data.setdefault("paths", {})
    paths.setdefault("state_dir", "/var/lib/edge-agent")
    paths.setdefault("cache_dir", "/var/cache/edge-agent")
    data.setdefault("mqtt", {})
    defaults = {
        ("device", "pseudonym_secret_file"): "/etc/edge-agent/secrets/pseudonym.key",
        ("mqtt", "ca_file"): "/etc/edge-agent/certs/ca.pem",
        ("mqtt", "cert_file"): "/etc/edge-agent/certs/device.pem",
        ("mqtt", "key_file"): "/etc/edge-agent/secrets/device.key",
        ("web", "token_file"): "/etc/edge-agent/secrets/web.token",
        ("updates", "public_key_file"): "/etc/edge-agent/model-signing.pub",
    }
    for (section, name), value in defaults.items():
        data.setdefault(section, {}).setdefault(name, value)
    if root:
        for section, name in [*defaults, ("paths", "state_dir"), ("paths", "cache_dir")]:
            data[section][name] = root + str(data[section][name])
        for section, name in _OPTIONAL_PATHS:  # re-rooted only where the template sets them
            if data.get(section, {}).get(name):
                data[section][name] = root + str(data[section][name])
    text = "# Rendered by edge-agent-provision from the fleet template; edit the template, not this file.\n"
    text += to_toml(data)
    try:
        config = parse_config(text, source=f"config for {board.device_id}")
    except ConfigError as exc:
        raise ProvisioningError(f"board {board.device_id} (inventory line {board.line}): {exc}") from exc
    return text, config
