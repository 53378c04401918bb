"""Catalogue files: public item-metadata formats read as :class:`~streams.catalog.ItemRecord`.

Two kinds of trouble, kept apart:

- **The file is not in the format** (missing, a header or a column count that does not
  fit, a number column that is not a number, not UTF-8 (but a MovieLens ``::`` file's
  Latin-1 bytes, ml-1m's), a ``json`` line that is not a JSON object, a gzip cut short):
  :class:`CatalogFileError`, one line naming the file, the line and what is wrong.
  Nothing of such a file is used.
- **A record the schema refuses** (a jsonl line that is not a valid record, a row whose
  values break a limit, e.g. a negative price): :func:`scan_catalog` yields it as a
  :class:`RejectedItem` (its line, the record's bytes, the reason), which
  ``streamrec catalog load`` sends to the dead-letter topic, as ``streamrec produce``
  does with events; :func:`read_catalog`, for offline use where there is no dead-letter
  topic, stops on it with a ``CatalogFileError`` instead.

In ``jsonl`` every line is one wire record, so a line that is not JSON is a malformed
record, except on the first record line: a file whose first record is not a JSON object
is not JSON lines at all (e.g. a CSV given ``--format jsonl``) and stops.

Item ids match the ids the event readers (``streams.readers``) give the same data set's
interactions, so events and catalogue join.
"""

from __future__ import annotations

import codecs
import csv
import html
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from html.entities import html5
from pathlib import Path
from typing import IO, Any

from streams.catalog import (
    MAX_CATEGORIES,
    MAX_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    MAX_TITLE_LENGTH,
    ItemRecord,
    parse_item,
)
from streams.events import CONTROL_CHARACTERS, InvalidEvent, Reason, json_lines
from streams.files import (
    GZIP_ERRORS,
    TEXT_ENCODING,
    find_fields,
    first_undecodable,
    header_fields,
    json_object,
    json_or_literal,
    open_binary,
    open_text,
)
from streams.readers import NO_VALUE, as_id, item_field, spans_lines


class CatalogFileError(ValueError):
    """A catalogue file that cannot be read in the format asked for: one line,
    ``file:line: what is wrong``."""

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = path, line, problem


@dataclass(frozen=True, slots=True)
class RejectedItem:
    """A record the schema refuses: ``raw`` (the jsonl line, or the record a row made,
    as JSON) goes to the dead-letter topic with the reason."""

    line: int
    raw: bytes
    error: InvalidEvent


Scanned = Iterator[ItemRecord | RejectedItem]
_Row = dict[str, str]


