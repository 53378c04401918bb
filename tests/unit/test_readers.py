"""Dataset readers on small files written here, the synthetic generator, replay pacing."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streams.events import Event, Reason
from streams.readers import (
    SEQUENCE_BASE_MS,
    SEQUENCE_STEP_MS,
    LogFileError,
    Rejected,
    log_columns,
    read_events,
)
from streams.replay import pacing_delay
from streams.synthetic import SyntheticConfig, generate


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _events(path: Path, fmt: str, columns: tuple[str, ...] = ()) -> list[Event]:
    out = list(read_events(path, fmt, columns))
    assert all(isinstance(e, Event) for e in out)
    return out  # type: ignore[return-value]


def test_movielens_csv_is_time_ordered_with_stable_ties(tmp_path: Path) -> None:
    path = _write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n"
                  "1,10,4.0,964982703\n1,20,3.5,964982000\n2,30,5.0,964982703\n")
    events = _events(path, "movielens")
    assert [(e.user_id, e.item_id, e.ts) for e in events] == [
        ("1", "20", 964982000000), ("1", "10", 964982703000), ("2", "30", 964982703000)]
    assert events[0].context == {"rating": 3.5}
    assert _events(path, "movielens") == events  # ids are deterministic


def test_ids_lose_the_spaces_around_them_as_the_catalogues_do(tmp_path: Path) -> None:
    """A hand-edited csv (``1, 31, 2.5``) named its items " 31" in events and "31" in the
    catalogue read from the same folder, so no event met its record."""
    from streams.catalog_files import read_catalog

    ratings = _write(tmp_path, "ratings.csv", "userId, movieId, rating, timestamp\n"
                     "1, 31, 2.5, 964982703\n")
    movies = _write(tmp_path, "movies.csv", "movieId,title,genres\n 31 ,Heat (1995),Crime\n")
    [event] = _events(ratings, "movielens")
    [record] = read_catalog(movies, "movielens")
    assert (event.user_id, event.item_id) == ("1", "31") == ("1", record.item_id)
    rees46 = _write(tmp_path, "rees46.csv", "event_time,event_type,product_id,category_id,"
                    "category_code,brand,price,user_id,user_session\n2019-10-01 00:00:00 UTC,"
                    "view, 44600062 ,1,,,35.79, 541312140 , s1 \n")
    [event] = _events(rees46, "rees46")
    assert (event.user_id, event.item_id, event.session_id) == ("541312140", "44600062", "s1")
    # A row cut short (a file truncated mid-write) is still refused in its place, not a
    # traceback halfway through a replay.
    with open(rees46, "a") as handle:
        handle.write("2019-10-01 00:00:01 UTC,view,44600063,1,,,35.79\n")
    read = list(read_events(rees46, "rees46"))
    assert isinstance(read[0], Event) and isinstance(read[1], Rejected)


def test_movielens_u_data_tab_without_header(tmp_path: Path) -> None:
    path = _write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    assert [e.user_id for e in _events(path, "movielens")] == ["196", "186"]


def test_a_headerless_log_keeps_its_first_row_whatever_its_ids(tmp_path: Path) -> None:
    """Its first line was taken for a header by its first character: a log whose user ids
    are not digits, or that quotes its values, lost its first rating without a word; a
    YooChoose log with session ids that are not digits read its first row as a header,
    and every next row failed on a ``sessionid`` column."""
    plain = _write(tmp_path, "r.csv", "u1,i1,4.0,1260759144\nu2,i2,3.0,1260759145\n")
    quoted = _write(tmp_path, "q.csv", '"1","31","2.5","1260759144"\n"2","32","3","1260759145"\n')
    for path in (plain, quoted):
        assert len(_events(path, "movielens")) == 2, path.name
    for bad in ("1,31,,1260759144", "1,31,2.5,2015-01-01"):  # data with one bad field:
        path = _write(tmp_path, "b.csv", f"{bad}\n2,32,3,1260759145\n")  # refused at its
        with pytest.raises(LogFileError, match="line 1"):  # line, not skipped as a header
            list(read_events(path, "movielens"))
    clicks = _write(tmp_path, "c.txt", "s-a\t214536502\t1396860669.277\n"
                    "s-b\t214536506\t1396860600.5\n")
    assert sorted(e.session_id for e in _events(clicks, "yoochoose")) == ["s-a", "s-b"]


def test_movielens_dat_of_ml_1m_reads_as_its_csv_does(tmp_path: Path) -> None:
    """ml-1m and ml-10m (the SASRec paper's MovieLens) separate fields by ``::``: refused
    before, as a one-field row."""
    dat = _write(tmp_path, "ratings.dat", "1::1193::5::978300760\n2::661::3.5::978300000\n")
    csv = _write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n"
                 "1,1193,5,978300760\n2,661,3.5,978300000\n")
    read = [(e.user_id, e.item_id, e.ts, e.context) for e in _events(dat, "movielens")]
    assert read == [("2", "661", 978300000000, {"rating": 3.5}),
                    ("1", "1193", 978300760000, {"rating": 5.0})]
    assert read == [(e.user_id, e.item_id, e.ts, e.context) for e in _events(csv, "movielens")]
    quoted = _write(tmp_path, "q.dat", '1::"66::5::978302109\n2::67::4::978302110\n')
    assert [e.item_id for e in _events(quoted, "movielens")] == ['"66', "67"]  # not one row


def test_csv_finds_its_columns_by_name_and_maps_other_logs_event_types(tmp_path: Path) -> None:
    """Retailrocket's events file as it is: ms times, ``visitorid``, ``addtocart`` and
    ``transaction``; a type no map knows is refused in its place, not dropped."""
    path = _write(tmp_path, "events.csv", "timestamp,visitorid,event,itemid,transactionid\n"
                  "1433221332117,257,view,355,\n1433221999827,111,addtocart,318,\n"
                  "1433222000000,111,transaction,318,4000\n1433222000001,111,remove,318,\n")
    out = list(read_events(path, "csv"))
    assert [(e.user_id, e.item_id, e.event_type, e.ts) for e in out[:3]] == [  # type: ignore[union-attr]
        ("257", "355", "view", 1433221332117), ("111", "318", "add_to_cart", 1433221999827),
        ("111", "318", "purchase", 1433222000000)]
    assert isinstance(out[3], Rejected) and out[3].error.reason is Reason.UNKNOWN_EVENT_TYPE


def test_csv_reads_taobaos_four_behaviours_its_favourites_as_clicks(tmp_path: Path) -> None:
    """Taobao's UserBehavior.csv, with the header it lacks: ``fav`` was dead-lettered."""
    path = _write(tmp_path, "UserBehavior.csv", "user_id,item_id,category_id,behavior_type,"
                  "timestamp\n1,2268318,2520377,pv,1511544070\n1,2333346,2520771,fav,1511561733\n"
                  "1,2576651,149192,cart,1511572885\n1,3830808,4181361,buy,1511593493\n")
    assert [e.event_type for e in _events(path, "csv")] == [
        "view", "click", "add_to_cart", "purchase"]


@pytest.mark.parametrize(("header", "row", "expected"), [
    # KuaiRec's small_matrix.csv: the first time-like column is its unix-seconds timestamp
    ("user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio",
     "14,148,4381,6067,2020-07-05 05:27:48.378,20200705.0,1593898068.378,0.72",
     ("14", "148", 1593898068378)),
    ("user_id,recipe_id,date,rating,review", '38094,40893,2003-02-17,3,"Great, with a twist"',
     ("38094", "40893", 1045440000000)),  # Food.com's interactions
    ("userId,venueId,venueCategoryId,venueCategory,latitude,longitude,timezoneOffset,"
     "utcTimestamp", "470,49bbd6c0f964a520f4531fe3,4bf58dd8d48988d127951735,Arts & Crafts "
     "Store,40.7198,-74.0025,-240,Tue Apr 03 18:00:09 +0000 2012",
     ("470", "49bbd6c0f964a520f4531fe3", 1333476009000)),  # Foursquare's check-ins
    ("user_id,video_id,date,hourmin,time_ms,is_click", "0,26838,20220408,1000,1649414306871,0",
     ("0", "26838", 1649414306871)),  # KuaiRand's: its date is a day
])
def test_csv_finds_video_recipe_and_venue_logs_columns(tmp_path: Path, header: str, row: str,
                                                       expected: tuple[str, str, int]) -> None:
    [event] = _events(_write(tmp_path, "log.csv", f"{header}\n{row}\n"), "csv")
    assert (event.user_id, event.item_id, event.ts) == expected


def test_a_headerless_csv_is_read_with_the_columns_its_user_names(tmp_path: Path) -> None:
    """Taobao's ``UserBehavior.csv`` (and Amazon 2018's ratings-only files, item first)
    come without a header; the columns named in order stand in for one, an empty name
    skipping a field. Named columns that do not fit the file are refused in one line."""
    path = _write(tmp_path, "UserBehavior.csv", "1,2268318,2520377,pv,1511544070\n"
                  "1,2333346,2520771,fav,1511561733\n")
    names = log_columns("user, item, , behavior_type, timestamp")
    assert [(e.user_id, e.item_id, e.event_type, e.ts) for e in _events(path, "csv", names)] == [
        ("1", "2268318", "view", 1511544070000), ("1", "2333346", "click", 1511561733000)]
    amazon = _write(tmp_path, "Beauty.csv", "0205616461\tA39HTATAQ9V7YF\t5.0\t1369699200\n")
    [event] = _events(amazon, "csv", log_columns("item,user,rating,timestamp"))
    assert (event.user_id, event.item_id, event.context) == (
        "A39HTATAQ9V7YF", "0205616461", {"rating": 5.0})
    # tab between fields, commas in a title: the first line splits as well on commas
    tabs = _write(tmp_path, "tracks.tsv", "u1\tOne, Two, Three\t1511544070\n"
                  "u1\tFour\t1511544071\n")
    assert [e.item_id for e in _events(tabs, "csv", log_columns("user,item,time"))] == [
        "One, Two, Three", "Four"]
    with pytest.raises(ValueError, match=r"the fields \(user, thing, time\) name no item"):
        log_columns("user,thing,time")
    refusals = [
        (path, "csv", ("user", "item", "time"),
         r"not a csv log \(line 1: ValueError: 3 columns named, but the first line has 5 "
         r"fields \(1, 2268318, 2520377, pv, 1511544070\)\)"),
        (_write(tmp_path, "h.csv", "user_id,product,timestamp\n1,2,3\n"), "csv",
         ("user", "item", "time"), r"the first line \(user_id, product, timestamp\) is a "
         "header: name columns only for a file without one"),
        (path, "movielens", ("user", "item", "time"), "columns are named for a csv log only"),
    ]
    for log, fmt, columns, message in refusals:
        with pytest.raises(LogFileError, match=message):
            list(read_events(log, fmt, columns))


def test_csv_reads_recbole_inter_files_iso_times_sessions_and_short_rows(tmp_path: Path) -> None:
    inter = _write(tmp_path, "ml.inter", "user_id:token\titem_id:token\trating:float\t"
                   "timestamp:float\n1\t1193\t5\t978300760\n")
    [event] = _events(inter, "csv")
    assert (event.user_id, event.item_id, event.ts, event.event_type, event.context) == (
        "1", "1193", 978300760000, "view", {"rating": 5.0})
    sessions = _write(tmp_path, "s.csv", "Session_ID;Item;Event_Time;Price\n"
                      "s1;a;2019-10-01 00:00:05 UTC;2.5\ns1;b;2019-10-01T00:00:06+01:00;\n")
    late, early = _events(sessions, "csv")[::-1]
    assert (late.user_id, late.session_id, late.ts, late.context) == (
        "s1", "s1", 1569888005000, {"price": 2.5})
    assert (early.item_id, early.ts, early.context) == ("b", 1569888005000 - 3_599_000, None)
    short = _write(tmp_path, "short.csv", "user_id,item_id,timestamp\n1,2,1433221332\n1,3\n")
    first, second = read_events(short, "csv")
    assert isinstance(first, Rejected) and first.error.reason is Reason.WRONG_TYPE
    assert isinstance(second, Event) and second.ts == 1433221332000


def test_csv_refuses_an_empty_type_and_reads_other_logs_names_units_and_quotes(
        tmp_path: Path) -> None:
    """Found by a review: an empty type was served as a view; Tmall's ``action_type`` went
    unread (every row a view); Amazon 2023 took the variant ``asin`` over the
    ``parent_asin`` its catalogue names; ``NA`` ratings stopped the file; nanosecond times
    were all dead letters; quoted commas in a ``|`` header chose the comma."""
    typed = _write(tmp_path, "t.csv", "user_id,item_id,timestamp,action_type\n"
                   "1,a,1433221332,purchase\n1,b,1433221333,\n")
    read = list(read_events(typed, "csv"))
    assert read[0].event_type == "purchase"  # type: ignore[union-attr]
    assert isinstance(read[1], Rejected) and read[1].error.reason is Reason.UNKNOWN_EVENT_TYPE
    amazon = _write(tmp_path, "a.csv", "rating,asin,parent_asin,user_id,timestamp\n"
                    "NA,B01VAR,B00PARENT,U1,1433221332117000000\n 4 ,B02VAR,B00P2,U1,1433221333\n")
    first, second = _events(amazon, "csv")
    assert (first.item_id, first.ts, first.context) == ("B00PARENT", 1433221332117, None)
    assert (second.item_id, second.context) == ("B00P2", {"rating": 4.0})
    piped = _write(tmp_path, "p.csv", 'user_id|item_id|ts|"a,b,c,d"\n1|a|1433221332|x\n')
    assert [e.ts for e in _events(piped, "csv")] == [1433221332000]


def test_csv_reads_an_app_databases_created_at_and_goodreads_worded_times(
        tmp_path: Path) -> None:
    """Rails' and Django's tables name the time ``created_at``; Goodreads (and Twitter)
    write ``Fri Aug 25 13:55:02 -0700 2017``: both were refused as naming no time."""
    rails = _write(tmp_path, "orders.csv", "id,user_id,product_id,created_at\n"
                   "1,u1,p1,2023-05-01 12:00:00\n")
    assert [e.ts for e in _events(rails, "csv")] == [1682942400000]
    goodreads = _write(tmp_path, "g.json", '{"user_id": "u", "book_id": "b", "rating": 4,'
                       ' "date_added": "Fri Aug 25 13:55:02 -0700 2017"}\n')
    [event] = _events(goodreads, "json")
    assert event.ts == 1503694502000 and event.item_id == "b"


def test_csv_without_the_columns_it_needs_is_refused_naming_them(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", "session_id;timeframe;eventdate\n1;2;3\n")
    with pytest.raises(LogFileError, match=r"x.csv: not a csv log \(line 1: ValueError: the "
                       r"fields \(session_id, timeframe, eventdate\) name no item "
                       r"\(item_id, item, iid, product_id, ...\)\)$"):
        read_events(path, "csv")
    years = _write(tmp_path, "y.csv", "user_id,title,2019,2020\n1,2,3,4\n")  # a header
    with pytest.raises(LogFileError, match=r"name no item \(item_id"):
        read_events(years, "csv")
    # Taobao's UserBehavior.csv has no header: said so, not that 1 names no user
    headless = _write(tmp_path, "UserBehavior.csv", "1,2268318,2520377,pv,1511544070\n")
    with pytest.raises(LogFileError, match=r"line 1: ValueError: the first line \(1, 2268318, "
                       r"2520377, pv, 1511544070\) is data, not a header: put a line naming "
                       r"the columns first, or name them in order with --columns"):
        read_events(headless, "csv")


def test_a_csv_log_without_times_is_read_in_file_order(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """goodbooks-10k's ``ratings.csv`` (``user_id,book_id,rating``) is sorted by time but
    names none: it was refused. Its rows are now timed by their place among their user's,
    a minute apart, as the ``sequences`` format's are: each user's keep the file's order
    (not sorted by item), in a header's log and in a headerless one, and the user is told
    once. Book-Crossing's, MyAnimeList's, HetRec Last.fm's and Steam-200k's logs name no
    time either (their items: ``ISBN``, ``anime_id``, ``artistID``; Last.fm's plays a
    ``weight``; Steam's ``play``)."""
    path = _write(tmp_path, "ratings.csv", "user_id,book_id,rating\n2,4081,4\n1,258,5\n"
                  "\n2,260,5\n")
    with caplog.at_level(logging.WARNING, logger="streams.readers"):
        events = _events(path, "csv")
    assert [(e.user_id, e.item_id, e.ts - SEQUENCE_BASE_MS, e.context) for e in events] == [
        ("2", "4081", 0, {"rating": 4.0}), ("1", "258", 0, {"rating": 5.0}),
        ("2", "260", SEQUENCE_STEP_MS, {"rating": 5.0})]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} has no time: each user's rows are taken in the file's order, a minute apart "
        "(a file in another order, by item say, gives its models a false one)"]
    crossing = _write(tmp_path, "Ratings.csv", '"User-ID";"ISBN";"Book-Rating"\n'
                      '"276725";"034545104X";"0"\n')  # Book-Crossing's, by ISBN, 0-10
    anime = _write(tmp_path, "rating.csv", "user_id,anime_id,rating\n1,20,-1\n")  # MyAnimeList
    assert [(e.user_id, e.item_id, e.context) for log in (crossing, anime)
            for e in _events(log, "csv")] == [
        ("276725", "034545104X", {"rating": 0.0}), ("1", "20", {"rating": -1.0})]
    lastfm = _write(tmp_path, "user_artists.dat", "userID\tartistID\tweight\n2\t51\t13883\n")
    assert [(e.item_id, e.context) for e in _events(lastfm, "csv")] == [  # HetRec's Last.fm
        ("51", {"count": 13883.0})]  # plays by artist: a count
    steam = _write(tmp_path, "steam-200k.csv", '151603712,"The Elder Scrolls V Skyrim",purchase,'
                   '1.0,0\n151603712,"The Elder Scrolls V Skyrim",play,273.0,0\n')
    assert [e.event_type for e in _events(steam, "csv", log_columns("user,item,type,,"))] == [
        "purchase", "view"]  # a play is a media app's view
    headless = _write(tmp_path, "to_read.csv", "9,8\n15,398\n 9 ,7\n")  # one user, spaced
    assert [(e.user_id, e.item_id, e.ts - SEQUENCE_BASE_MS) for e in _events(
        headless, "csv", log_columns("user,item"))] == [
        ("9", "8", 0), ("15", "398", 0), ("9", "7", SEQUENCE_STEP_MS)]
    # the rule is csv's: a json log still needs its time (every dump read so far has one)
    with pytest.raises(LogFileError, match=r"name no time \(timestamp, ts"):
        read_events(_write(tmp_path, "r.json", '{"user_id": 1, "book_id": 2}\n'), "json")


def test_csv_reads_uci_online_retail_its_quantity_a_count(tmp_path: Path) -> None:
    """UCI's Online Retail II: ``StockCode``, ``InvoiceDate`` and ``Quantity`` went unread,
    so the file was refused as naming no item. The first Online Retail's Kaggle csv writes
    ``12/1/2010 8:26``, a day-or-month order no reader can tell: refused, in words that
    name the formats read (strptime's named only the last one tried). A count that is no
    number (a ``weight`` of ``2 lbs``, in a log where it is no count) is none."""
    retail = _write(tmp_path, "online_retail_II.csv", "Invoice,StockCode,Description,Quantity,"
                    "InvoiceDate,Price,Customer ID,Country\n489434,85048,15CM CHRISTMAS GLASS "
                    "BALL 20 LIGHTS,12,2009-12-01 07:45:00,6.95,13085,United Kingdom\n")
    [event] = _events(retail, "csv")
    assert (event.user_id, event.item_id, event.ts, event.context) == (
        "13085", "85048", 1259653500000, {"price": 6.95, "count": 12.0})
    old = _write(tmp_path, "data.csv", "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,"
                 "UnitPrice,CustomerID,Country\n536365,85123A,WHITE HANGING HEART T-LIGHT "
                 "HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom\n")
    with pytest.raises(LogFileError, match=r"line 2: ValueError: time '12/1/2010 8:26' is no "
                       r"unix time, ISO date or 'Fri Aug 25 13:55:02 -0700 2017'\)$"):
        read_events(old, "csv")
    shop = _write(tmp_path, "shop.json", '{"user_id": 1, "item_id": 2, "ts": 1500000000, '
                  '"weight": "2 lbs"}\n{"user_id": 1, "item_id": 3, "ts": 1500000001, '
                  '"weight": "nan"}\n')
    assert [e.context for e in _events(shop, "json")] == [None, None]


def test_a_log_without_a_time_we_know_is_refused_when_a_field_could_be_its_time(
        tmp_path: Path) -> None:
    """Review: read in file order, a time under a name not known (``timestamp_ms``), or a
    misspelt ``--columns`` name, was dropped without a word; a header with one known name
    was read as an event under ``--columns``. Refused in one line, naming the field."""
    timed = _write(tmp_path, "clicks.csv", "user_id,item_id,timestamp_ms\n1,a,300\n2,b,100\n")
    with pytest.raises(LogFileError, match=r"name no time \(timestamp, ts, time, event_time, "
                       r"...\), and a log without one is read in file order only when it has "
                       r"no other field \(timestamp_ms\)"):
        read_events(timed, "csv")
    plays = _write(tmp_path, "plays.csv", "user_id,item_id,plays,client\n2,51,13,web\n")
    with pytest.raises(LogFileError, match=r"no other field \(client\)"):
        read_events(plays, "csv")
    with pytest.raises(ValueError, match=r"no other field \(timestmp\)"):
        log_columns("user,item,rating,timestmp")
    assert log_columns("user,item,user") == ("user", "item", "user")  # known twice: the first
    header = _write(tmp_path, "h.csv", "user_id,movie\n1,10\n")
    with pytest.raises(LogFileError, match=r"the first line \(user_id, movie\) is a header"):
        read_events(header, "csv", log_columns("user,item"))


def test_json_reads_review_dumps_by_their_field_names(tmp_path: Path) -> None:
    """Amazon's 2018 reviews (the SASRec paper's Beauty and Games), as their ``.json.gz``;
    a number for an id is its text; a line that is not an object refuses the file."""
    import gzip

    lines = ('{"overall": 5.0, "reviewerID": "A1", "asin": "B2", "unixReviewTime": 1400000100}\n'
             '{"overall": 3.0, "reviewerID": "A1", "asin": "B1", "unixReviewTime": 1400000000,'
             ' "style": {"Size:": " Big"}}\n'
             '{"reviewerID": "A2", "asin": "B1", "unixReviewTime": null}\n')
    path = tmp_path / "reviews_Beauty_5.json.gz"
    path.write_bytes(gzip.compress(lines.encode()))
    missing_time, *events = read_events(path, "json")
    assert isinstance(missing_time, Rejected)
    assert [(e.user_id, e.item_id, e.ts, e.context) for e in events] == [  # type: ignore[union-attr]
        ("A1", "B1", 1400000000000, {"rating": 3.0}), ("A1", "B2", 1400000100000, {"rating": 5.0})]
    yelp = _write(tmp_path, "yelp.json", '{"user_id": 12, "business_id": "b", "stars": 4, '
                  '"date": "2016-03-09 00:44:42"}\n')
    [event] = _events(yelp, "json")
    assert (event.user_id, event.item_id, event.ts, event.context) == (
        "12", "b", 1457484282000, {"rating": 4.0})
    broken = _write(tmp_path, "b.json", '{"user_id": "1", "item_id": "2", "ts": 1}\n[1, 2]\n')
    with pytest.raises(LogFileError, match=r"b.json: not a json log \(line 2: ValueError: not "
                       r"a JSON object"):
        read_events(broken, "json")
    yes = _write(tmp_path, "y.json", '{"user_id": "1", "item_id": "2", "ts": 1, "rating": true}\n')
    with pytest.raises(LogFileError, match=r"y.json: not a json log \(line 1: TypeError: not a "
                       r"number: True\)"):
        read_events(yes, "json")


def test_json_reads_steams_python_literal_reviews(tmp_path: Path) -> None:
    """Steam's reviews (the SASRec paper's), written by Python's ``repr``: every user has
    a ``username``, some a ``user_id`` as well (in each of their reviews), which is
    taken first, as in any log; a ``user_name`` beside a ``user_id`` never wins. A line
    neither JSON nor a literal refuses the file, naming it; a literal is never run."""
    path = _write(tmp_path, "steam_reviews.json", "".join(line + "\n" for line in (
        "{'username': 'Chaos Syren', 'hours': 0.1, 'product_id': '725280', "
        "'date': '2017-12-17', 'text': 'It\\'s fun', 'early_access': False}",
        "{'username': 'Ryxxy', 'user_id': '76561198', 'product_id': '328100', "
        "'date': '2017-12-27', 'found_funny': 123456789012345678901234567890, 1: (1, 2)}",
        "{'username': 'Chaos Syren', 'product_id': '35140', 'date': '2018-01-02'}")))
    events = _events(path, "json")
    assert [(e.user_id, e.item_id, e.ts) for e in events] == [
        ("Chaos Syren", "725280", 1513468800000), ("76561198", "328100", 1514332800000),
        ("Chaos Syren", "35140", 1514851200000)]
    named = _write(tmp_path, "named.csv", "user_id,user_name,item_id,timestamp\n"
                   "42,alice,1,1500000000\n42,Alice Smith,2,1500000001\n")
    assert {e.user_id for e in _events(named, "csv")} == {"42"}
    ran = tmp_path / "ran"
    code = _write(tmp_path, "code.json", "{'username': 'u', 'product_id': "
                  f"open({str(ran)!r}, 'w').write('x'), 'date': '2017-12-17'}}\n")
    with pytest.raises(LogFileError, match=r"code.json: not a json log \(line 1: ValueError: "
                       r"unexpected .*; nor a Python literal: malformed node or string on "
                       r"line 1\)"):
        read_events(code, "json")
    assert not ran.exists()
    broken = _write(tmp_path, "trailing.json", '{"user_id": "u", "item_id": "i", "ts": 1,}\n')
    with pytest.raises(LogFileError, match=r"line 1: JSONDecodeError: trailing comma"):
        read_events(broken, "json")


def test_json_finds_the_fields_of_each_object(tmp_path: Path) -> None:
    """A review found by a review: the fields were those of the first object, so a price
    or a session first met later was never read, and ``"type": "review"`` (old Yelp
    dumps) dead-lettered every row."""
    path = _write(tmp_path, "mixed.json", "".join(line + "\n" for line in (
        '{"session_id": "s1", "asin": "V1", "ts": 1400000000, "type": "review"}',
        '{"user_id": "u2", "session_id": "s2", "asin": "V2", "parent_asin": "P2",'
        ' "ts": 1400000001, "price": 9.5, "type": "purchase"}',
        '{"user_id": "u3", "parent_asin": "P3", "ts": 1400000002, "": 7}',
        '{"user_id": "u4", "ts": 1400000003}')))  # "": 7 was read for every field it lacked
    *events, no_item = read_events(path, "json")
    assert [(e.user_id, e.item_id, e.session_id, e.event_type, e.context)  # type: ignore[union-attr]
            for e in events] == [("s1", "V1", "s1", "view", None),
                                 ("u2", "P2", "s2", "purchase", {"price": 9.5}),
                                 ("u3", "P3", None, "view", None)]
    assert isinstance(no_item, Rejected) and no_item.error.reason is Reason.WRONG_TYPE  # null


def test_a_byte_that_is_not_utf8_is_named_on_its_own_line(tmp_path: Path) -> None:
    """Text is decoded ahead in blocks: a bad byte on line 1,002 was reported on line 545,
    and one in the first block on line 1 (the header)."""
    rows = b"1,2,1500000000\n" * 1000
    late, early = tmp_path / "late.csv", tmp_path / "early.txt"
    late.write_bytes(b"user_id,item_id,timestamp\n" + rows + b"1,Caf\xe9,1\n")
    early.write_bytes(b"u1 a b\nu2 Caf\xe9\n")
    with pytest.raises(LogFileError, match=r"late.csv: not UTF-8 text \(line 1002: invalid "
                       r"continuation byte at column 6\)"):
        read_events(late, "csv")
    with pytest.raises(LogFileError, match=r"early.txt: not UTF-8 text \(line 2: "):
        read_events(early, "sequences")


def test_gzipped_logs_read_as_their_plain_text(tmp_path: Path) -> None:
    """REES46's months and Amazon's dumps come as ``.gz``: refused before as not UTF-8."""
    import gzip

    plain = _write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n"
                   "1,10,4.0,964982703\n1,20,3.5,964982000\n")
    packed = tmp_path / "ratings.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    key = [(e.user_id, e.item_id, e.ts, e.context) for e in _events(plain, "movielens")]
    assert [(e.user_id, e.item_id, e.ts, e.context) for e in _events(packed, "movielens")] == key
    assert [(e.user_id, e.item_id, e.ts, e.context) for e in _events(packed, "csv")] == key
    # the same ids: replaying one after the other is a redelivery, not new events
    assert [e.event_id for e in _events(packed, "movielens")] == [
        e.event_id for e in _events(plain, "movielens")]
    cut = tmp_path / "cut.csv.gz"  # a download stopped halfway
    cut.write_bytes(packed.read_bytes()[:-12])
    with pytest.raises(LogFileError, match=r"cut.csv.gz: not a whole gzip file \(Compressed "
                       "file ended"):
        read_events(cut, "csv")
    # gzip is known by its bytes, not its name: either way a file reads as what it holds
    misnamed = tmp_path / "downloaded.csv"
    misnamed.write_bytes(packed.read_bytes())
    assert [(e.user_id, e.item_id, e.ts) for e in _events(misnamed, "movielens")] == [
        k[:3] for k in key]
    named = _write(tmp_path, "plain.csv.gz", plain.read_text())
    assert [(e.user_id, e.item_id, e.ts) for e in _events(named, "movielens")] == [
        k[:3] for k in key]


