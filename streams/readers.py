"""Readers for public interaction-log formats: each yields schema events in event-time order.

Ties in time keep the order of the file (a stable sort), so which of two same-second
events comes last is deterministic. Event ids are derived from the file name (without a
``.gz``) and the row's position in it (UUIDv5), so replaying the same file twice yields
the same ids and a consumer that de-duplicates by ``event_id`` sees a replay as a
redelivery (a worker remembers each user's newest 64, ``SessionPolicy.dedupe_window``).
Any file may be gzipped (``streams.files``). A log in time order is read twice, for its
order and as its events are taken, rather than held (``_in_time_order``); ``jsonl``,
``sequences`` and ``amazon`` are held whole.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.events import Event, InvalidEvent, json_lines, parse, validate
from streams.files import (
    DELIMITERS,
    GZIP_ERRORS,
    find_fields,
    first_undecodable,
    header_fields,
    json_object,
    open_binary,
    open_text,
    plain_name,
)

_NAMESPACE = uuid.UUID("6f1c1a52-7d1e-4a4e-9d7b-2f5f3c1e8a10")
log = logging.getLogger(__name__)
SEQUENCE_BASE_MS = 1_577_836_800_000  # 2020-01-01, first synthesized timestamp
SEQUENCE_STEP_MS = 60_000


class LogFileError(ValueError):
    """An interaction log that cannot be read in the format asked for: one line, naming
    the file, the format and what broke."""


class RowError(ValueError):
    """A row of a log that does not parse, named by its line: refused, the whole file is
    (a file in another format fails on its first row), and the line says where to look."""

    def __init__(self, line: int, exc: Exception) -> None:
        super().__init__(f"line {line}: {type(exc).__name__}: {exc}")


# what parsing a row raises (OverflowError: a time of ``inf``)
ROW_ERRORS = (ValueError, KeyError, IndexError, TypeError, OverflowError)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that is not a valid event: replay sends it to the dead-letter topic."""

    raw: bytes
    error: InvalidEvent


def _event_id(source: str, line: int, ts: Any, user: Any, item: Any) -> str:
    """The id of a file's ``line``-th row: ``ratings.csv.gz`` gives ``ratings.csv``'s, so
    replaying either after the other is a redelivery. The row's time, user and item are
    in it too: two logs named alike (ml-latest-small's and ml-25m's ``ratings.csv``)
    gave their first rows one id, and a worker dropped the second log's as duplicates."""
    return str(uuid.uuid5(_NAMESPACE, f"{source.removesuffix('.gz')}:{line}:{ts}:{user}:{item}"))


# (ts_ms, user, item, session, context, event_type), as read from a file: values as read
# (a ``json`` log's may be anything), for the schema to judge
_Row = tuple[int | None, Any, Any, Any, dict | None, Any]
Rows = Callable[[], Iterator[_Row]]  # a file's rows, read afresh at each call


def _in_time_order(rows: Rows | list[_Row], source: str) -> Iterator[Event | Rejected]:
    """The events of ``rows`` (in file order; their positions give the ids) in time order.

    A file is read through once here, when its reader is called, for its order: a row that
    does not parse stops it before anything is sent. A file already in time order (REES46's
    months) is then read again as its events are taken, so a log larger than memory
    replays; any other is held and sorted (stable: ties keep file order)."""
    if not isinstance(rows, list):
        if count := _ordered(rows()):
            return _validated(_again(rows, count, source), source)
        rows = list(rows())
    held = rows
    return _validated(((i, held[i]) for i in sorted(range(len(held)),
                                                     key=lambda i: _when(held[i]))), source)


def _when(row: _Row) -> float:
    """A row's time for ordering: one without (``csv``'s empty field) is refused first."""
    return -math.inf if row[0] is None else row[0]


def _ordered(rows: Iterator[_Row]) -> int | None:
    """How many ``rows`` there are if they come in time order (every row parsed), else
    None."""
    last, count = -math.inf, 0
    for row in rows:
        if (when := _when(row)) < last:
            return None
        last, count = when, count + 1
    return count


def _again(rows: Rows, count: int, source: str) -> Iterator[tuple[int, _Row]]:
    """The ``count`` rows ``_ordered`` read, read again, with their positions. A file that
    changed in between (still being written, downloaded anew) stops in one line, where
    its new rows would have gone out unchecked: out of order, or a bad row mid-replay."""
    last, seen = -math.inf, 0
    try:
        for row in rows():
            if seen >= count or (when := _when(row)) < last:
                raise ValueError("rows were added or moved")
            yield seen, row
            last, seen = when, seen + 1
    except (RowError, *ROW_ERRORS, csv.Error, *GZIP_ERRORS) as exc:
        raise LogFileError(f"{source} changed while it was read ({exc})") from exc
    if seen != count:
        raise LogFileError(f"{source} changed while it was read ({count - seen} rows gone)")