def _shown(value: Any) -> Any:
    """``value`` for a letter: a float that is not finite as text, wherever it is."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    return value


def _checked(obj: dict[str, Any], line: int) -> ItemRecord | RejectedItem:
    """A record built from a row, validated; the unset fields left out."""
    obj = {k: v for k, v in obj.items() if v not in (None, "", (), [], {})}
    try:
        return parse_item(obj)
    except InvalidEvent as exc:  # JSON has no infinity: written as null, the letter
        # contradicted its reason, and redriven as it was, the item lost its price
        # The standard library's writer: orjson refuses an integer past 64 bits (a book's
        # year of 1e20), and the letter of a record refused for one raised.
        return RejectedItem(line, json.dumps(_shown(obj)).encode(), exc)


def _records(path: Path, reader: Any, skipped: int = 0) -> Iterator[tuple[int, list[str]]]:
    """(line it starts on, fields) of each record of a strict csv ``reader`` (``skipped``:
    header lines read before it began). A record spanning lines is refused: no catalogue
    holds a line break in a field, so it is a quote left open, which would swallow every
    row up to the next quote (the event readers refuse it the same way)."""
    start = reader.line_num + 1
    try:
        for fields in reader:
            if reader.line_num > start and spans_lines(fields):
                raise CatalogFileError(path, start + skipped, "a quoted field runs on to "
                                       f"line {reader.line_num + skipped} (a quote not closed?)")
            yield start + skipped, fields
            start = reader.line_num + 1
    except csv.Error as exc:
        raise CatalogFileError(path, start + skipped, f"not CSV: {exc}") from None


def _csv_rows(path: Path, handle: IO[str], required: Iterable[str]) -> Iterator[tuple[int, _Row]]:
    """(line, row) of a CSV file with a header naming at least ``required``."""
    records = _records(path, csv.reader(handle, strict=True))
    _, header = next(records, (1, []))
    header = [name.strip() for name in header]
    missing = [name for name in required if name not in header]
    if missing:
        raise CatalogFileError(path, 1, f"expected a header with {', '.join(required)}; "
                               f"missing {', '.join(missing)} (got {','.join(header)[:80]!r})")
    for line, fields in records:
        if not fields:
            continue
        if len(fields) != len(header):
            raise CatalogFileError(path, line, f"expected {len(header)} fields as in the "
                                   f"header, got {len(fields)}")
        yield line, dict(zip(header, fields))


def _float(path: Path, line: int, column: str, text: str) -> float | None:
    """A number column's value; None when empty."""
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise CatalogFileError(path, line, f"{column} {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise CatalogFileError(path, line, f"{column} {text[:40]!r} is not a finite number")
    return value


# --- MovieLens ----------------------------------------------------------------------------
_YEAR = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*\d{4})?\)\s*$")  # "(1995)", "(2006-2007)"
NO_GENRES = "(no genres listed)"


def _movielens(path: Path, handle: IO[str]) -> Scanned:
    """MovieLens ``movies.csv`` (``movieId,title,genres``), or ``movies.dat`` (ml-1m,
    ml-10m: ``MovieID::Title::Genres``, no header): item id = ``movieId`` (as the
    ratings' ``movieId``, the id ``read_movielens`` gives events); the title as written,
    its trailing ``(1995)`` also as ``attributes.year`` (the first year of a range like
    ``(2006-2007)``); categories = the ``|``-separated genres, without
    ``(no genres listed)``."""
    first = handle.readline()
    handle.seek(0)
    rows = (_dat_rows(path, handle) if "::" in first
            else _csv_rows(path, handle, ("movieId", "title", "genres")))
    for line, row in rows:
        title = _words(row["title"], MAX_TITLE_LENGTH) or ""
        year = _YEAR.search(title)
        yield _checked({"item_id": row["movieId"].strip(), "title": title or None,
                        "categories": _names(row["genres"]),
                        "attributes": {"year": int(year.group(1))} if year else None}, line)


def _dat_rows(path: Path, handle: IO[str]) -> Iterator[tuple[int, _Row]]:
    """(line, row) of a ``movies.dat``: a title may hold anything but the separator."""
    for line, text in enumerate(handle, 1):
        if not text.strip():
            continue
        movie, _, rest = text.rstrip("\r\n").partition("::")
        title, found, genres = rest.rpartition("::")
        if not found:
            raise CatalogFileError(path, line, "expected MovieID::Title::Genres")
        yield line, {"movieId": movie, "title": title, "genres": genres}


def _latin_1_bytes(error: UnicodeError) -> tuple[str, int]:
    """The bytes UTF-8 could not decode, as Latin-1 (``_encoding``); 0x80-0x9F, control
    characters in Latin-1, as Windows-1252 reads them (``\x92``: an apostrophe) where it
    has a character for them."""
    if not isinstance(error, UnicodeDecodeError):  # registered for reading only
        raise error
    chunk = error.object[error.start:error.end]
    return "".join(bytes([b]).decode("cp1252", "ignore") or chr(b) for b in chunk), error.end


codecs.register_error("streamrec.latin-1", _latin_1_bytes)