@pytest.mark.parametrize("sep", ["\t", ","])
def test_yoochoose_with_header(tmp_path: Path, sep: str) -> None:
    rows = ["SessionId", "ItemId", "Time"], ["7", "214536502", "1396860669.277"], \
        ["7", "214536506", "1396860600.5"]
    path = _write(tmp_path, "clicks.txt", "\n".join(sep.join(r) for r in rows) + "\n")
    events = _events(path, "yoochoose")
    assert [(e.item_id, e.ts, e.session_id, e.event_type) for e in events] == [
        ("214536506", 1396860600500, "7", "click"), ("214536502", 1396860669277, "7", "click")]


def test_yoochoose_with_sr_gnns_header(tmp_path: Path) -> None:
    """SR-GNN's copy of the original file names its columns in snake_case; refused
    before (``KeyError: 'sessionid'``, a review)."""
    path = _write(tmp_path, "yoo.csv", "session_id,timestamp,item_id,category\n"
                  "1,2014-04-07T10:54:09.868Z,214536500,0\n1,2014-04-07T10:51:09.277Z,214536502,0\n")
    events = _events(path, "yoochoose")
    assert [(e.session_id, e.item_id, e.ts) for e in events] == [
        ("1", "214536502", 1396867869277), ("1", "214536500", 1396868049868)]