def _validated(rows: Iterable[tuple[int, _Row]], source: str) -> Iterator[Event | Rejected]:
    """Each (position, row) as an event. A row the schema refuses (an empty id, a time out
    of range) comes as :class:`Rejected`, its event as JSON, in its place: validated
    lazily, so only a reader of the whole file meets it, and replay must dead-letter it
    rather than stop halfway with part of the file sent. Ids lose the spaces around them
    (``1, 31, 2.5`` in a hand-edited csv), as the catalogue readers' do, so an item's
    events and its record name it alike."""
    for i, (ts, user, item, session, context, event_type) in rows:
        user, item = _stripped(user), _stripped(item)
        record = {"event_id": _event_id(source, i, ts, user, item), "user_id": user,
                  "item_id": item, "event_type": event_type, "ts": ts,
                  "schema_version": 1, "session_id": _stripped(session), "context": context}
        try:
            yield validate(record)
        except InvalidEvent as exc:
            yield Rejected(_letter(record), exc)


def _letter(record: dict[str, Any]) -> bytes:
    """A refused row as the dead letter's payload, its values as read: orjson writes a NaN
    as ``null`` (the letter then showed a value the row never had) and refuses an integer
    past 64 bits (a time of 1e20 ms stopped a replay halfway, that row in neither topic),
    where the standard library writes both as they are."""
    return json.dumps(record).encode()


def _stripped(value: Any) -> Any:
    """A string without the spaces around it; anything else (None from a short csv row)
    as it is, for the schema to refuse in its place."""
    return value.strip() if isinstance(value, str) else value


def _parsed(reader: Any, row: Callable[[Any], _Row | None], skipped: int = 0) -> Iterator[_Row]:
    """``row`` of each record of a csv ``reader`` (None: a record to leave out). One that
    does not parse is a :class:`RowError` naming its line (``skipped``: header lines read
    before the reader began). A short row of a ``DictReader`` has None for its missing
    fields: a TypeError. Readers are strict (``"ab" x`` is an error, not a field), and a
    record spanning lines is refused: no log holds a line break in a field, so it is an
    unclosed quote, which would swallow every row up to the next quote unseen."""
    if isinstance(reader, csv.DictReader):
        _ = reader.fieldnames  # reads the header, so that line_num counts it
    start = reader.line_num + 1  # the line the next record starts on
    try:
        for rec in reader:
            if reader.line_num > start and spans_lines(rec):
                raise ValueError(f"a quoted field runs on to line {reader.line_num + skipped} "
                                 "(a quote not closed?)")
            if (parsed := row(rec)) is not None:
                yield parsed
            start = reader.line_num + 1
    except (*ROW_ERRORS, csv.Error) as exc:
        raise RowError(start + skipped, exc) from exc


def spans_lines(rec: list[str] | dict[str, str]) -> bool:
    """Whether a csv record holds a line break (checked only where the reader moved on by
    more than one line, as a blank line a ``DictReader`` skips also does)."""
    fields = rec.values() if isinstance(rec, dict) else rec
    return any(isinstance(f, str) and ("\n" in f or "\r" in f) for f in fields)


def read_movielens(path: Path) -> Iterator[Event | Rejected]:
    """MovieLens ``ratings.csv`` (userId,movieId,rating,timestamp), ``u.data`` (ml-100k:
    tab, no header) or ``ratings.dat`` (ml-1m, ml-10m: ``UserID::MovieID::Rating::Timestamp``).

    Every rating is an implicit ``view``; the rating itself travels in ``context``.
    """
    def rows() -> Iterator[_Row]:
        with open_text(path) as handle:
            first = handle.readline()
            lines: Iterable[str] = handle
            delimiter = "\t" if "\t" in first else ","
            quoting = csv.QUOTE_MINIMAL
            if "::" in first:  # csv takes one character: "::" becomes one no field holds
                delimiter, quoting = "\x1f", csv.QUOTE_NONE  # GroupLens quotes nothing
            header = int(_names_columns(first.replace("::", delimiter), delimiter, quoting))
            if not header:  # u.data, ratings.dat, a csv without its header
                handle.seek(0)
            if "::" in first:
                lines = (line.replace("::", "\x1f") for line in handle)
            yield from _parsed(csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True),
                               _movielens_row, header)
    return _in_time_order(rows, path.name)