def _encoding(path: Path, fmt: str) -> tuple[str, str]:
    """(encoding, errors): UTF-8 (a byte-order mark read as none), but for a MovieLens
    ``::`` file: GroupLens wrote ml-1m's ``movies.dat`` in Latin-1 (``Caf\xe9``), so
    there a byte that is not UTF-8 is read as Latin-1, and the rest of the line stays
    UTF-8. Any other file that is not UTF-8 is refused, naming its first bad line."""
    if fmt == "movielens":
        with open_binary(path) as handle:
            if b"::" in handle.readline():
                return TEXT_ENCODING, "streamrec.latin-1"
    return TEXT_ENCODING, "strict"


# --- goodbooks-10k -------------------------------------------------------------------------
_NO_PHOTO = "/nophoto/"  # goodreads' placeholder image: no image at all


def _goodbooks(path: Path, handle: IO[str]) -> Scanned:
    """goodbooks-10k ``books.csv``: item id = ``book_id`` (1..10000, the ``book_id`` of
    its ``ratings.csv`` and ``to_read.csv``); title; brand = the first of ``authors``;
    categories = ``[language_code]`` when there is one; attributes ``year``
    (``original_publication_year``, negative before the common era), ``average_rating``
    and ``log_ratings_count`` = ln(1 + ``ratings_count``) (counts span three orders of
    magnitude); ``image_url`` unless it is goodreads' "no photo" placeholder."""
    required = ("book_id", "title", "authors", "original_publication_year", "language_code",
                "average_rating", "ratings_count", "image_url")
    for line, row in _csv_rows(path, handle, required):
        year = _float(path, line, "original_publication_year", row["original_publication_year"])
        rating = _float(path, line, "average_rating", row["average_rating"])
        count = _float(path, line, "ratings_count", row["ratings_count"])
        attributes: dict[str, float] = {}
        if year is not None:
            attributes["year"] = int(year)
        if rating is not None:
            attributes["average_rating"] = rating
        if count is not None:
            attributes["log_ratings_count"] = math.log1p(max(count, 0.0))
        image, language = row["image_url"].strip(), row["language_code"].strip()
        yield _checked({
            "item_id": row["book_id"].strip(), "title": row["title"].strip(),
            "brand": row["authors"].split(",")[0].strip(),
            "categories": [language] if language else None, "attributes": attributes,
            "image_url": None if _NO_PHOTO in image else image}, line)


# --- REES46 --------------------------------------------------------------------------------
def _category_path(code: str) -> list[str]:
    """``electronics.smartphone`` -> ``electronics``, ``electronics.smartphone``."""
    parts = [p for p in code.strip().split(".") if p]
    return [".".join(parts[: k + 1]) for k in range(len(parts))]


def _rees46(path: Path, handle: IO[str]) -> Scanned:
    """REES46 ``events.csv``: one record per ``product_id`` (the events' item id), the
    values of its newest row (by ``event_time``; of two rows at the same time, the later
    in the file), whatever the event type: categories = the ``category_code`` path as
    cumulative prefixes (``electronics``, ``electronics.smartphone``) plus
    ``cat:<category_id>``; brand; price. Records come in the order products first appear."""
    required = ("event_time", "product_id", "category_id", "category_code", "brand", "price")
    newest: dict[str, tuple[str, int, _Row]] = {}
    for line, row in _csv_rows(path, handle, required):
        _float(path, line, "price", row["price"])  # a column of numbers, or the wrong file
        product, at = row["product_id"].strip(), row["event_time"]
        seen = newest.get(product)
        if seen is None or at >= seen[0]:
            newest[product] = (at, line, row)
    for product, (_, line, row) in newest.items():
        categories = _category_path(row["category_code"])
        if row["category_id"].strip():
            categories.append(f"cat:{row['category_id'].strip()}")
        yield _checked({"item_id": product, "categories": categories,
                        "brand": row["brand"].strip(),
                        "price": _float(path, line, "price", row["price"])}, line)


