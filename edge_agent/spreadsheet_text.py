"""Text files a school makes in a spreadsheet (the fleet inventory, student lists, the item bank): UTF-8, or a
refusal that names what the file most likely is and how to convert it.

Excel's "CSV" on a Chinese Windows is GBK and its "Unicode text" UTF-16; read as UTF-8 either failed with
a codec error, and GBK was named for every file, where iconv -f GBK failed on UTF-16 (a review).
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

from edge_agent.errors import InputRejected

SAVE_AS = "in Excel save it as \"CSV UTF-8 (Comma delimited)\""
_EURO = "edge_agent.cp936_euro"


def _cp936_euro(exc: UnicodeError) -> tuple[str, int]:
    """Windows' code page 936 is GBK with '€' at the lone byte 0x80, which Python's gbk lacks (a file with a
    price in it was "an unknown encoding"); glibc's iconv -f GBK takes it."""
    if isinstance(exc, UnicodeDecodeError) and exc.object[exc.start:exc.start + 1] == b"\x80":
        return "€", exc.start + 1
    raise exc


codecs.register_error(_EURO, _cp936_euro)


def likely_encoding(data: bytes, path: Path) -> str:
    """What bytes that are not UTF-8 most likely are, with the conversion to name."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return f"UTF-16, Excel's \"Unicode text\"; or convert it: iconv -f UTF-16 -t UTF-8 {path}"
    try:
        data.decode("gbk", errors=_EURO)
        return f"GBK, perhaps, a Chinese Windows' CSV; or convert it: iconv -f GBK -t UTF-8 {path}"
    except UnicodeDecodeError:
        pass
    try:  # GBK's superset (WPS and newer Excel write it): 䶮 and other characters GBK lacks
        data.decode("gb18030")
        return f"GB18030, perhaps, a Chinese Windows' CSV; or convert it: iconv -f GB18030 -t UTF-8 {path}"
    except UnicodeDecodeError:
        return "an unknown encoding, perhaps Windows-1252"


def read_spreadsheet_text(path: Path) -> str:
    """The file's text (a UTF-8 byte-order mark dropped, line ends made "\n" as Python's text mode does: the
    csv module refuses an old Mac's lone CR); InputRejected when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputRejected(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputRejected(f"{path} is not UTF-8 text ({likely_encoding(data, path)}); {SAVE_AS}") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def csv_rows(text: str, where: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header row's column names (stripped) and each row after it with the line it starts on.

    InputRejected where the csv module cannot split the text, or a cell runs over several lines: a '"'
    without its closing one swallows the lines after it into one cell (a review: 5 item rows read as 2
    without a word, and past 131,072 characters csv.Error, a traceback)."""
    reader = csv.DictReader(io.StringIO(text))
    rows: list[tuple[int, dict[str, str]]] = []
    start = 1
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        start = reader.line_num + 1
        for row in reader:
            # DictReader puts cells past the header's last column under None: "Q1,1,解方程, 移项,moving
            # terms" (a ',' typed inside a title) was titled "解方程" in Chinese and "移项" in English, the
            # rest dropped without a word (a review). Empty ones (a trailing ',') lose nothing.
            if any(extra.strip() for extra in row.get(None) or ()):
                raise InputRejected(f"{where} line {start}: more cells than the header has columns; a ',' "
                                    "inside a cell needs quotes around the cell (\"a, b\"), or type '，'")
            cells = {k: v or "" for k, v in row.items() if isinstance(k, str)}
            if any("\n" in v for v in cells.values()):
                raise InputRejected(f"{where} line {start}: a cell runs over several lines; a '\"' without "
                                    "its closing one, perhaps")
            rows.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputRejected(f"{where} line {start}: {exc}; a '\"' without its closing one, perhaps") from exc
    return columns, rows