def _names_columns(first: str, delimiter: str, quoting: int) -> bool:
    """Whether a MovieLens file's first line is a header: neither its rating nor its time
    is a number. By its first character, a file without a header whose user ids are not
    digits (``u1,i1,4.0,...``), or quoted (``"1","31",...``), lost its first rating; a
    first row with one bad field is data, refused with its line, not skipped."""
    fields = next(csv.reader([first], delimiter=delimiter, quoting=quoting), [])
    return len(fields) >= 4 and not (_is_number(fields[2]) or _is_number(fields[3]))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _movielens_row(rec: list[str]) -> _Row | None:
    if not rec:
        return None
    user, item, rating, ts = rec[:4]
    return int(float(ts)) * 1000, user, item, None, {"rating": float(rating)}, "view"


def _yoochoose_time(text: str) -> int:
    if "T" in text:  # the original clicks file: 2014-04-07T10:51:09.277Z
        day = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return int((day if day.tzinfo else day.replace(tzinfo=dt.UTC)).timestamp() * 1000)
    return int(round(float(text) * 1000))


def read_yoochoose(path: Path) -> Iterator[Event | Rejected]:
    """YooChoose clicks: ``SessionId, ItemId, Time`` (tab or comma, header optional, Time in
    unix seconds), or the original ``SessionId,Timestamp,ItemId,Category`` file (with a
    header too, as SR-GNN's ``session_id,timestamp,item_id,category``; names compared as
    :func:`streams.files.plain_name` makes them).

    Sessions have no user ids: the session id serves as both.
    """
    def rows() -> Iterator[_Row]:
        with open_text(path) as handle:
            first = handle.readline()
            delimiter = "\t" if "\t" in first else ","
            header = [plain_name(h) for h in first.rstrip("\r\n").split(delimiter)]
            if "sessionid" not in header:  # data: a header names its session column (by
                handle.seek(0)  # a digit first, session ids that are not numbers made
                header = []  # the first row a header, and each next row a KeyError)
            yield from _parsed(csv.reader(handle, delimiter=delimiter, strict=True),
                               lambda rec: _yoochoose_row(rec, header), bool(header))
    return _in_time_order(rows, path.name)


def _yoochoose_row(rec: list[str], header: list[str]) -> _Row | None:
    if not rec:
        return None
    if header:
        named = dict(zip(header, rec))
        session, item = named["sessionid"], named["itemid"]
        ts = named["time"] if "time" in named else named["timestamp"]
    elif len(rec) >= 4 and "T" in rec[1]:
        session, ts, item = rec[0], rec[1], rec[2]
    else:
        session, item, ts = rec[:3]
    return _yoochoose_time(ts), session, item, session, None, "click"


def read_diginetica(path: Path) -> Iterator[Event | Rejected]:
    """DIGINETICA item views: ``session_id;user_id;item_id;timeframe;eventdate``, or as
    CIKM Cup ships ``train-item-views.csv``, ``sessionId;userId;itemId;...`` (names are
    compared as :func:`streams.files.plain_name` makes them).

    ``ts`` = the event date (UTC midnight) + ``timeframe`` ms; anonymous sessions
    (``user_id`` NA) use ``s<session_id>`` as the user.
    """
    def rows() -> Iterator[_Row]:
        with open_text(path) as handle:
            records = csv.DictReader(handle, delimiter=";", strict=True)
            records.fieldnames = [plain_name(n) for n in records.fieldnames or ()]
            yield from _parsed(records, _diginetica_row)
    return _in_time_order(rows, path.name)


def _diginetica_row(rec: dict[str, str]) -> _Row:
    day = dt.datetime.strptime(rec["eventdate"], "%Y-%m-%d").replace(tzinfo=dt.UTC)
    ts = int(day.timestamp() * 1000) + int(rec["timeframe"])
    user = rec["userid"] if rec["userid"] not in ("", "NA") else f"s{rec['sessionid']}"
    return ts, user, rec["itemid"], rec["sessionid"], None, "view"


_REES46_TYPES = {"view": "view", "cart": "add_to_cart", "purchase": "purchase"}