# --- Amazon (UniSRec layout) ---------------------------------------------------------------
ID_MAP_SUFFIX = ".item2index"


def _amazon_id_map(text_path: Path, id_map: Path | None) -> dict[str, str]:
    """UniSRec's ``<name>.item2index`` (``ASIN<TAB>internal id`` per line)."""
    path = id_map or text_path.with_name(
        text_path.name.removesuffix(".gz").removesuffix(".text") + ID_MAP_SUFFIX)
    if not path.is_file():
        raise CatalogFileError(text_path, None, f"needs {path.name} (UniSRec's ASIN<TAB>id "
                               "map) beside it or given as the id map: the .inter files' "
                               "item ids are not the .text row order")
    ids: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line, text in enumerate(handle, 1):
                asin, _, index = text.rstrip("\r\n").partition("\t")
                if not asin or not index.isdigit():
                    raise CatalogFileError(path, line, "expected ASIN<TAB>item id")
                ids[asin] = index
    except UnicodeDecodeError:
        bad_line, problem = first_undecodable(path)
        raise CatalogFileError(path, bad_line, f"not UTF-8 text: {problem}") from None
    if len(set(ids.values())) != len(ids):
        raise CatalogFileError(path, None, "two ASINs share an item id")
    return ids


def _amazon(path: Path, handle: IO[str], id_map: Path | None = None) -> Scanned:
    """The Amazon review data in UniSRec's layout: ``<name>.text`` (a header, then
    ``ASIN<TAB>text``, the text being "title. category path. brand."): title = the text
    before its last two ". " (a title may hold one: "Dr. Seuss", "3/4 in. wide"), or up
    to its first where it has fewer; text = all of it.

    Item id = the item's internal id in the ``<name>.{train,valid,test}.inter`` files
    (what ``read_amazon`` gives events), read from UniSRec's ``<name>.item2index`` beside
    the ``.text`` (or ``id_map``); without that map the file is refused. The row order of
    ``.text`` is NOT the id order, although it has been described so: UniSRec's
    ``process_amazon.py`` writes ``.text`` in the order of the metadata file and numbers
    items by first appearance in the users' interactions (a hash-ordered set). Checked
    on ``amazon-scientific``: with the ``Scientific.item2index`` published with
    byte-identical ``.text`` and ``.inter`` files (github.com/KIKIENAO/decorec,
    dataset/downstream/Scientific), no row k holds item k, and a user's consecutive items
    share a brand 14.7% of the time against 1.7% under the row order (0.5% for random
    pairs)."""
    ids = _amazon_id_map(path, id_map)
    header = handle.readline()
    if not header.startswith("item_id"):
        raise CatalogFileError(path, 1, f"expected the header item_id:token<TAB>text:token_seq, "
                               f"got {header.strip()[:60]!r}")
    for line, text in enumerate(handle, 2):
        text = text.rstrip("\r\n")
        if not text:
            continue
        asin, tab, body = text.partition("\t")
        if not tab:
            raise CatalogFileError(path, line, "expected ASIN<TAB>text")
        if asin not in ids:
            raise CatalogFileError(path, line, f"{asin[:40]!r} is not in the id map")
        body = body.strip()
        parts = body.rstrip(". ").split(". ")
        title = (". ".join(parts[:-2]) if len(parts) > 2 else parts[0]).strip().rstrip(".")
        yield _checked({"item_id": ids[asin], "title": title, "text": body}, line)