def test_yoochoose_original_clicks_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "yoochoose-clicks.dat",
                  "1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:54:09.868Z,214536500,0\n")
    events = _events(path, "yoochoose")
    assert [e.item_id for e in events] == ["214536502", "214536500"]
    assert events[0].ts == 1396867869277


def test_yoochoose_times_without_a_zone_are_utc_whatever_the_machines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As every other reader reads them; a re-exported copy without the ``Z`` moved with
    the host's ``TZ`` (4 h off in New York)."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        path = _write(tmp_path, "yoochoose-clicks.dat", "1,2014-04-07T10:51:09.277,214536502,0\n")
        assert [e.ts for e in _events(path, "yoochoose")] == [1396867869277]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_session_cell_of_spaces_is_no_session_not_a_lost_event(tmp_path: Path) -> None:
    """Empty meant no session, but a cell of spaces was kept, stripped to "" and refused."""
    log = _write(tmp_path, "log.csv", "user,item,session,time\n1,31, ,1600000000\n")
    [event] = _events(log, "csv")
    assert (event.user_id, event.item_id, event.session_id) == ("1", "31", None)
    rees46 = _write(tmp_path, "rees.csv", "event_time,event_type,product_id,category_id,"
                    "category_code,brand,price,user_id,user_session\n"
                    "2019-10-01 00:00:00 UTC,view,1,9,,,2,7, \n")
    assert [e.session_id for e in _events(rees46, "rees46")] == [None]