def read_rees46(path: Path) -> Iterator[Event | Rejected]:
    """REES46 e-commerce events: ``event_time,event_type,product_id,category_id,
    category_code,brand,price,user_id,user_session``, times like ``2019-10-01 00:00:00 UTC``.

    ``cart`` becomes ``add_to_cart``; ``remove_from_cart`` rows are skipped (the schema
    has no such type, and taking an item back is no sign of interest to learn from). Any
    other type keeps its name, for the schema to refuse: a dead letter, never a row lost.
    ``price`` travels in ``context``; category and brand describe the item, not the event,
    and belong to a catalogue rather than to each event.
    """
    def rows() -> Iterator[_Row]:
        with open_text(path) as handle:
            yield from _parsed(csv.DictReader(handle, strict=True), _rees46_row)
    return _in_time_order(rows, path.name)


def _rees46_row(rec: dict[str, str]) -> _Row | None:
    if rec["event_type"] == "remove_from_cart":
        return None
    event_type = _REES46_TYPES.get(rec["event_type"], rec["event_type"])
    day = dt.datetime.fromisoformat(rec["event_time"].removesuffix(" UTC"))
    ts = int((day if day.tzinfo else day.replace(tzinfo=dt.UTC)).timestamp() * 1000)
    price = rec["price"]
    return (ts, rec["user_id"], rec["product_id"], _stripped(rec["user_session"]) or None,
            {"price": float(price)} if price else None, event_type)


def read_sequences(path: Path) -> Iterator[Event | Rejected]:
    """SASRec-style ``user item item ...`` lines (items in time order). A user's later
    lines continue their sequence: the SASRec repository's own files (``ml-1m.txt``,
    ``Beauty.txt``, ``Steam.txt``, ``Video.txt``) give one ``user item`` pair a line.

    Timestamps are synthesized by position (:func:`_by_position`).
    """
    def rows() -> Iterator[_Row]:
        with open_text(path) as handle:
            for line in handle:
                if not line.strip():  # a blank line (a trailing one, say) holds no user
                    continue
                user, *items = line.split()
                yield from ((None, user, item, None, None, "view") for item in items)
    return _in_time_order(list(_by_position(rows())), path.name)


def _by_position(rows: Iterable[_Row]) -> Iterator[_Row]:
    """The rows of a log without times, each timed by its place among its user's: the
    k-th at 2020-01-01 + k minutes. Each user's rows keep the file's order, and a replay
    interleaves users as a live stream would. (Timed by place in the file, a log grouped
    by user would put its last users wholly after the others, in a split by time.)"""
    seen: dict[Any, int] = {}  # each user's rows so far, by the id events will carry
    for row in rows:
        user = _stripped(row[1])
        k = seen[user] = seen.get(user, -1) + 1
        yield (SEQUENCE_BASE_MS + k * SEQUENCE_STEP_MS, *row[1:])


_INTER_SPLITS = (".train.inter", ".valid.inter", ".test.inter")


def read_amazon(path: Path) -> Iterator[Event | Rejected]:
    """The Amazon review data in UniSRec's layout: ``<name>.{train,valid,test}.inter``
    (a header, then ``user_id<TAB>history, space-separated item ids<TAB>next item id``),
    given the path of any of the three; the other two are read when beside it.

    The files hold every user's sequence in pieces: the test row's history is the valid
    row's history plus its target, and the train rows are each shorter prefix plus its
    next item. Each user's sequence is read once, as the longest history plus its target
    across the files, so ``evaluate`` splits it as it splits any log. (UniSRec keeps at
    most 50 items of history per row: a longer sequence would lose its oldest items;
    none in ``amazon-scientific`` has more than 35.) Timestamps are synthesized as
    :func:`read_sequences` does; event ids are those of ``<name>.inter``, whichever file
    was given. The item ids are UniSRec's internal ids, which ``streams.catalog_files``
    maps the ``.text`` catalogue onto.
    """
    stem = _inter_stem(path)
    longest: dict[str, list[str]] = {}
    for file in _inter_files(path):
        with open_text(file) as handle:
            for line, text in enumerate(handle, 1):
                fields = text.rstrip("\r\n").split("\t")
                if (line == 1 and fields[0].startswith("user_id")) or not text.strip():
                    continue  # the header, or a blank line (a trailing one, say)
                if len(fields) != 3 or not fields[2]:
                    raise ValueError(f"{file}:{line}: expected user_id<TAB>history<TAB>item id")
                user, history, target = fields
                sequence = [*history.split(), target]
                # At least as long: past 50 items of history every row is as long, and the
                # files come in time order (train, valid, test), so the newest one wins.
                if len(sequence) >= len(longest.get(user, ())):
                    longest[user] = sequence
    rows = _by_position((None, user, item, None, None, "view")
                        for user, items in longest.items() for item in items)
    return _in_time_order(list(rows), f"{stem}.inter" if stem is not None else path.name)