# --- JSON lines ------------------------------------------------------------------------------
def _jsonl(path: Path, handle: IO[bytes]) -> Scanned:
    """JSON lines of the record schema; a line that is not a valid record is a
    :class:`RejectedItem`, but a first record that is not a JSON object, or that has no
    ``item_id`` (JSON lines of other fields: every one would be dead-lettered, and
    nothing sent), stops."""
    first = True
    for line, raw in json_lines(handle):
        try:
            yield parse_item(raw)
        except InvalidEvent as exc:
            if first and exc.reason in (Reason.BAD_JSON, Reason.NOT_AN_OBJECT):
                raise CatalogFileError(path, line, f"not JSON lines of catalogue records: "
                                       f"{exc}") from None
            if first and "item_id" not in json.loads(raw):
                raise CatalogFileError(path, line, f"not JSON lines of catalogue records: "
                                       f"{exc}; JSON lines of other fields (Amazon's "
                                       "metadata) load with --format json") from None
            yield RejectedItem(line, raw, exc)
        first = False


# --- JSON lines of other fields (Amazon's metadata) -------------------------------------
# A field's names, found as the event formats find theirs (``streams.files.find_fields``).
_ITEM_FIELDS = {
    "title": ("title", "name", "product_name", "prod_name", "book_title"),
    "text": ("description", "text", "features", "feature", "summary", "detail_desc",
             "overview"),
    "categories": ("categories", "category", "main_category", "main_cat", "genres", "genre",
                   "product_type_name", "category_code"),
    "brand": ("brand", "store", "author", "book_author", "manufacturer", "publisher"),
    "price": ("price",),
}
_ID = {"id": ("id",)}  # a record's own id, when no other field names the item (Steam's)
# a price and nothing else: "$1,012.99", "3", not "$12.99 - $15.99" nor Amazon 2018's CSS
_PRICE = re.compile(r"\s*\$?\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*")


def _field_names(obj: dict[str, Any]) -> dict[str, str]:
    """Each of ``_ITEM_FIELDS``'s roles, and ``id``, to the key of ``obj`` holding it: the
    first of its names with a value (2023's ``categories`` is often ``[]`` beside a
    ``main_category``). The item is named as the event formats name it, or else by ``id``
    (Steam's games): an event's ``id`` would be the event's own, so they never read it."""
    valued = [key for key, value in obj.items() if value not in (None, "", [], {})]
    found = {role: valued[at] for role, at in find_fields(valued, _ITEM_FIELDS).items()}
    if (item := _item_key(list(obj))) is not None:
        found["id"] = item
    return found


def _item_key(keys: list[str]) -> str | None:
    """Which of a record's ``keys`` names the item (:func:`_field_names`)."""
    item = item_field(keys)
    if item is None and (at := find_fields(keys, _ID).get("id")) is not None:
        item = keys[at]
    return item


# an HTML character reference, closed by ``;`` (``html.unescape`` alone also reads HTML 4's
# unclosed ones: ``Guitar&amplifier`` became ``Guitar&lifier``)
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def _character(reference: re.Match[str]) -> str:
    """The character an HTML reference stands for; a name HTML does not know whole
    (``&amplifier;``, which ``html.unescape`` reads as ``&amp`` and ``lifier;``) as it is."""
    text = reference[0]
    return html.unescape(text) if text[1] == "#" or text[1:] in html5 else text


_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def _words(value: Any, most: int, one_line: bool = True) -> str | None:
    """Text from a string or a list of strings (Amazon's descriptions are lists), on one
    line unless it is a text, cut to ``most`` characters (a record past the schema's limits
    would be refused whole); markup (2018's ``main_cat`` is sometimes an ``<img>`` tag)
    is none. HTML's entities are read (Amazon's ``Tools &amp; Home Improvement``: the
    content features saw a word ``amp``, and one category under two names)."""
    if isinstance(value, list):
        value = " ".join(v for v in value if isinstance(v, str))
    if isinstance(value, str) and "&" in value:
        value = _ENTITY.sub(_character, value)
    if not isinstance(value, str) or value.lstrip().startswith("<"):
        return None
    if one_line:  # control characters too (mojibake's C1 ones: a title ``Men\x92s``):
        # kept, the record was refused whole, its text, categories and price with it
        return " ".join(_CONTROL.sub(" ", value).split())[:most] or None
    return value.strip()[:most] or None


