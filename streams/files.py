"""Data files as the readers open them: text or bytes, gzipped or not, and their fields
found by name. Shared by the event readers (``streams.readers``) and the catalogue readers
(``streams.catalog_files``), so a log and a catalogue are opened, and name their fields,
alike."""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson

# A byte-order mark (Excel's CSV) is read as none: as text, it hid the first header name
# (KeyError: 'event_time') or turned a headerless file's first row into a "header".
TEXT_ENCODING = "utf-8-sig"
# what reading a gzip file cut short (a download stopped) or not gzip at all raises
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)
DELIMITERS = ",\t;|"  # a delimited file's, tried in this order
_Fit = TypeVar("_Fit")
# how Python's repr opens a dict: {'key', or Python 2's {u'key' (Steam's games), {u"key"
# when the key holds a quote
_REPR_DICT = re.compile(rb"\s*\{(u?'|u\")")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    """Whether a file is gzip, by its first bytes: by its name alone, a gzip file named
    otherwise (``.GZ``, a download's temporary name) was read as garbage, every line
    dead-lettered as bad JSON. A pipe (``/dev/stdin``) is not read ahead: by its name."""
    if not path.is_file():
        return path.suffix == ".gz"
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_text(path: Path, encoding: str = TEXT_ENCODING, errors: str = "strict") -> IO[str]:
    """A file as text, a gzip one decompressed as it is read (REES46's months,
    Amazon's dumps come so); csv's ``newline=""``, so a quoted field's line breaks stay."""
    if is_gzip(path):
        return gzip.open(path, "rt", newline="", encoding=encoding, errors=errors)
    return open(path, newline="", encoding=encoding, errors=errors)


def open_binary(path: Path) -> IO[bytes]:
    """``open_text``'s bytes, for JSON lines."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def gunzipped(stream: IO[bytes]) -> IO[bytes]:
    """A byte stream (stdin), decompressed as it is read when it is gzip:
    ``cat events.jsonl.gz | streamrec produce`` sent every line to the dead letters."""
    peekable = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(
        stream)  # type: ignore[arg-type]
    return gzip.GzipFile(fileobj=peekable) if peekable.peek(2)[:2] == GZIP_MAGIC else peekable


def first_undecodable(path: Path) -> tuple[int | None, str]:
    """The line of a file's first byte that is not UTF-8, and why. A text reader decodes
    ahead in blocks, so the line it was on when decoding failed is not the byte's (a bad
    byte on line 1,002 of a csv log was reported on line 545)."""
    with open_binary(path) as handle:
        for line, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return line, f"{exc.reason} at column {exc.start + 1}"
    return None, "undecodable"


def json_object(raw: bytes) -> Any:
    """A line of a JSON-lines file as its value: JSON, or else, for a line that opens a
    dict as Python's ``repr`` writes one (``{'``, or Python 2's ``{u'``), a Python
    literal (:func:`json_or_literal`). McAuley's Amazon 2014 metadata and Steam's reviews
    and games (the data of the SASRec paper) were written so."""
    return json_or_literal(raw, _REPR_DICT.match(raw) is not None)


def json_or_literal(raw: bytes, literal: bool = True) -> Any:
    """JSON's value, or else, when ``literal``, the Python literal's (a table's cell
    holding a list as pandas writes one: ``["Shoot 'Em Up", 'Action']``). ``ast.literal_eval``
    reads literals and evaluates no code, and the value is written as JSON and read back,
    so it holds what its JSON twin would (tuples as lists, keys as text; a set or bytes,
    which JSON cannot hold, and a lone surrogate fail). ValueError saying why neither."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as not_json:
        if not literal:
            raise
        try:
            return orjson.loads(json.dumps(ast.literal_eval(raw.decode())))
        except MemoryError:  # the parser's stack: thousands of nested operators or brackets
            raise ValueError(f"{not_json}; nor a Python literal: nested too deeply") from None
        except (SyntaxError, ValueError, TypeError, RecursionError) as exc:
            reason = str(exc).split(": <ast.")[0]  # not the node's address
            raise ValueError(f"{not_json}; nor a Python literal: {reason}") from None


def plain_name(text: str) -> str:
    """A field's name (or a value's, e.g. an event type) as names are compared: without
    case, spaces, ``_``, ``-`` and a RecBole type suffix (``user_id:token``)."""
    return "".join(c for c in text.split(":")[0].lower() if c not in " _-")


def find_fields(names: Sequence[str], table: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each role of ``table`` to the position among ``names`` (a header, a JSON object's
    keys) of the first of its aliases there, compared as :func:`plain_name` makes them."""
    plain = [plain_name(n) for n in names]
    return {role: plain.index(at) for role, aliases in table.items()
            if (at := next((plain_name(a) for a in aliases if plain_name(a) in plain), None))}


def header_fields(first: str, fits: Callable[[list[str]], _Fit],
                  remedy: str = "put a line naming the columns first"
                  ) -> tuple[str, list[str], _Fit]:
    """(delimiter, names, what ``fits`` made of them) for a delimited file's header line:
    the first of :data:`DELIMITERS` whose split ``fits`` accepts (it raises ValueError
    for one that names too little), so the delimiter is chosen by what the header says,
    not by counting (a quoted ``"a, b"`` holds a comma). For a line none fits, the error
    of the split with the most fields, or, when most of that split's fields are numbers,
    that the line is data, and the ``remedy`` (Taobao's ``UserBehavior.csv`` has no
    header)."""
    if not first.strip():
        raise ValueError(f"the first line is empty: {remedy}")
    refused: list[tuple[list[str], ValueError]] = []
    for delimiter in DELIMITERS:
        try:
            names = next(csv.reader([first], delimiter=delimiter))
        except csv.Error as exc:  # a field past csv's size limit
            refused.append(([], ValueError(f"not CSV: {exc}")))
            continue
        try:
            return delimiter, names, fits(names)
        except ValueError as exc:
            refused.append((names, exc))
    names, error = max(refused, key=lambda names_error: len(names_error[0]))
    if 2 * sum(map(_is_number, names)) > len(names):  # a header may name a year or two
        raise ValueError(f"the first line ({', '.join(names)[:60]}) is data, not a header: "
                         f"{remedy}") from error
    raise error


def _is_number(text: str) -> bool:
    """Whether a header's field is a number (``1``, ``-2.5``, ``1e9``): a line of data."""
    return _NUMBER.fullmatch(text.strip()) is not None