def _inter_stem(path: Path) -> str | None:
    """``<name>`` of ``<name>.{train,valid,test}.inter[.gz]``; None for another name."""
    name = path.name.removesuffix(".gz")
    return next((name[: -len(s)] for s in _INTER_SPLITS if name.endswith(s)), None)


def _inter_files(path: Path) -> list[Path]:
    """The split files ``read_amazon`` reads for ``path``: the three beside it, in time
    order, or ``path`` alone when it is not named as one of them."""
    stem = _inter_stem(path)
    return [path] if stem is None else [
        f for s in _INTER_SPLITS for gz in ("", ".gz")
        if (f := path.with_name(stem + s + gz)).is_file()]


def read_jsonl(path: Path) -> Iterator[Event | Rejected]:
    """JSON lines of the event schema; invalid lines come first, as :class:`Rejected`.
    Held whole, and read here, so a gzip cut short stops before any is sent."""
    events: list[Event] = []
    rejected: list[Event | Rejected] = []
    with open_binary(path) as handle:
        for _, raw in json_lines(handle):
            try:
                events.append(parse(raw))
            except InvalidEvent as exc:
                rejected.append(Rejected(raw, exc))
    events.sort(key=lambda e: e.ts)
    return iter(rejected + events)


# ``csv`` and ``json``: a field's role by its name (``streams.files.find_fields``): the
# first of a role's names found wins.
_COLUMNS = {
    # username last: Steam's reviews name every user so, and some by a user_id too (the
    # same users in every review: a numeric profile), which is taken first, as elsewhere
    "user": ("user_id", "user", "uid", "visitorid", "reviewerID", "customer_id", "client_id",
             "username"),
    # parent_asin first: Amazon 2023's reviews name the variant too, its catalogue the parent
    "item": ("item_id", "item", "iid", "product_id", "movieId", "parent_asin", "asin",
             "business_id", "book_id", "track_id", "article_id", "sku", "app_id", "video_id",
             "recipe_id", "song_id", "news_id", "venue_id", "poi_id", "isbn", "anime_id",
             "artist_id", "game_id", "place_id", "stock_code"),
    # time_ms before date: KuaiRand's ``date`` is a day (20220408), ``time_ms`` the moment
    "time": ("timestamp", "ts", "time", "event_time", "event_timestamp", "time_ms", "datetime",
             "date", "created_at", "occurred_at", "date_added", "unixReviewTime", "t_dat",
             "utc_timestamp", "invoice_date"),
    "type": ("event_type", "event", "event_name", "behavior", "behavior_type", "action",
             "action_type", "type", "interaction_type"),
    "session": ("session_id", "user_session", "session"),
    "rating": ("rating", "overall", "stars", "book_rating"),
    "price": ("price",),
    # how many: units bought (UCI's Online Retail II), plays (HetRec Last.fm's ``weight``)
    "count": ("quantity", "count", "play_count", "plays", "weight"),
}
_TYPE_NAMES = {  # other logs' names for the schema's event types, compared as fields are
    # a review or a rating (old Yelp dumps say ``"type": "review"``) is a view, as
    # MovieLens ratings are
    **dict.fromkeys(("view", "views", "pv", "pageview", "detail", "review", "rating"), "view"),
    # a media app's consumption (Steam-200k's ``play``, a listen, a watch) is its view
    **dict.fromkeys(("play", "listen", "watch"), "view"),
    # a favourite, a like or a wish list (Taobao's ``fav``) engages more than a view and
    # buys nothing: a click, so it is kept, weighed as clicks are
    **dict.fromkeys(("click", "clicks", "fav", "favorite", "favourite", "like", "wishlist",
                     "bookmark"), "click"),
    **dict.fromkeys(("addtocart", "cart", "addtobasket", "basket"), "add_to_cart"),
    **dict.fromkeys(("purchase", "transaction", "buy", "order", "checkout"), "purchase"),
}
_NO_HEADER = "put a line naming the columns first, or name them in order with --columns"
_SAMPLED = 20  # lines that choose a headerless log's delimiter
NO_VALUE = ("", "na", "n/a", "null", "none")  # a number field that says there is none
_WORDED_TIME = "%a %b %d %H:%M:%S %z %Y"  # Goodreads', Twitter's (English month names)