def _names(value: Any) -> list[str] | None:
    """Categories from a list, each once, in order; a list of lists (Amazon 2014's
    category paths, ``[['Beauty', 'Skin Care'], ['Beauty', 'Makeup']]``) as one list;
    text as names split on ``|`` (a table's ``Crime|Drama``), never on a comma (Amazon's
    ``"Arts, Crafts & Sewing"`` is one) nor a ``;`` (Amazon 2018's ``"Tools &amp; Home
    Improvement"``, read as ``Tools & Home Improvement``). MovieLens's ``(no genres
    listed)`` is none, as its own format reads it. Text that is a whole list, as JSON or
    Python writes one (pandas' ``"['Action', 'Casual']"`` in a csv cell), is that list."""
    if isinstance(value, str):
        listed = _listed(value)
        value = value.split("|") if listed is None else listed
    names = value if isinstance(value, list) else []
    names = [n for v in names for n in (v if isinstance(v, list) else [v])]
    kept = [n for v in names if (n := _words(v, MAX_NAME_LENGTH)) not in (None, NO_GENRES)]
    return list(dict.fromkeys(kept))[:MAX_CATEGORIES] or None


def _listed(text: str) -> list[Any] | None:
    """The list a cell's text writes as JSON or a Python literal (nested too: Amazon
    2014's category paths), or None. A cell is at most csv's field limit, 128 KB, read
    in well under a second."""
    if not (text := text.strip()).startswith("[") or not text.endswith("]"):
        return None
    try:
        value = json_or_literal(text.encode())
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def _price(value: Any) -> float | None:
    """A number, or text that is one (``-5.00``, ``1e3``: the schema judges it, and
    refuses a negative price as it does a JSON number's, where this read none and loaded
    the item), or text that is one price (Amazon 2018's ``"$12.99"``); None for text that
    says there is none (``NA``, ``nan``) and for any other (a range, CSS)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.strip().lower() not in (*NO_VALUE, "nan"):
        try:
            return float(value)
        except ValueError:
            pass
    found = _PRICE.fullmatch(value) if isinstance(value, str) else None
    return float(found[1].replace(",", "") + (found[2] or "")) if found else None


def _record(obj: dict[str, Any], line: int) -> ItemRecord | RejectedItem:
    """A record from an object of other fields (a JSON line, a table's row), each found
    by name (:func:`_field_names`)."""
    got = {role: obj[key] for role, key in _field_names(obj).items()}
    return _checked({
        "item_id": as_id(got.get("id")),
        "title": _words(got.get("title"), MAX_TITLE_LENGTH),
        "text": _words(got.get("text"), MAX_TEXT_LENGTH, one_line=False),
        "categories": _names(got.get("categories")),
        "brand": _words(got.get("brand"), MAX_NAME_LENGTH),
        "price": _price(got.get("price"))}, line)


def _json(path: Path, handle: IO[bytes]) -> Scanned:
    """JSON lines of any objects, their fields found by name in each: the item id as the
    ``json`` event format finds it (``parent_asin`` before ``asin``, ``item_id``,
    ``movieId``, ...), so events and records join; ``title``; text from ``description``
    (or ``text``, ``features``; lists joined), cut to the schema's limits; categories
    from ``categories`` (or ``category``, ``main_category``, ``genres``; a list, a list of
    category paths, or one name); brand from ``brand`` (or ``store``, ``author``); a
    price, as a number or text that is one. Amazon's 2014, 2018 and 2023 metadata and
    Steam's games (their id is ``id``) read as they are; 2014's and Steam's are Python
    literals, which :func:`streams.files.json_object` reads."""
    for line, raw in json_lines(handle):
        try:
            obj = json_object(raw)
        except ValueError as exc:
            raise CatalogFileError(path, line, f"not JSON lines: {exc}") from None
        if not isinstance(obj, dict):
            raise CatalogFileError(path, line, "not JSON lines of objects")
        yield _record(obj, line)


def _item_column(names: list[str]) -> None:
    """Refuses a header with no column that names items."""
    if _item_key(names) is None:
        raise ValueError(f"the header ({', '.join(names)[:80]}) names no item column "
                         "(item_id, product_id, article_id, asin, id, ...)")


def _csv(path: Path, handle: IO[str]) -> Scanned:
    """Any delimited item table with a header (comma, tab, ``;`` or ``|``, as the ``csv``
    event format reads one), its columns found by name as ``json`` finds fields: H&M's
    ``articles.csv``, a shop's product export. A category cell may list several, split on
    ``|`` (``Crime|Drama``); an empty cell is no value."""
    try:
        delimiter, names, _ = header_fields(handle.readline(), _item_column)
    except UnicodeDecodeError:
        raise  # read ahead of the header: ``_guarded`` finds the line the byte is on
    except ValueError as exc:
        raise CatalogFileError(path, 1, str(exc)) from None
    reader = csv.reader(handle, delimiter=delimiter, strict=True)  # an open quote, not rows lost
    for line, fields in _records(path, reader, skipped=1):
        if not fields:
            continue
        if len(fields) != len(names):
            raise CatalogFileError(path, line, f"expected {len(names)} fields as in the "
                                   f"header, got {len(fields)}")
        row: dict[str, str] = {}
        for name, value in zip(names, fields):
            row.setdefault(name, value)  # a name twice: its first column, as for events
        yield _record(row, line)


CATALOG_FORMATS: dict[str, Callable[..., Scanned]] = {
    "movielens": _movielens,
    "goodbooks": _goodbooks,
    "rees46": _rees46,
    "amazon": _amazon,
    "jsonl": _jsonl,
    "json": _json,
    "csv": _csv,
}


def scan_catalog(path: Path | str, fmt: str, *, id_map: Path | str | None = None) -> Scanned:
    """The records of a catalogue file, and the rows the schema refuses as
    :class:`RejectedItem`; :class:`CatalogFileError` for a file not in ``fmt``.
    ``id_map``: ``amazon`` only, where UniSRec's ``.item2index`` is, when not beside the
    ``.text``."""
    path = Path(path)
    if fmt not in CATALOG_FORMATS:
        raise ValueError(f"unknown catalogue format {fmt!r}; choose one of "
                         f"{', '.join(CATALOG_FORMATS)}")
    if not path.is_file():
        raise CatalogFileError(path, None, "no such file")
    extra = {"id_map": Path(id_map)} if fmt == "amazon" and id_map is not None else {}
    return _guarded(path, fmt, extra)


def _guarded(path: Path, fmt: str, extra: dict[str, Any]) -> Scanned:
    try:
        if fmt in ("jsonl", "json"):
            with open_binary(path) as binary:
                yield from CATALOG_FORMATS[fmt](path, binary)
        else:
            encoding, errors = _encoding(path, fmt)
            with open_text(path, encoding, errors) as handle:
                yield from CATALOG_FORMATS[fmt](path, handle, **extra)
    except GZIP_ERRORS as exc:
        raise CatalogFileError(path, None, f"not a whole gzip file ({exc})") from None
    except UnicodeDecodeError:
        line, problem = first_undecodable(path)
        raise CatalogFileError(path, line, f"not UTF-8 text: {problem}") from None


def read_catalog(path: Path | str, fmt: str, *, id_map: Path | str | None = None
                 ) -> Iterator[ItemRecord]:
    """The records of a catalogue file, for offline use: a record the schema refuses
    stops it too, as a :class:`CatalogFileError` naming its line and reason."""
    return _strict(Path(path), scan_catalog(path, fmt, id_map=id_map))


def _strict(path: Path, scanned: Scanned) -> Iterator[ItemRecord]:
    for record in scanned:
        if isinstance(record, RejectedItem):
            raise CatalogFileError(path, record.line, str(record.error))
        yield record
