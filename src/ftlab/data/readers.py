"""One local file to (where, row) pairs: its kind by name, decompressed if .gz/.zst, then read as JSONL, JSON,
CSV, Parquet or plain text, every bad row reported to `Problems` with the place to fix."""

import csv
import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from ftlab.data.rows import COMPRESSED as _COMPRESSED
from ftlab.data.rows import Problems
from ftlab.utils.errors import FtlabError, first_line

SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".txt")
# the text-based kinds may come compressed (rows.COMPRESSED); Parquet compresses its pages itself, so never outside
_COMPRESSIBLE = tuple(s for s in SUFFIXES if s != ".parquet")
_KINDS = f"{', '.join(SUFFIXES)} (all but .parquet also as .gz or .zst)"
# zstd comes from pyarrow's codec, already a dependency; PyPI wheels of pyarrow always build it in
_ZSTD = pa.Codec.is_available("zstd")


def file_kind(path: Path) -> Optional[Tuple[str, Optional[str]]]:
    """(data suffix, compression suffix or None) by the file's name, e.g. ('.jsonl', '.gz'); None: not data."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSED and suffixes[-2] in _COMPRESSIBLE:
        return suffixes[-2], suffixes[-1]
    if suffixes and suffixes[-1] in SUFFIXES:
        return suffixes[-1], None
    return None


def _shown_suffix(path: Path) -> str:
    """The suffix a message names: '.xlsx', or both parts of a compressed one ('.parquet.gz')."""
    suffixes = path.suffixes
    return "".join(suffixes[-2:]) if suffixes and suffixes[-1].lower() in _COMPRESSED else path.suffix


def read_file(path: Path, problems: Problems, text_column: str = "text", per_line: bool = False) -> List[tuple]:
    """(where, row) pairs of one file, by its suffix (decompressed first); every row a dict. A .txt file gives
    {text_column: text} rows: the whole file, or each non-empty line with per_line."""
    kind = file_kind(path)
    if kind is None:
        raise FtlabError(f"{path}: unsupported file type '{_shown_suffix(path)}'; use {_KINDS}")
    suffix, compression = kind
    if suffix == ".parquet":
        return _read_parquet(path)
    raw = _decompress(path, path.read_bytes(), compression)
    if suffix == ".txt":
        rows = _read_text(path, raw, problems, text_column, per_line)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _read_json_lines(path, raw, problems)
    else:
        text = _decode(path, raw)
        rows = _read_csv(path, text, problems) if suffix == ".csv" else _read_json(path, raw, text, problems)
    if not rows and not problems.reasons:
        raise FtlabError(f"{path} holds no rows; fill it in or remove it")
    return rows


def _decompress(path: Path, raw: bytes, compression: Optional[str]) -> bytes:
    """The file's bytes as its plain form would hold them: line numbers in messages then count the same."""
    if compression is None:
        return raw
    if compression == ".gz":
        try:
            return gzip.decompress(raw)  # every member, as `zcat` reads a concatenation
        except (OSError, EOFError, zlib.error) as e:  # not gzip, truncated, damaged: each has its own type
            raise FtlabError(
                f"{path}: not a readable gzip file ({first_line(e, 120)}); re-compress it with gzip, "
                "or use the uncompressed file"
            ) from None
    if not _ZSTD:
        raise FtlabError(
            f"{path}: this pyarrow was built without zstd; pip install --force-reinstall pyarrow "
            "(PyPI wheels include it), or decompress the file with `zstd -d`"
        )
    try:
        return pa.input_stream(pa.py_buffer(raw), compression="zstd").read()  # all frames, as `zstdcat`
    except OSError as e:
        raise FtlabError(
            f"{path}: not a readable zstd file ({first_line(e, 120)}); re-compress it with zstd, "
            "or use the uncompressed file"
        ) from None


def _not_utf8(path: Path, raw: bytes, error: UnicodeDecodeError, start_line: int = 1) -> str:
    """The message for undecodable bytes in `raw` (the file, or its line `start_line`), naming their line."""
    line = start_line + raw[: error.start].count(b"\n")
    return f"{path}:{line}: not UTF-8 text (byte 0x{raw[error.start]:02x}); re-save the file as UTF-8"


def _decode(path: Path, raw: bytes) -> str:
    """A whole file's text; one undecodable byte stops the run (the file cannot be parsed around it)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FtlabError(_not_utf8(path, raw, e)) from None


def _lines(path: Path, raw: bytes, problems: Problems) -> Iterator[Tuple[str, str]]:
    """(where, text) of each non-blank line; an undecodable line is reported and passed over."""
    for n, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            problems.report(_not_utf8(path, line, e, start_line=n))
            continue
        if text.strip():
            yield f"{path}:{n}", text.removesuffix("\r")  # a Windows line end is not part of the line


def _read_json_lines(path: Path, raw: bytes, problems: Problems) -> List[tuple]:
    """One JSON object per line; a malformed line is reported with its number."""
    rows = []
    for where, text in _lines(path, raw, problems):
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            problems.report(f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON object")
            continue
        if not isinstance(row, dict):
            problems.report(f"{where}: a JSON {type(row).__name__}, not an object; each line must be one JSON object")
            continue
        rows.append((where, row))
    return rows


def _read_json(path: Path, raw: bytes, text: str, problems: Problems) -> List[tuple]:
    """A JSON array of objects, an object holding one such array ({"data": [...]}), or JSON lines in a .json."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several documents: JSON lines, as datasets' to_json writes by default
            return _read_json_lines(path, raw, problems)
        raise FtlabError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(doc, dict):
        lists = [v for v in doc.values() if isinstance(v, list)]
        doc = lists[0] if len(lists) == 1 else [doc]
    rows = []
    for i, row in enumerate(doc, start=1):
        if isinstance(row, dict):
            rows.append((f"{path} row {i}", row))
        else:
            problems.report(
                f"{path} row {i}: a JSON {type(row).__name__}, not an object; the file must hold an array of objects"
            )
    return rows


def _read_csv(path: Path, text: str, problems: Problems) -> List[tuple]:
    """CSV with a header row; a row with the wrong number of fields is reported with its line."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row or None in row.values():
            width = len(row) - (None in row) + len(row.get(None) or [])
            problems.report(
                f"{where}: {width} fields but the header has {len(reader.fieldnames)}; quote fields "
                "that contain commas or newlines"
            )
            continue
        rows.append((where, row))
    return rows


def _read_parquet(path: Path) -> List[tuple]:
    """Every row of a Parquet file, numbered from 1."""
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise FtlabError(f"{path}: not a readable Parquet file ({first_line(e, 120)})") from None
    return [(f"{path} row {i}", row) for i, row in enumerate(table.to_pylist(), start=1)]


def _read_text(path: Path, raw: bytes, problems: Problems, column: str, per_line: bool) -> List[tuple]:
    """Documents for continued pretraining: the whole file as one row (where: the file), or with per_line each
    non-empty line as one (where: file:line). A blank file gives no rows, and read_file refuses it."""
    if per_line:
        return [(where, {column: line}) for where, line in _lines(path, raw, problems)]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:  # the file is the row: reported (or skipped) as one bad row
        problems.report(_not_utf8(path, raw, e))
        return []
    return [(str(path), {column: text})] if text.strip() else []