def _log_time(value: Any) -> int | None:
    """Epoch ms from unix seconds, ms, µs or ns (told apart by size: 1e11 s is the year
    5138, 1e11 ms 1973), as a number or its text, or an ISO date and time (UTC unless it
    says otherwise), or Goodreads' and Twitter's ``Fri Aug 25 13:55:02 -0700 2017``;
    None for an empty field, one that says there is none (``NA``) and a time that is no
    number (``nan``, ``inf``): the schema refuses that row in its place, where raising
    here stopped the whole file."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NO_VALUE):
        return None
    try:
        number = float(value)
        if not math.isfinite(number):
            return None
    except ValueError:
        text = value.strip().removesuffix(" UTC")
        try:
            day = dt.datetime.fromisoformat(text)
        except ValueError:
            try:
                day = dt.datetime.strptime(text, _WORDED_TIME)
            except ValueError:  # strptime's own words name only the last format tried
                raise ValueError(f"time {text[:40]!r} is no unix time, ISO date or "
                                 "'Fri Aug 25 13:55:02 -0700 2017'") from None
        return int((day if day.tzinfo else day.replace(tzinfo=dt.UTC)).timestamp() * 1000)
    size = abs(number)
    scale = 1000 if size < 1e11 else 1 if size < 1e14 else 1e-3 if size < 1e17 else 1e-6
    return int(round(number * scale))


def _number(value: Any) -> float | None:
    """A rating's or price's value; None when there is none (blank, ``NA``, ``null``)."""
    if isinstance(value, str):
        value = value.strip()
        if value.lower() in NO_VALUE:
            return None
    if isinstance(value, bool):  # float(True) is 1.0: a misread, not a number
        raise TypeError(f"not a number: {value}")
    return None if value is None else float(value)


def _count(value: Any) -> float | None:
    """A count's value (units bought, plays), or none where it is not a number: the names
    a count goes by (``weight``, ``count``) mean other things in other logs, whose rows
    were read before counts were, and must not be refused for them."""
    try:
        number = _number(value)
    except (ValueError, TypeError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _field(value: Any) -> Any:
    """An id as text: JSON logs write numbers (Yelp's are text, MovieLens-style ones are
    not); anything else as it is, for the schema to judge."""
    return str(value) if type(value) is int else value


def as_id(value: Any) -> Any:
    """An id as the event readers give it (a JSON number as its text, without the spaces
    around it): a catalogue's ``json`` records name items alike."""
    return _stripped(_field(value))


def item_field(names: Sequence[str]) -> str | None:
    """Which of ``names`` (a JSON object's keys) names the item, as the ``csv`` and
    ``json`` event formats find it: a catalogue read with ``json`` names items alike."""
    at = find_fields(names, {"item": _COLUMNS["item"]}).get("item")
    return None if at is None else names[at]


_TIMED = ("user", "item", "time")  # the roles a log must name
_UNTIMED = ("user", "item")  # a csv log without times is timed by position


def _roles(names: Sequence[str], needed: Sequence[str] = _TIMED) -> dict[str, int]:
    """Each role's position among a header's (or a JSON object's) field ``names``; a log
    without users but with sessions takes the session as the user, as ``yoochoose`` does.
    ``needed``: the roles that must be there, or it is not such a log."""
    found = find_fields(names, _COLUMNS)
    if "user" not in found and "session" in found:
        found["user"] = found["session"]
    missing = [role for role in needed if role not in found]
    if missing:
        raise ValueError(f"the fields ({', '.join(names)[:120]}) name no "
                         + "; no ".join(f"{role} ({', '.join(_COLUMNS[role][:4])}, ...)"
                                        for role in missing))
    return found


def _role_row(got: dict[str, Any], typed: bool) -> _Row:
    """A row from each role's field (a short row's missing ones None). Types take the
    schema's names from other logs' (``_TYPE_NAMES``); an unknown or empty one keeps its
    value, for the schema to refuse; untyped logs are views."""
    context = {key: value for key in ("rating", "price")
               if (value := _number(got.get(key))) is not None}
    if (count := _count(got.get("count"))) is not None:
        context["count"] = count
    kind = got.get("type") if typed else "view"
    if isinstance(kind, str) and kind:
        kind = _TYPE_NAMES.get(plain_name(kind), kind)
    return (_log_time(got.get("time")), _field(got["user"]), _field(got["item"]),
            _stripped(_field(got.get("session"))) or None, context or None, kind)