def test_diginetica_anonymous_sessions_get_session_users(tmp_path: Path) -> None:
    path = _write(tmp_path, "views.csv", "session_id;user_id;item_id;timeframe;eventdate\n"
                  "1;NA;81766;526309;2016-05-09\n2;55;31331;1000;2016-05-09\n")
    events = _events(path, "diginetica")
    assert [(e.user_id, e.item_id, e.session_id) for e in events] == [
        ("55", "31331", "2"), ("s1", "81766", "1")]
    assert events[0].ts == 1462752000000 + 1000


def test_diginetica_as_cikm_cup_ships_it(tmp_path: Path) -> None:
    """``train-item-views.csv`` names its columns in camelCase; the snake_case header is
    SR-GNN's preprocessing. Refused before: ``KeyError: 'user_id'`` (a review)."""
    path = _write(tmp_path, "train-item-views.csv", "sessionId;userId;itemId;timeframe;"
                  "eventdate\n1;NA;81766;526309;2016-05-09\n2;55;31331;1000;2016-05-09\n")
    assert [(e.user_id, e.item_id, e.session_id) for e in _events(path, "diginetica")] == [
        ("55", "31331", "2"), ("s1", "81766", "1")]


def test_rees46_maps_types_keeps_price_and_skips_removals(tmp_path: Path) -> None:
    header = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id," \
             "user_session\n"
    path = _write(tmp_path, "events.csv", header +
                  "2019-10-01 00:00:05 UTC,purchase,3,9,beauty.x,acme,1.50,7,s1\n"
                  "2019-10-01 00:00:00 UTC,view,1,9,,acme,35.79,7,s1\n"
                  "2019-10-01 00:00:05 UTC,remove_from_cart,1,9,,,35.79,7,s1\n"
                  "2019-10-01 00:00:05 UTC,cart,2,9,,,,8,\n"
                  "2019-10-01 00:00:06 UTC,Purchase,4,9,,,,8,\n")
    out = list(read_events(path, "rees46"))
    # Another type is refused by the schema, a dead letter for replay, never a row lost.
    assert isinstance(out[-1], Rejected) and out[-1].error.reason is Reason.UNKNOWN_EVENT_TYPE
    events = out[:-1]
    assert [(e.user_id, e.item_id, e.event_type, e.session_id, e.context) for e in events] == [
        ("7", "1", "view", "s1", {"price": 35.79}),
        ("7", "3", "purchase", "s1", {"price": 1.5}),   # ties keep file order
        ("8", "2", "add_to_cart", None, None)]
    assert events[0].ts == 1569888000000 and events[1].ts == 1569888005000
    assert list(read_events(path, "rees46"))[:-1] == events  # ids are deterministic
    # A time that names its offset keeps it (it was read as UTC): 3 h earlier.
    moved = _write(tmp_path, "moved.csv", header + "2019-10-01 00:00:00+03:00,view,1,9,,,,7,\n")
    assert _events(moved, "rees46")[0].ts == 1569888000000 - 3 * 3_600_000