def read_csv(path: Path, columns: Sequence[str] = ()) -> Iterator[Event | Rejected]:
    """Any delimited log with a header (comma, tab, ``;`` or ``|``; RecBole's ``.inter``
    files too), its columns found by name (:data:`_COLUMNS`): a user (or a session) and an
    item are needed; a time, an event type, a session, a rating, a price and a count are
    read when present (:func:`_role_row`). A log without a time column (goodbooks-10k's
    ``ratings.csv``, sorted by time but not timed) is timed by position
    (:func:`_by_position`) when it has no column the reader does not know, which could be
    a time under another name (:func:`_untimed_roles`). A row short of a column has None
    there, for the schema to refuse; a rating or price of ``NA`` or blank is none. A
    headerless log (Taobao's ``UserBehavior.csv``) is read with the ``columns`` its user
    names in order (:func:`log_columns`) in place of a header."""
    told = False  # the rows are read twice (for their order, then to send): warn once

    def rows() -> Iterator[_Row]:
        nonlocal told
        with open_text(path) as handle:
            first = [handle.readline() for _ in range(_SAMPLED if columns else 1)]
            try:
                delimiter, cols = (_named_columns(first, columns) if columns else
                                   header_fields(first[0], _untimed_roles, _NO_HEADER)[::2])
            except ValueError as exc:
                raise RowError(1, exc) from exc
            if columns:  # the first line is data
                handle.seek(0)

            def row(rec: list[str]) -> _Row | None:
                return _role_row({role: rec[at] if at < len(rec) else None
                                  for role, at in cols.items()}, "type" in cols) if rec else None

            parsed = _parsed(csv.reader(handle, delimiter=delimiter, strict=True), row,
                             0 if columns else 1)
            if "time" in cols:
                yield from parsed
                return
            if not told:
                log.warning("%s has no time: each user's rows are taken in the file's order, "
                            "a minute apart (a file in another order, by item say, gives its "
                            "models a false one)", path)
                told = True
            yield from _by_position(parsed)
    return _in_time_order(rows, path.name)


def _untimed_roles(names: Sequence[str]) -> dict[str, int]:
    """:func:`_roles` of a ``csv`` header or ``--columns``, which may name no time when
    they name nothing else unknown: an unknown name could be the time (``timestamp_ms``,
    or a misspelt ``--columns``), and reading such a log in file order would drop it."""
    found = _roles(names, _UNTIMED)
    unknown = [name for name in names if name.strip() and not find_fields([name], _COLUMNS)]
    if "time" not in found and unknown:
        raise ValueError(f"the fields ({', '.join(names)[:120]}) name no time "
                         f"({', '.join(_COLUMNS['time'][:4])}, ...), and a log without one is "
                         f"read in file order only when it has no other field "
                         f"({', '.join(unknown)[:60]})")
    return found


def log_columns(text: str) -> tuple[str, ...]:
    """The columns a user names, in order, for a headerless ``csv`` log: ``user,item,,type,
    time`` (an empty name skips a column; any name a header may use; without a time, the
    rows are timed in file order). ValueError when they name no user or no item, or no
    time beside a name not known (:func:`_untimed_roles`)."""
    names = tuple(name.strip() for name in text.split(","))
    _untimed_roles(names)
    return names


def _named_columns(lines: list[str], columns: Sequence[str]) -> tuple[str, dict[str, int]]:
    """(delimiter, each role's position) for a headerless log read with ``columns``, from
    its first ``lines``: the first delimiter that splits each into one field per column,
    or else the first line alone (a tab log whose titles hold commas may split as well
    on commas there). A first line is a header, refused, when it names two of user, item
    and time, or when a column holds the name of the role it was named for (``user_id``
    where ``--columns user,item`` put the user): its names would be read as an event."""
    def fields(delimiter: str, line: str) -> list[str]:
        return next(csv.reader([line], delimiter=delimiter), [])

    fitting = [d for d in DELIMITERS if len(fields(d, lines[0])) == len(columns)]
    if not fitting:
        widest = max((fields(d, lines[0]) for d in DELIMITERS), key=len)
        raise ValueError(f"{len(columns)} columns named, but the first line has "
                         f"{len(widest)} fields ({', '.join(widest)[:60]})")
    delimiter = next((d for d in fitting if all(len(fields(d, line)) == len(columns)
                                                for line in lines if line.strip())), fitting[0])
    named, roles = fields(delimiter, lines[0]), _untimed_roles(columns)
    found = find_fields(named, _COLUMNS)
    if (len(found.keys() & {"user", "item", "time"}) >= 2
            or any(found.get(role) == at for role, at in roles.items())):
        raise ValueError(f"the first line ({', '.join(named)[:60]}) is a header: name "
                         "columns only for a file without one")
    return delimiter, roles


def read_json(path: Path) -> Iterator[Event | Rejected]:
    """JSON lines of any objects, their fields found by name as ``csv`` finds columns, in
    each object (the first must name a user, an item and a time; a later one without them
    is refused in its place, a dead letter): Amazon's review files (``reviewerID``,
    ``asin``, ``overall``, ``unixReviewTime``; 2023's ``user_id``, ``parent_asin``,
    ``rating``, ``timestamp``), Yelp's reviews (``business_id``, ``stars``, ``date``),
    Steam's (``username``, ``product_id``, ``date``; Python literals, which
    :func:`streams.files.json_object` reads). A line that is not an object refuses the
    file, naming its line, as a csv row that does not parse does."""
    def rows() -> Iterator[_Row]:
        keys: dict[tuple[str, ...], dict[str, str]] = {}  # by the fields an object has
        with open_binary(path) as handle:
            for line, raw in json_lines(handle):
                try:
                    obj = json_object(raw)
                    if not isinstance(obj, dict):
                        raise ValueError(f"not a JSON object: {raw[:60]!r}")
                    names = tuple(obj)
                    if names not in keys:
                        keys[names] = {role: names[at] for role, at in
                                       _roles(names, () if keys else _TIMED).items()}
                    mine = keys[names]
                    parsed = _role_row({role: obj[mine[role]] if role in mine else None
                                        for role in _COLUMNS}, "type" in mine)
                except ROW_ERRORS as exc:  # a rating of "five": a TypeError, a ValueError
                    raise RowError(line, exc) from exc
                yield parsed
    return _in_time_order(rows, path.name)


READERS: dict[str, Callable[[Path], Iterable[Event | Rejected]]] = {
    "movielens": read_movielens,
    "yoochoose": read_yoochoose,
    "diginetica": read_diginetica,
    "rees46": read_rees46,
    "sequences": read_sequences,
    "amazon": read_amazon,
    "jsonl": read_jsonl,
    "csv": read_csv,
    "json": read_json,
}


def read_events(path: Path | str, fmt: str,
                columns: Sequence[str] = ()) -> Iterable[Event | Rejected]:
    """Dispatch on ``fmt`` (one of :data:`READERS`), with errors a user can act on: a file
    not in its format stops here, before anything is read from it; a row that parses but
    is not a valid event comes as :class:`Rejected`. ``columns``: a headerless ``csv``
    log's (:func:`log_columns`)."""
    path = Path(path)
    if fmt not in READERS:
        raise LogFileError(f"unknown format {fmt!r}; choose one of {', '.join(READERS)}")
    if columns and fmt != "csv":
        raise LogFileError(f"{path}: columns are named for a csv log only, not {fmt}")
    if not path.is_file():
        raise FileNotFoundError(f"{'not a file' if path.exists() else 'no such file'}: {path}")
    try:  # every reader reads the whole file here, for its order
        return read_csv(path, columns) if columns else READERS[fmt](path)
    except (RowError, UnicodeDecodeError) as exc:
        if isinstance(exc, UnicodeDecodeError) or isinstance(exc.__cause__, UnicodeDecodeError):
            raise LogFileError(_undecodable(path, fmt)) from exc
        raise LogFileError(f"{path}: not a {fmt} log ({exc})") from exc
    except GZIP_ERRORS as exc:
        raise LogFileError(f"{path}: not a whole gzip file ({exc})") from exc
    except (*ROW_ERRORS, csv.Error) as exc:
        raise LogFileError(f"{path}: not a {fmt} log ({type(exc).__name__}: {exc})") from exc


def _undecodable(path: Path, fmt: str) -> str:
    """Where the log's first byte that is not UTF-8 lies, in whichever of its files: an
    ``amazon`` log reads the split files beside the one named."""
    for file in _inter_files(path) if fmt == "amazon" else [path]:
        line, problem = first_undecodable(file)
        if line is not None:
            return f"{file}: not UTF-8 text (line {line}: {problem})"
    return f"{path}: not UTF-8 text"


def read_valid_events(path: Path | str, fmt: str, columns: Sequence[str] = ()) -> list[Event]:
    """The events of a log, in time order, without its rows that are not valid events
    (for training and evaluation; replay sends those to the dead-letter topic instead):
    how many were left out, and the first one's reason, is logged."""
    events: list[Event] = []
    rejected: list[Rejected] = []
    for record in read_events(path, fmt, columns):
        (rejected if isinstance(record, Rejected) else events).append(record)
    if rejected:
        log.warning("%s: %d of its %d rows are not valid events and were left out (the "
                    "first: %s)", path, len(rejected), len(rejected) + len(events),
                    rejected[0].error)
    return events