def test_sequences_synthesize_interleaved_timestamps(tmp_path: Path) -> None:
    path = _write(tmp_path, "seq.txt", "u1 a b c\nu2 d e\n")
    events = _events(path, "sequences")
    assert [(e.user_id, e.item_id) for e in events] == [
        ("u1", "a"), ("u2", "d"), ("u1", "b"), ("u2", "e"), ("u1", "c")]
    assert events[2].ts == SEQUENCE_BASE_MS + SEQUENCE_STEP_MS


def test_sequences_read_the_sasrec_repositorys_user_item_pairs(tmp_path: Path) -> None:
    """``ml-1m.txt``, ``Beauty.txt``, ``Video.txt``: one ``user item`` pair a line. Every
    pair was a user's first item, so all of a user's events had one time: a replay sent
    them at once, and the next-item order rested on ties."""
    pairs = _write(tmp_path, "Video.txt", "1 6393\n1 13504\n2 7\n1 14087\n")
    events = _events(pairs, "sequences")
    assert [(e.user_id, e.item_id, (e.ts - SEQUENCE_BASE_MS) // SEQUENCE_STEP_MS)
            for e in events] == [("1", "6393", 0), ("2", "7", 0), ("1", "13504", 1),
                                 ("1", "14087", 2)]


def test_a_byte_order_mark_a_blank_line_and_a_short_row_are_read_or_refused_plainly(
        tmp_path: Path) -> None:
    """A BOM (Excel's CSV) hid rees46's first header name, and made a headerless ``u.data``
    lose its first rating as a "header"; a blank line refused a sequences file; a short
    DIGINETICA row was a TypeError traceback instead of the one-line refusal, which now
    names the line of the row that does not parse."""
    from streams.readers import LogFileError

    header = "event_time,event_type,product_id,category_id,category_code,brand,price," \
             "user_id,user_session\n"
    rees46 = tmp_path / "bom.csv"
    rees46.write_bytes(("\ufeff" + header + "2019-10-01 00:00:00 UTC,view,1,9,,,2,7,s\n")
                       .encode())
    assert [e.item_id for e in _events(rees46, "rees46")] == ["1"]
    udata = tmp_path / "u.data"
    udata.write_bytes("\ufeff1\t2\t3\t881250949\n1\t5\t4\t881250950\n".encode())
    assert [e.item_id for e in _events(udata, "movielens")] == ["2", "5"]
    blank = _write(tmp_path, "seq.txt", "u1 a b\n\nu2 c\n\n")
    assert [(e.user_id, e.item_id) for e in _events(blank, "sequences")] == [
        ("u1", "a"), ("u2", "c"), ("u1", "b")]
    short = _write(tmp_path, "views.csv", "session_id;user_id;item_id;timeframe;eventdate\n"
                   "1;NA;81766;526309;2016-05-09\n2;NA;31331\n")
    with pytest.raises(LogFileError, match="not a diginetica log \\(line 3: TypeError"):
        read_events(short, "diginetica")
    cut = _write(tmp_path, "u.data", "1\t2\t3\t881250949\n1\t5\n")  # no header: line 2
    with pytest.raises(LogFileError, match="line 2: ValueError: not enough values"):
        read_events(cut, "movielens")
    rees46.write_text(header + "2019-10-01 00:00:00 UTC,view,1,9,,,abc,7,s\n")
    with pytest.raises(LogFileError, match="line 2: ValueError: could not convert"):
        read_events(rees46, "rees46")
    clicks = _write(tmp_path, "clicks.tsv", "SessionId\tItemId\tTime\n1\t2\t10\n1\t3\tx\n")
    with pytest.raises(LogFileError, match="line 3: ValueError"):
        read_events(clicks, "yoochoose")


INTER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


@pytest.mark.parametrize("given", ["train", "valid", "test"])
def test_amazon_inter_files_give_each_users_whole_sequence_once(tmp_path: Path,
                                                                given: str) -> None:
    """UniSRec's split: train rows are prefixes with their next item, the valid row the
    train sequence with the next-to-last item, the test row that with the last."""
    _write(tmp_path, "Sci.train.inter", INTER + "0\t0 1\t2\n0\t0\t1\n1\t5\t6\n")
    _write(tmp_path, "Sci.valid.inter", INTER + "0\t0 1 2\t3\n1\t5 6\t7\n")
    _write(tmp_path, "Sci.test.inter", INTER + "0\t0 1 2 3\t4\n1\t5 6 7\t8\n")
    events = _events(tmp_path / f"Sci.{given}.inter", "amazon")
    assert [(e.user_id, e.item_id) for e in events] == [
        ("0", "0"), ("1", "5"), ("0", "1"), ("1", "6"), ("0", "2"), ("1", "7"),
        ("0", "3"), ("1", "8"), ("0", "4")]
    assert events[2].ts == SEQUENCE_BASE_MS + SEQUENCE_STEP_MS
    assert _events(tmp_path / "Sci.test.inter", "amazon") == events  # same ids from any file
    # gzipped, one split or all: read them all (only the file given was, a review found)
    import gzip

    test = tmp_path / "Sci.test.inter"
    (tmp_path / "Sci.test.inter.gz").write_bytes(gzip.compress(test.read_bytes()))
    test.unlink()
    assert _events(tmp_path / "Sci.test.inter.gz", "amazon") == events
    assert _events(tmp_path / f"Sci.{given}.inter{'' if given != 'test' else '.gz'}",
                   "amazon") == events


def test_amazon_keeps_a_long_users_newest_items(tmp_path: Path) -> None:
    """UniSRec cuts each row's history to its newest 50 items, so a longer user's rows
    are all 51 items long: the first one read (the oldest train row) won, and the user's
    newest items, the held-out ones among them, were lost (a review)."""
    items = [str(i) for i in range(60)]
    rows = "".join(f"0\t{' '.join(items[max(0, t - 50):t])}\t{items[t]}\n"
                   for t in range(1, 58))
    _write(tmp_path, "Sci.train.inter", INTER + rows)
    _write(tmp_path, "Sci.valid.inter", INTER + f"0\t{' '.join(items[8:58])}\t58\n")
    _write(tmp_path, "Sci.test.inter", INTER + f"0\t{' '.join(items[9:59])}\t59\n\n")
    events = _events(tmp_path / "Sci.test.inter", "amazon")  # its blank last line skipped
    assert [e.item_id for e in events] == items[9:]  # the newest 51: history and target


def test_a_bad_byte_in_a_split_file_beside_the_one_named_is_found_there(tmp_path: Path
                                                                        ) -> None:
    _write(tmp_path, "Sci.train.inter", INTER + "0\t0\t1\n")
    (tmp_path / "Sci.valid.inter").write_bytes(INTER.encode() + b"0\t0 1\tCaf\xe9\n")
    named = _write(tmp_path, "Sci.test.inter", INTER + "0\t0 1 2\t3\n")
    with pytest.raises(LogFileError, match=r"Sci.valid.inter: not UTF-8 text \(line 2: "):
        read_events(named, "amazon")


def test_amazon_test_file_alone_and_a_malformed_line(tmp_path: Path) -> None:
    alone = _write(tmp_path, "Sci.test.inter", INTER + "0\t0 1\t2\n")
    assert [e.item_id for e in _events(alone, "amazon")] == ["0", "1", "2"]
    bad = _write(tmp_path, "Other.test.inter", INTER + "0\t0 1 2\n")
    with pytest.raises(ValueError, match="Other.test.inter:2: expected user_id<TAB>history"):
        list(read_events(bad, "amazon"))


def test_jsonl_rejects_first_then_events_in_time_order(tmp_path: Path) -> None:
    a = Event("0b6f2c8e-3f5e-4c1a-9a57-7d2f1c3b4a5e", "u", "i", "view", 1_700_000_000_500)
    b = Event("1b6f2c8e-3f5e-4c1a-9a57-7d2f1c3b4a5e", "u", "j", "view", 1_700_000_000_000)
    path = tmp_path / "events.jsonl"
    path.write_bytes(a.to_json() + b"\nnot json\n\n" + b.to_json() + b"\n")
    out = list(read_events(path, "jsonl"))
    assert isinstance(out[0], Rejected) and out[0].error.reason is Reason.BAD_JSON
    assert out[1:] == [b, a]


def test_a_byte_order_mark_does_not_cost_a_json_lines_file_its_first_record(
        tmp_path: Path) -> None:
    import codecs

    from streams.catalog_files import scan_catalog

    event = Event("0b6f2c8e-3f5e-4c1a-9a57-7d2f1c3b4a5e", "u", "i", "view", 1_700_000_000_500)
    path = tmp_path / "events.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + event.to_json() + b"\n")
    assert list(read_events(path, "jsonl")) == [event]
    items = tmp_path / "items.jsonl"
    items.write_bytes(codecs.BOM_UTF8 + b'{"item_id": "i", "title": "T"}\n')
    assert [r.item_id for r in scan_catalog(items, "jsonl")] == ["i"]


def test_unknown_format_and_missing_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format 'tsv'; choose one of movielens"):
        read_events(tmp_path, "tsv")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_events(tmp_path / "missing.csv", "movielens")


def test_synthetic_log_has_the_promised_structure() -> None:
    cfg = SyntheticConfig(users=300, items=200, events=20_000, seed=3)
    events = list(generate(cfg))
    assert len(events) == cfg.events and list(generate(cfg)) == events  # deterministic
    assert all(a.ts <= b.ts for a, b in zip(events, events[1:]))
    assert len({e.event_id for e in events}) == len(events)
    counts = sorted(Counter(e.item_id for e in events).values(), reverse=True)
    assert sum(counts[:20]) > 0.3 * len(events)  # power law: 10% of items, >30% of events
    # Sequential structure: a user's next item repeats a seen transition far above chance.
    last: dict[str, str] = {}
    pairs: Counter[tuple[str, str]] = Counter()
    for e in events:
        if e.user_id in last:
            pairs[(last[e.user_id], e.item_id)] += 1
        last[e.user_id] = e.item_id
    top_share = sum(c for _, c in pairs.most_common(cfg.items * cfg.successors)) / sum(pairs.values())
    assert top_share > 0.4
    # Sessions: gaps over 30 min separate sessions, gaps inside are shorter.
    by_user: dict[str, list[Event]] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    for seq in by_user.values():
        for a, b in zip(seq, seq[1:]):
            assert (b.session_id != a.session_id) == (b.ts - a.ts >= 1_800_000)


def test_synthetic_drift_changes_tastes_after_the_drift_point() -> None:
    base = list(generate(SyntheticConfig(users=200, items=300, events=10_000, seed=1)))
    drift = list(generate(SyntheticConfig(users=200, items=300, events=10_000, seed=1,
                                          drift_at=0.5)))
    assert base[:5000] == drift[:5000] and base[5000:] != drift[5000:]
    with pytest.raises(ValueError, match="drift_at"):
        SyntheticConfig(drift_at=1.5)


@pytest.mark.parametrize(
    ("index", "ts", "elapsed", "rate", "scale", "expected"),
    [
        (10, 0, 0.0, None, None, 0.0),            # as fast as possible
        (10, 0, 0.0, 100.0, None, 0.1),           # 10th record at 100/s is due at 0.1 s
        (10, 0, 0.5, 100.0, None, 0.0),           # behind schedule: send now
        (0, 60_000, 0.0, None, 60.0, 1.0),        # one minute of event time at 60x = 1 s
        (1, 60_000, 0.0, 1000.0, 60.0, 1.0),      # both: the slower wins
    ],
)
def test_pacing_delay(index: int, ts: int, elapsed: float, rate: float | None,
                      scale: float | None, expected: float) -> None:
    assert pacing_delay(index, ts, 0, elapsed, rate, scale) == pytest.approx(expected)


def test_synthetic_catalogue_names_each_items_hidden_topic() -> None:
    from streams.synthetic import catalogue

    cfg = SyntheticConfig(users=50, items=40, events=2000, topics=5, seed=3)
    records = catalogue(cfg)
    assert [r.item_id for r in records] == [f"i{i}" for i in range(40)]
    assert all(len(r.categories) == 1 and r.categories[0].startswith("topic-") for r in records)
    assert catalogue(cfg) == records  # deterministic for a seed
    topic = {r.item_id: r.categories[0] for r in records}
    events = list(generate(cfg))
    same = np.mean([topic[a.item_id] == topic[b.item_id] for a, b in zip(events, events[1:])
                    if a.user_id == b.user_id and a.session_id == b.session_id])
    assert same > 0.5  # successors come mostly from the item's topic (chance: about 0.2)


def test_a_log_that_is_not_in_its_format_stops_the_command_in_one_line(
        tmp_path: Path, streamrec: Callable[..., tuple[int, str]]) -> None:
    bad = _write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,2,abc,100\n")
    assert streamrec("evaluate", "--data", str(bad), "--format", "movielens") == (
        1, f"error: {bad}: not a movielens log (line 2: ValueError: could not convert "
        "string to float: 'abc')")
    assert streamrec("evaluate", "--data", str(tmp_path), "--format", "movielens") == (
        1, f"error: not a file: {tmp_path}")
    header_only = _write(tmp_path, "empty.csv", "userId,movieId,rating,timestamp\n")
    assert streamrec("replay", str(header_only), "--format", "movielens") == (
        1, f"error: {header_only}: no records in format movielens; nothing was sent")
    quote = _write(tmp_path, "quote.csv", "userId,movieId,rating,timestamp\n1,\"2,4,100\n"
                   + "x" * 140_000 + "\n")  # a stray quote: one field past csv's limit
    code, line = streamrec("evaluate", "--data", str(quote), "--format", "movielens")
    assert (code, line) == (1, f"error: {quote}: not a movielens log (line 2: Error: field "
                            "larger than field limit (131072))")
    future = _write(tmp_path, "future.csv", "userId,movieId,rating,timestamp\n"
                    "1,2,4,99999999999999\n")  # parses, but the schema refuses its time
    code, text = streamrec("evaluate", "--data", str(future), "--format", "movielens")
    assert code == 2 and "holds no valid events in format movielens" in text


def test_a_csv_row_the_schema_refuses_comes_as_rejected_in_its_place(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Replay dead-letters it (as a JSON line's) rather than stopping with part of the
    file sent; training and evaluation leave it out and say so."""
    import orjson

    from streams.readers import read_valid_events

    path = _write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n"
                  "1,10,4.0,964982000\n1,,3.0,964982100\n2,30,5.0,964982200\n")
    out = list(read_events(path, "movielens"))
    assert [type(r).__name__ for r in out] == ["Event", "Rejected", "Event"]
    assert out[1].error.reason is Reason.BAD_VALUE  # type: ignore[union-attr]
    assert orjson.loads(out[1].raw)["ts"] == 964_982_100_000  # type: ignore[union-attr]
    with caplog.at_level("WARNING", logger="streams.readers"):
        assert [e.item_id for e in read_valid_events(path, "movielens")] == ["10", "30"]
    assert "1 of its 3 rows are not valid events and were left out (the first: " in caplog.text


def test_a_refused_row_keeps_its_values_as_read_in_its_letter(tmp_path: Path) -> None:
    """A time past 64 bits stopped a replay halfway (orjson refused to write the letter),
    that row in neither topic; a NaN rating reached the letter as ``null``."""
    path = _write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n"
                  "1,10,4.0,964982000\n2,20,nan,964982100\n3,30,5.0,1e17\n")
    out = list(read_events(path, "movielens"))
    assert [type(r).__name__ for r in out] == ["Event", "Rejected", "Rejected"]
    assert b'"rating": NaN' in out[1].raw  # type: ignore[union-attr]
    assert b'"ts": 100000000000000000000' in out[2].raw  # type: ignore[union-attr]
    assert out[2].error.reason is Reason.BAD_TIMESTAMP  # type: ignore[union-attr]
    endless = _write(tmp_path, "inf.csv", "userId,movieId,rating,timestamp\n1,10,4.0,inf\n")
    with pytest.raises(LogFileError, match="line 2: OverflowError"):
        list(read_events(endless, "movielens"))  # MovieLens' own format has a time or is not it
    # in any csv log, a time that says there is none (R writes NA) is this row's fault, not
    # the file's: refused in its place, where one such row stopped a replay
    nameless = _write(tmp_path, "na.csv", "userId,movieId,rating,timestamp\n1,10,4.0,inf\n"
                      "2,20,4.0,NA\n3,30,4.0,nan\n4,40,4.0, \n5,50,4.0,964982000\n")
    out = list(read_events(nameless, "csv"))
    assert [type(r).__name__ for r in out] == ["Rejected"] * 4 + ["Event"]
    assert {r.error.reason for r in out[:4]} == {Reason.WRONG_TYPE}  # type: ignore[union-attr]


def test_a_stray_quote_stops_the_file_where_it_swallowed_rows_unseen(tmp_path: Path) -> None:
    """An unclosed quote ran on to the next quote, and the rows between were gone: two of
    four users here, with nothing dead-lettered or logged."""
    swallowing = _write(tmp_path, "titles.csv", 'user_id,item_id,title,timestamp\n'
                        '1,42,"Weird Al,1600000000\n2,43,Foo,1600000001\n'
                        '3,44,Bar",1600000002\n4,45,Baz,1600000003\n')
    with pytest.raises(LogFileError, match=r"titles.csv: not a csv log \(line 2: ValueError: a "
                       r"quoted field runs on to line 4 \(a quote not closed\?\)\)"):
        read_events(swallowing, "csv")
    garbled = _write(tmp_path, "garbled.csv", 'user_id,item_id,title,timestamp\n'
                     '1,42,Foo,1600000000\n2,43,"Bar" x,1600000001\n')
    with pytest.raises(LogFileError, match=r"line 3: Error: ',' expected after '\"'"):
        read_events(garbled, "csv")
    rees = _write(tmp_path, "rees.csv", "event_time,event_type,product_id,category_id,"
                  "category_code,brand,price,user_id,user_session\n"
                  '2019-10-01 00:00:00 UTC,view,1,2,"a,3,1.0,7,s\n'
                  '2019-10-01 00:00:01 UTC,view,1,2,a",b,1.0,8,s\n')
    with pytest.raises(LogFileError, match="line 2: ValueError: a quoted field runs on"):
        read_events(rees, "rees46")
    # a quote inside a field and a doubled quote are csv, read as they were
    quoted = _write(tmp_path, "quoted.csv", 'user_id,item_id,title,timestamp\n'
                    '1,42,a"b,1600000000\n2,43,"c""d",1600000001\n')
    assert [e.user_id for e in _events(quoted, "csv")] == ["1", "2"]


def test_logs_named_alike_give_their_rows_their_own_ids(tmp_path: Path) -> None:
    """ml-latest-small's and ml-25m's ``ratings.csv`` both start with user 1: their first
    rows shared one id, and a worker dropped the second log's as duplicates."""
    header = "userId,movieId,rating,timestamp\n"
    (tmp_path / "small").mkdir()
    (tmp_path / "big").mkdir()
    small = _write(tmp_path, "small/ratings.csv", header + "1,1,4.0,964982703\n")
    big = _write(tmp_path, "big/ratings.csv", header + "1,296,5.0,1147880044\n")
    again = _write(tmp_path, "ratings.csv", header + "1,1,4.0,964982703\n")
    ids = [_events(p, "movielens")[0].event_id for p in (small, big, again)]
    assert ids[0] != ids[1] and ids[0] == ids[2]  # the same row of a same-named file: one id


@pytest.mark.parametrize(("option", "message"), [
    (["--rate", "0"], "Invalid value for --rate: must be > 0, got 0.0"),
    (["--time-scale", "-2"], "Invalid value for --time-scale: must be > 0, got -2.0"),
    (["--limit", "-1"], "Invalid value for '--limit'"),
])
def test_replay_refuses_a_pace_or_limit_it_cannot_keep_in_one_line(
        tmp_path: Path, streamrec: Callable[..., tuple[int, str]], option: list[str],
        message: str) -> None:
    log = _write(tmp_path, "events.jsonl", "")
    code, text = streamrec("replay", str(log), "--format", "jsonl", *option)
    assert code == 2 and message in text


def test_generate_writes_a_catalogue_the_catalogue_loader_reads(
        tmp_path: Path, streamrec: Callable[..., tuple[int, str]]) -> None:
    from streams.catalog_files import read_catalog
    from streams.synthetic import catalogue

    log, items = tmp_path / "events.jsonl", tmp_path / "items.jsonl"
    code, _ = streamrec("generate", str(log), "--events", "300", "--users", "20",
                        "--items", "30", "--catalogue", str(items))
    assert code == 0
    assert list(read_catalog(items, "jsonl")) == catalogue(SyntheticConfig(
        users=20, items=30, events=300, seed=7))


@pytest.mark.parametrize("args, flag", [
    (["--events", "-5"], "--events"), (["--users", "0"], "--users"),
    (["--items", "3"], "--items"), (["--drift-at", "5"], "--drift-at"),
])
def test_generate_refuses_numbers_out_of_range_in_one_line(
        tmp_path: Path, streamrec: Callable[..., tuple[int, str]], args: list[str],
        flag: str) -> None:
    code, text = streamrec("generate", str(tmp_path / "out.jsonl"), *args)
    assert code == 2 and flag in text and "Traceback" not in text


def test_evaluate_refuses_unknown_models_and_a_missing_report_folder_before_loading(
        tmp_path: Path, streamrec: Callable[..., tuple[int, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    log = _write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,2,4,100\n")
    for models, said in (("bogus,sasrec", "unknown models ['bogus']"),
                         (",", "name at least one model")):
        code, text = streamrec("evaluate", "--data", str(log), "--format", "movielens",
                               "--models", models)
        assert code == 2 and said in text and "Traceback" not in text
    one = _write(tmp_path, "one.csv", "userId,movieId,rating,timestamp\n1,2,4,1600000000\n")
    code, text = streamrec("evaluate", "--data", str(one), "--format", "movielens",
                           "--models", "popularity")  # one user, one event
    assert (code, text) == (1, "error: none of 1 users has 3 events or more: each model is "
                            "validated on a user's second-to-last item and tested on the "
                            "last, with history before them")
    code, text = streamrec("evaluate", "--data", str(log), "--format", "movielens",
                           "--models", "popularity", "--json", str(tmp_path / "no" / "r.json"))
    assert code == 2 and "--json" in text and "no folder" in text  # the path may wrap
    # A --test log that is not there stops the command before any model trains.
    import services.cli_models as cli_models

    def no_training(*_: object, **__: object) -> None:
        raise AssertionError("trained before reading --test")

    monkeypatch.setattr(cli_models, "train_with_progress", no_training)
    many = _write(tmp_path, "many.csv", "userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},4,{1600000000 + i}\n" for u in range(1, 4) for i in range(1, 5)))
    code, text = streamrec("evaluate", "--data", str(many), "--format", "movielens",
                           "--models", "popularity", "--test", str(tmp_path / "nope.csv"))
    assert code == 1 and "no such file" in text and "Traceback" not in text


def test_a_log_in_time_order_is_read_as_its_events_are_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log already in time order (REES46's months) was held whole before the first event
    was sent: a month is larger than memory. Now it is parsed once for its order, then
    again row by row; a log out of order is still held and sorted."""
    import streams.readers as readers

    parsed = Counter[str]()
    row = readers._rees46_row

    def counted(rec: dict[str, str]) -> object:
        parsed["rows"] += 1
        return row(rec)

    monkeypatch.setattr(readers, "_rees46_row", counted)
    header = ("event_time,event_type,product_id,category_id,category_code,brand,price,"
              "user_id,user_session\n")
    times = [f"2019-10-01 00:00:{s:02d} UTC,view,{s},1,,,1.0,7,s\n" for s in range(10)]
    ordered = _write(tmp_path, "ordered.csv", header + "".join(times))
    events = read_events(ordered, "rees46")
    assert parsed["rows"] == 10  # the pass for the order: a bad row would stop it here
    first = next(iter(events))
    assert (first.item_id, parsed["rows"]) == ("0", 11)  # type: ignore[union-attr]
    assert [e.item_id for e in events] == [str(s) for s in range(1, 10)]  # type: ignore[union-attr]
    parsed.clear()
    shuffled = _write(tmp_path, "shuffled.csv", header + "".join(times[5:] + times[:5]))
    events = read_events(shuffled, "rees46")
    assert parsed["rows"] == 6 + 10  # to the first row out of order, then all, held
    assert [e.item_id for e in events] == [str(s) for s in range(10)]  # type: ignore[union-attr]
    assert parsed["rows"] == 16


def test_a_log_that_changes_between_its_two_reads_stops_in_one_line(tmp_path: Path) -> None:
    """Found by a review: the second read of a log in time order was not checked, so rows
    appended meanwhile went out unchecked, out of order, and a bad one raised mid-replay."""
    rows = "user_id,item_id,ts\nu1,a,1433221331\nu2,b,1433221332\n"
    path = _write(tmp_path, "log.csv", rows)
    events = read_events(path, "csv")
    with open(path, "a") as handle:
        handle.write("u3,c,1433221330\nu4,d,notatime\n")
    assert next(iter(events)).item_id == "a"  # type: ignore[union-attr]
    with pytest.raises(LogFileError, match=r"log.csv changed while it was read \(rows were "
                       r"added or moved\)"):
        list(events)
    path.write_text(rows)
    events = read_events(path, "csv")
    path.write_text(rows[:rows.rindex("u2")])
    with pytest.raises(LogFileError, match=r"log.csv changed while it was read \(1 rows gone\)"):
        list(events)
