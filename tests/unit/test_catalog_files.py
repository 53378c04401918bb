"""Catalogue files on small files written here: each format's records, its ids matching the
event readers', and a file in the wrong format stopping in one line with file and line."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streams.catalog import ItemRecord
from streams.catalog_files import (
    CATALOG_FORMATS,
    CatalogFileError,
    RejectedItem,
    read_catalog,
    scan_catalog,
)
from streams.events import Reason
from streams.readers import read_valid_events


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _error(path: Path, fmt: str, **kwargs: object) -> str:
    with pytest.raises(CatalogFileError) as info:
        list(read_catalog(path, fmt, **kwargs))  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


MOVIES = ('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children\n'
          '2,"Babylon 5 ",(no genres listed)\n'
          '3,"Death Note: Desu nôto (2006–2007)",Mystery\n')


def test_movielens_movies_title_genres_and_year(tmp_path: Path) -> None:
    items = list(read_catalog(_write(tmp_path, "movies.csv", MOVIES), "movielens"))
    assert items == [
        ItemRecord("1", "Toy Story (1995)", categories=("Adventure", "Animation", "Children"),
                   attributes={"year": 1995}),
        ItemRecord("2", "Babylon 5"),
        ItemRecord("3", "Death Note: Desu nôto (2006–2007)", categories=("Mystery",),
                   attributes={"year": 2006})]


def test_movielens_genres_and_titles_are_cleaned_as_the_other_formats_do(
        tmp_path: Path) -> None:
    """Spaced genres (``Drama | Comedy``) were kept with their spaces, which an API's
    ``category=Comedy`` never matched; a repeated genre or a title past the schema's
    limit refused the film whole (a review)."""
    long = "Long " * 300
    text = f'movieId,title,genres\n1,Heat (1995),Drama | Comedy|Drama\n2,"{long}",Drama\n'
    heat, cut = read_catalog(_write(tmp_path, "movies.csv", text), "movielens")
    assert heat.categories == ("Drama", "Comedy")
    assert cut.title is not None and long.startswith(cut.title) and cut.categories == ("Drama",)


def test_movielens_item_ids_are_the_ratings_movie_ids(tmp_path: Path) -> None:
    ratings = _write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n"
                     "7,1,4.0,964982703\n7,3,3.0,964982800\n")
    movies = _write(tmp_path, "movies.csv", MOVIES)
    catalogue = {i.item_id for i in read_catalog(movies, "movielens")}
    assert {e.item_id for e in read_valid_events(ratings, "movielens")} == {"1", "3"}
    assert {"1", "3"} <= catalogue


BOOKS_HEADER = ("book_id,goodreads_book_id,best_book_id,work_id,books_count,isbn,isbn13,authors,"
                "original_publication_year,original_title,title,language_code,average_rating,"
                "ratings_count,work_ratings_count,work_text_reviews_count,ratings_1,ratings_2,"
                "ratings_3,ratings_4,ratings_5,image_url,small_image_url\n")


def test_goodbooks_books(tmp_path: Path) -> None:
    path = _write(tmp_path, "books.csv", BOOKS_HEADER +
                  '2,3,3,4640799,491,439554934,9.78e+12,"J.K. Rowling, Mary GrandPré",1997.0,'
                  "Harry Potter and the Philosopher's Stone,\"Harry Potter and the Sorcerer's "
                  'Stone (Harry Potter, #1)",eng,4.44,4602479,4800065,75867,1,2,3,4,5,'
                  "https://images.gr-assets.com/books/1474154022m/3.jpg,https://s/3.jpg\n"
                  "9,1,1,1,1,1,1,Homer,-750.0,,The Odyssey,,3.76,670326,1,1,1,2,3,4,5,"
                  "https://s.gr-assets.com/assets/nophoto/book/111x148-b.png,x\n")
    potter, odyssey = read_catalog(path, "goodbooks")
    assert potter == ItemRecord(
        "2", "Harry Potter and the Sorcerer's Stone (Harry Potter, #1)", categories=("eng",),
        brand="J.K. Rowling", image_url="https://images.gr-assets.com/books/1474154022m/3.jpg",
        attributes={"year": 1997, "average_rating": 4.44,
                    "log_ratings_count": math.log1p(4602479)})
    assert odyssey.categories == () and odyssey.image_url is None  # no language, no photo
    assert odyssey.attributes["year"] == -750 and odyssey.brand == "Homer"


def test_a_book_with_a_year_past_64_bits_is_a_rejected_item_not_a_traceback(
        tmp_path: Path) -> None:
    """The record is refused (no 64-bit integer), and writing its letter with orjson,
    which refuses such an integer too, raised: ``catalog load`` stopped before sending
    anything, ``train --items`` with it."""
    path = _write(tmp_path, "books.csv", BOOKS_HEADER +
                  "9,1,1,1,1,1,1,Homer,1e20,,The Odyssey,,3.76,670326,1,1,1,2,3,4,5,"
                  "https://s/9.jpg,https://s/9s.jpg\n")
    (rejected,) = scan_catalog(path, "goodbooks")
    assert isinstance(rejected, RejectedItem) and "past 64 bits" in str(rejected.error)
    assert json.loads(rejected.raw)["attributes"]["year"] == 10**20


REES_HEADER = ("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
               "user_session\n")


def test_rees46_one_record_per_product_the_newest_row_wins(tmp_path: Path) -> None:
    path = _write(tmp_path, "events.csv", REES_HEADER +
                  "2019-10-01 00:00:05 UTC,view,1,20,electronics.smartphone,apple,999.00,7,s\n"
                  "2019-10-01 00:00:00 UTC,view,2,30,,,1.50,7,s\n"
                  "2019-10-01 00:00:01 UTC,cart,1,20,electronics.smartphone,apple,899.00,8,s\n"
                  "2019-10-01 00:00:09 UTC,remove_from_cart,2,30,,acme,2.50,8,\n"
                  "2019-10-01 00:00:09 UTC,view,2,31,kids.toys,acme,2.00,9,\n")
    phone, toy = read_catalog(path, "rees46")
    assert phone == ItemRecord("1", categories=("electronics", "electronics.smartphone",
                                                "cat:20"), brand="apple", price=999.0)
    # Of two rows at the same time, the later in the file; any event type counts.
    assert toy == ItemRecord("2", categories=("kids", "kids.toys", "cat:31"), brand="acme",
                             price=2.0)
    events = read_valid_events(path, "rees46")
    assert {e.item_id for e in events} == {phone.item_id, toy.item_id}


TEXT = ("item_id:token\ttext:token_seq\n"
        "B0000223UV\tGorilla Glue, 8 ounce. Industrial & Scientific Adhesives. Gorilla. \n"
        "B00002NC3K\tRubbermaid Lid. Industrial & Scientific Trash Cans. Rubbermaid. \n")


def test_amazon_text_ids_come_from_the_item2index_map(tmp_path: Path) -> None:
    path = _write(tmp_path, "Scientific.text", TEXT)
    _write(tmp_path, "Scientific.item2index", "B00002NC3K\t0\nB0000223UV\t1\n")
    glue, lid = read_catalog(path, "amazon")
    assert glue == ItemRecord("1", "Gorilla Glue, 8 ounce", "Gorilla Glue, 8 ounce. "
                              "Industrial & Scientific Adhesives. Gorilla.")
    assert (lid.item_id, lid.title) == ("0", "Rubbermaid Lid")
    # A title holding ". " was cut there ("24 Oz" of "24 Oz. Sprayer Bottles"; a review)
    dotted = _write(tmp_path, "Dotted.text", "item_id:token\ttext:token_seq\n"
                    "B1\t24 Oz. Sprayer Bottles, Pack Of 3. Industrial & Scientific Lab "
                    "Bottles. Continental. \nB2\tDr. Seuss ABC\n")
    _write(tmp_path, "Dotted.item2index", "B1\t0\nB2\t1\n")
    assert [r.title for r in read_catalog(dotted, "amazon")] == [
        "24 Oz. Sprayer Bottles, Pack Of 3", "Dr"]  # without its two parts: the first
    elsewhere = _write(tmp_path, "map.tsv", "B00002NC3K\t5\nB0000223UV\t6\n")
    assert [i.item_id for i in read_catalog(path, "amazon", id_map=elsewhere)] == ["6", "5"]


def test_amazon_text_without_its_id_map_is_refused(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "Scientific.text", TEXT), "amazon")
    assert "needs Scientific.item2index" in message and "not the .text row order" in message
    _write(tmp_path, "Scientific.item2index", "B00002NC3K\t0\n")  # no glue
    assert _error(tmp_path / "Scientific.text", "amazon").endswith(
        "Scientific.text:2: 'B0000223UV' is not in the id map")


def test_jsonl_invalid_records_are_rejected_items_for_the_dead_letter_topic(
        tmp_path: Path) -> None:
    path = _write(tmp_path, "items.jsonl", b'{"item_id": "4", "categories": ["a1", "a2"]}\n\n'
                  b'{"item_id": "5", "price": -1}\nnot json\n{"item_id": "6"}\n')
    scanned = list(scan_catalog(path, "jsonl"))
    assert scanned[0] == ItemRecord("4", categories=("a1", "a2"))
    # a first record of the schema's refused for a field of its own: that line alone
    odd = _write(tmp_path, "odd.jsonl", b'{"item_id": "1", "colour": "red"}\n{"item_id": "2"}\n')
    first, second = scan_catalog(odd, "jsonl")
    assert isinstance(first, RejectedItem) and second == ItemRecord("2")
    assert scanned[3] == ItemRecord("6")
    bad_price, not_json = scanned[1], scanned[2]
    assert isinstance(bad_price, RejectedItem) and bad_price.line == 3
    assert bad_price.raw == b'{"item_id": "5", "price": -1}'
    assert bad_price.error.reason is Reason.BAD_VALUE
    assert isinstance(not_json, RejectedItem) and not_json.error.reason is Reason.BAD_JSON
    # Offline, where there is no dead-letter topic, the first one stops the read.
    assert _error(path, "jsonl").endswith("items.jsonl:3: bad_value: price must be >= 0, got -1")


def test_a_row_the_schema_refuses_is_a_rejected_item_with_the_record_it_made(
        tmp_path: Path) -> None:
    path = _write(tmp_path, "events.csv", REES_HEADER +
                  "2019-10-01 00:00:05 UTC,view,1,20,,apple,-3,7,s\n")
    (rejected,) = scan_catalog(path, "rees46")
    assert isinstance(rejected, RejectedItem) and rejected.line == 2
    assert orjson.loads(rejected.raw) == {"item_id": "1", "categories": ["cat:20"],
                                          "brand": "apple", "price": -3.0}


def test_a_price_written_as_text_is_judged_as_a_number_is(tmp_path: Path) -> None:
    """A negative price went to the dead-letter topic from a JSON number or a REES46 row,
    but from a table's text it was read as none and the item loaded."""
    path = _write(tmp_path, "items.csv", "item_id,title,price\n1,a,-5.00\n2,b,1e3\n3,c,NA\n"
                  "4,d,nan\n5,e,$12.99 - $15.99\n6,f, 7.5 \n")
    negative, *rest = scan_catalog(path, "csv")
    assert isinstance(negative, RejectedItem) and negative.error.reason is Reason.BAD_VALUE
    assert [(r.item_id, r.price) for r in rest] == [  # type: ignore[union-attr]
        ("2", 1000.0), ("3", None), ("4", None), ("5", None), ("6", 7.5)]
    # An infinite price: its dead letter says so, where JSON's null made it read as none
    (huge,) = scan_catalog(_write(tmp_path, "huge.csv", "item_id,title,price\n7,g,1e400\n"),
                           "csv")
    assert isinstance(huge, RejectedItem) and orjson.loads(huge.raw)["price"] == "inf"


def test_movielens_movies_dat_of_ml_1m_in_latin_1(tmp_path: Path) -> None:
    """GroupLens wrote ml-1m's ``movies.dat`` in Latin-1 with ``::`` between fields; it was
    refused as not UTF-8. A ``movies.csv`` in Latin-1 still is (the table below)."""
    dat = _write(tmp_path, "movies.dat", "1::Toy Story (1995)::Animation|Children's\n"
                 "1193::Caf\xe9: Part 2 (1975)::Drama\n".encode("latin-1"))
    assert list(read_catalog(dat, "movielens")) == [
        ItemRecord("1", "Toy Story (1995)", categories=("Animation", "Children's"),
                   attributes={"year": 1995}),
        ItemRecord("1193", "Caf\xe9: Part 2 (1975)", categories=("Drama",),
                   attributes={"year": 1975})]
    # UTF-8 (ml-10m), a title holding the separator, a UTF-8 line beside a Latin-1 one
    utf8 = _write(tmp_path, "movies10m.dat", "5::Caf\xe9 (1975)::Drama\n6::A::B (1999)::War\n"
                  .encode() + "7::Am\xe9lie (2001)::Comedy\n".encode("latin-1"))
    assert [r.title for r in read_catalog(utf8, "movielens")] == [
        "Caf\xe9 (1975)", "A::B (1999)", "Am\xe9lie (2001)"]
    assert "movies1.dat:1: expected MovieID::Title::Genres" in _error(
        _write(tmp_path, "movies1.dat", "1::Toy Story (1995)\n"), "movielens")


def test_control_characters_in_a_name_are_spaces_not_a_refused_record(tmp_path: Path) -> None:
    """Mojibake (a Windows ``\x92`` read as Latin-1's C1 control) or a NUL in a title,
    brand or category: the record was refused whole (a dead letter; ``train --items``
    stopped), its text, categories and price with it."""
    rows = [{"asin": "B1", "title": "Men\x92s\x00Shoes", "brand": "Ac\x85me",
             "category": ["Shoes\x7f", "Sale"], "description": "line one\nline two"}]
    meta = _write(tmp_path, "meta.json", b"".join(orjson.dumps(r) + b"\n" for r in rows))
    assert list(read_catalog(meta, "json")) == [
        ItemRecord("B1", "Men s Shoes", "line one\nline two", ("Shoes", "Sale"), "Ac me")]
    dat = _write(tmp_path, "movies.dat", b"1::Men\x92s Story (1995)::Drama\n")
    assert [r.title for r in read_catalog(dat, "movielens")] == ["Men\u2019s Story (1995)"]


def test_json_reads_amazons_metadata_and_names_items_as_its_reviews_do(tmp_path: Path) -> None:
    """Amazon 2018 (``asin``, a ``category`` list, a ``description`` list, ``"$12.99"``)
    and 2023 (``parent_asin``, ``main_category``, ``store``, a number price), gzipped as
    they come; a text past the schema's limit is cut, not refused."""
    import gzip

    lines = [
        {"asin": "B1", "title": "Glue", "category": ["Tools", "Adhesives"], "brand": "Acme",
         "description": ["Sticks.", "x" * 9000], "price": "$1,012.99"},
        {"parent_asin": "P2", "asin": "V2", "title": "Tape", "main_category": "Arts, Crafts",
         "store": "Tapes Inc", "price": 3, "features": ["Clear"]},
        {"parent_asin": "P3", "price": "", "categories": []},
        {"title": "no id"},
    ]
    path = tmp_path / "meta.json.gz"
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(x) + b"\n" for x in lines)))
    glue, tape, bare, no_id = scan_catalog(path, "json")
    assert isinstance(glue, ItemRecord) and isinstance(tape, ItemRecord)
    assert (glue.item_id, glue.title, glue.categories, glue.brand, glue.price) == (
        "B1", "Glue", ("Tools", "Adhesives"), "Acme", 1012.99)
    assert glue.text is not None and glue.text.startswith("Sticks. xxx") and len(glue.text) == 8192
    assert (tape.item_id, tape.categories, tape.brand, tape.price, tape.text) == (
        "P2", ("Arts, Crafts",), "Tapes Inc", 3.0, "Clear")
    assert bare == ItemRecord("P3")
    assert isinstance(no_id, RejectedItem) and no_id.line == 4
    reviews = _write(tmp_path, "reviews.json", '{"user_id": "u", "asin": "V2", '
                     '"parent_asin": "P2", "timestamp": 1588687728923}\n')
    assert {e.item_id for e in read_valid_events(reviews, "json")} == {tape.item_id}


def test_json_catalogue_reads_python_literal_metadata(tmp_path: Path) -> None:
    """Amazon 2014's metadata (the SASRec paper's Beauty and Games: category paths) and
    Steam's games (their id is ``id``, a price may be words; Python 2's ``u''`` text),
    written by Python's ``repr``: refused before at their first line. A line neither
    JSON nor a literal, or with a value JSON cannot hold, still stops, naming it."""
    path = _write(tmp_path, "meta_Beauty.json", "".join(line + "\n" for line in (
        "{'asin': '0000031852', 'title': 'Girls Ballet Tutu', 'price': 3.17, "
        "'categories': [['Beauty', 'Skin Care'], ['Beauty', 'Makeup']], 'brand': None}",
        "{u'publisher': u'Kotoshiro', u'genres': [u'Action', u'Casual'], u'title': u'Lost "
        "Summoner Kitty', u'price': u'Free to Play', u'early_access': False, u'id': u'761140'}",
        '{"asin": "B3", "title": "JSON beside literals"}')))
    tutu, kitty, plain = read_catalog(path, "json")
    assert (tutu.item_id, tutu.title, tutu.categories, tutu.price, tutu.brand) == (
        "0000031852", "Girls Ballet Tutu", ("Beauty", "Skin Care", "Makeup"), 3.17, None)
    assert (kitty.item_id, kitty.categories, kitty.price) == ("761140", ("Action", "Casual"), None)
    assert plain.item_id == "B3"
    code = _write(tmp_path, "bad.json", "{'asin': 'B1'}\n{'asin': __import__('os')}\n")
    assert "bad.json:2: not JSON lines: unexpected character, expected a string key: line 1 " \
        "column 2 (char 1); nor a Python literal: malformed node or string on line 1" in _error(
            code, "json")
    assert "set.json:1: not JSON lines" in _error(
        _write(tmp_path, "set.json", "{'asin': 'B1', 'tags': {'a', 'b'}}\n"), "json")
    # Thousands of nested operators: the parser's MemoryError was a traceback (a review)
    deep = _write(tmp_path, "deep.json", "{'asin': 'B1', 'price': " + "-" * 6000 + "1}\n")
    assert "deep.json:1: not JSON lines" in _error(deep, "json")
    assert "nor a Python literal: nested too deeply" in _error(deep, "json")


def test_json_catalogue_reads_what_real_metadata_holds(tmp_path: Path) -> None:
    """Found by a review: an empty first field hid the next (2023's ``categories: []``
    beside ``main_category``), 2018's ``feature`` went unread, CSS in a price read as a
    number, repeated categories or a title's line break dead-lettered the item, an id with
    spaces around it did not meet its events, an ``<img>`` tag was a category. HTML's
    entities (``&amp;``) were read as text: a word ``amp``, one category under two names."""
    lines = [
        {"parent_asin": " P1 ", "categories": [], "main_category": "All Beauty",
         "description": [], "features": ["Soft", "Blue"], "title": "Brush\nset",
         "price": ".a-section.a-spacing-mini{margin-bottom:6px!important;}"},
        {"asin": "B2", "category": ["Clothing", "Women", "Clothing "], "feature": ["Warm"],
         "main_cat": '<img src="x.png" alt="AMAZON FASHION"/>', "price": "$12.99 - $15.99"},
        # "": "X" was read for every field the object lacked
        {"asin": "B3", "main_cat": '<img src="x.png"/>', "brand": " Acme\tCo ", "": "X"},
        # HTML's entities, as Amazon's 2018 metadata writes them
        # (whole names only: ``&amplifier;`` is no ``&amp``), markup escaped is markup
        {"asin": "B4", "title": "Tom &amp; Jerry&#39;s &quot;Mug&quot;", "brand": "A&amp;B",
         "category": ["Home &amp; Kitchen", "Home & Kitchen", "Guitar&amplifier;"],
         "description": ["1 &lt; 2"], "main_cat": '&lt;img src="x.png"/&gt;'},
    ]
    path = _write(tmp_path, "meta.json", b"".join(orjson.dumps(x) + b"\n" for x in lines))
    brush, coat, bare, mug = read_catalog(path, "json")
    assert (brush.item_id, brush.title, brush.categories, brush.text, brush.price) == (
        "P1", "Brush set", ("All Beauty",), "Soft Blue", None)
    assert (coat.categories, coat.text, coat.price) == (("Clothing", "Women"), "Warm", None)
    assert (bare.categories, bare.brand, bare.title, bare.text) == ((), "Acme Co", None, None)
    assert (mug.title, mug.brand, mug.categories, mug.text) == (
        "Tom & Jerry's \"Mug\"", "A&B", ("Home & Kitchen", "Guitar&amplifier;"), "1 < 2")


def test_csv_reads_any_item_table_by_its_column_names(tmp_path: Path) -> None:
    """H&M's ``articles.csv`` (ids with a leading zero, as its transactions name them), a
    ``;`` table with ``|`` genres, a shop export with quoted commas and an empty cell: the
    columns found by name, as the ``csv`` event format finds its own."""
    hm = _write(tmp_path, "articles.csv", "article_id,product_code,prod_name,product_type_name,"
                "colour_group_name,detail_desc\n"
                '0108775015,0108775,Strap top,Vest top,Black,"Jersey top, narrow straps."\n'
                "0108775044,0108775,Strap top,Vest top,White,\n")
    black, white = read_catalog(hm, "csv")
    assert (black.item_id, black.title, black.categories, black.text) == (
        "0108775015", "Strap top", ("Vest top",), "Jersey top, narrow straps.")
    assert (white.item_id, white.text) == ("0108775044", None)
    films = _write(tmp_path, "films.csv", "movieId;title;genres;price\n"
                   "1;Toy Story (1995);Adventure|Animation;$3.99\n"
                   "2;Pirates (1886);(no genres listed);\n")
    toy, bare = read_catalog(films, "csv")
    assert (toy.item_id, toy.categories, toy.price) == ("1", ("Adventure", "Animation"), 3.99)
    assert bare.categories == ()
    shop = _write(tmp_path, "shop.tsv", "ID\tname\tcategory\tbrand\n"
                  "A1\tMug\tKitchen, Cups\t Acme \n")
    [mug] = read_catalog(shop, "csv")
    assert (mug.item_id, mug.title, mug.categories, mug.brand) == (
        "A1", "Mug", ("Kitchen, Cups",), "Acme")  # Amazon's "Arts, Crafts & Sewing" is one
    lists = _write(tmp_path, "games.csv", "app_id,name,genres\n"
                   "1,Dota,\"['Action', 'Free to Play']\"\n2,Bit,\"[\"\"Indie\"\"]\"\n"
                   "3,Box,[Puzzle]\n4,Nums,\"[1, 2]\"\n5,None,[]\n"
                   "6,Doom,\"[\"\"Shoot 'Em Up\"\", 'FPS']\"\n"
                   "7,Glue,\"[['Beauty', 'Skin Care'], ['Beauty', 'Makeup']]\"\n"
                   "8,Saw,Tools &amp; Home Improvement\n")
    assert [r.categories for r in read_catalog(lists, "csv")] == [  # pandas writes ['a', 'b']
        ("Action", "Free to Play"), ("Indie",), ("[Puzzle]",), (), (), ("Shoot 'Em Up", "FPS"),
        ("Beauty", "Skin Care", "Makeup"), ("Tools & Home Improvement",)]  # HTML's &amp;
    rees46 = _write(tmp_path, "events.csv", "event_time,event_type,product_id,category_id,"
                    "category_code,brand,price\n2019-10-01 00:00:00 UTC,view,44600062,"
                    "2103807459595387724,appliances.kitchen.kettle,shiseido,35.79\n")
    [kettle] = read_catalog(rees46, "csv")  # REES46's events as a table of items
    assert (kettle.item_id, kettle.categories, kettle.brand, kettle.price) == (
        "44600062", ("appliances.kitchen.kettle",), "shiseido", 35.79)
    crossing = _write(tmp_path, "Books.csv", '"ISBN";"Book-Title";"Book-Author";'
                      '"Year-Of-Publication";"Publisher"\n"0195153448";"Classical Mythology";'
                      '"Mark P. O. Morford";"2002";"Oxford University Press"\n')
    [myths] = read_catalog(crossing, "csv")  # Book-Crossing's books, named by ISBN
    assert (myths.item_id, myths.title, myths.brand) == (
        "0195153448", "Classical Mythology", "Mark P. O. Morford")
    twice = _write(tmp_path, "twice.csv", "item_id,item_id,title,title\n1,2,A,B\n")
    [first] = read_catalog(twice, "csv")  # the first column of a name, as the events read
    assert (first.item_id, first.title) == ("1", "A")


def test_csv_catalogue_refuses_a_table_it_cannot_read_in_one_line(tmp_path: Path) -> None:
    assert "x.csv:1: the header (name, price) names no item column (item_id, " in _error(
        _write(tmp_path, "x.csv", "name,price\nMug,3\n"), "csv")
    assert _error(_write(tmp_path, "y.csv", "1,Mug,3\n"), "csv").endswith(  # no --columns
        "y.csv:1: the first line (1, Mug, 3) is data, not a header: put a line naming the "
        "columns first")
    assert "z.csv:3: expected 2 fields as in the header, got 1" in _error(
        _write(tmp_path, "z.csv", "item_id,title\n1,Mug\n2\n"), "csv")
    assert "e.csv:1: the first line is empty: put a line naming the columns first" in _error(
        _write(tmp_path, "e.csv", "\nitem_id\n1\n"), "csv")
    assert "h.csv:1: not CSV: field larger than field limit" in _error(
        _write(tmp_path, "h.csv", 'item_id,"' + "x" * 200_000 + '"\n1,A\n'), "csv")
    assert "q.csv:2: not CSV: unexpected end of data" in _error(  # where the quote opened
        _write(tmp_path, "q.csv", 'item_id,title\n1,"12 inch\n2,Mug\n3,Cup\n'), "csv")
    assert "b.csv:3: not UTF-8 text: invalid continuation byte" in _error(
        _write(tmp_path, "b.csv", b"item_id,title\n1,A\n2,Caf\xe9\n"), "csv")
    no_id = _write(tmp_path, "n.csv", "item_id,title\n,Mug\n")  # a dead letter, for load
    [rejected] = scan_catalog(no_id, "csv")
    assert isinstance(rejected, RejectedItem) and rejected.line == 2


@pytest.mark.parametrize("fmt, text", [
    ("movielens", 'movieId,title,genres\n1,"Toy Story (1995),Adventure\n2,Jumanji (1995),'
                  'Adventure\n3,Heat (1995)",Action\n5,Casino (1995),Crime\n'),
    ("goodbooks", 'book_id,title,authors,original_publication_year,language_code,'
                  'average_rating,ratings_count,image_url\n1,"Emma,Austen,1815,en,4,9,x\n'
                  '2,Persuasion,Austen,1817,en,4,9,x\n3,Lady Susan",Austen,1871,en,4,9,x\n'),
    ("rees46", 'event_time,product_id,category_id,category_code,brand,price\n'
               '2019-10-01,1,7,"a.b,x,1.0\n2019-10-01,2,7,a.b,x,1.0\n2019-10-01,3,7,a.b",x,1.0\n'),
    ("csv", 'item_id,title\n1,"Toy, Story\n2,Jumanji\n3,Heat"\n4,Cup\n'),
])
def test_a_quote_left_open_is_refused_not_rows_swallowed(tmp_path: Path, fmt: str,
                                                         text: str) -> None:
    """The record on line 2 opens a quote that the one on line 4 closes: the fields still
    count as many as the header's, so it read as one item with line 3 inside, lost."""
    assert _error(_write(tmp_path, "q.csv", text), fmt).endswith(
        "q.csv:2: a quoted field runs on to line 4 (a quote not closed?)")


def test_gzipped_catalogues_keep_their_encoding_rules_and_id_maps(tmp_path: Path) -> None:
    import gzip

    dat = tmp_path / "movies.dat.gz"
    dat.write_bytes(gzip.compress("1::Caf\xe9 (1975)::Drama\n".encode("latin-1")))
    assert [r.title for r in read_catalog(dat, "movielens")] == ["Caf\xe9 (1975)"]
    bad = tmp_path / "movies.csv.gz"
    bad.write_bytes(gzip.compress(b"movieId,title,genres\n1,Heat,Crime\n2,Caf\xe9,Drama\n"))
    assert "movies.csv.gz:3: not UTF-8 text: invalid continuation byte at column 6" in _error(
        bad, "movielens")
    text = tmp_path / "Sci.text.gz"
    text.write_bytes(gzip.compress(b"item_id:token\ttext:token_seq\nB1\tGlue. Tools.\n"))
    _write(tmp_path, "Sci.item2index", "B1\t0\n")
    assert [(r.item_id, r.title) for r in read_catalog(text, "amazon")] == [("0", "Glue")]


@pytest.mark.parametrize(
    ("name", "text", "fmt", "expected"),
    [
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,9\n", "movielens",
         "ratings.csv:1: expected a header with movieId, title, genres; missing title, genres"),
        ("movies.csv", MOVIES + "4,Heat (1995)\n", "movielens",
         "movies.csv:5: expected 3 fields as in the header, got 2"),
        ("books.csv", BOOKS_HEADER + "1,2,3,4,5,6,7,A,year?,t,T,eng,4.1,10,1,1,1,1,1,1,1,u,u\n",
         "goodbooks", "books.csv:2: original_publication_year 'year?' is not a number"),
        ("events.csv", REES_HEADER + "2019-10-01 00:00:05 UTC,view,1,2,,b,cheap,7,s\n",
         "rees46", "events.csv:2: price 'cheap' is not a number"),
        ("movies.csv", MOVIES, "jsonl", "movies.csv:1: not JSON lines of catalogue records"),
        ("meta.jsonl", b'{"parent_asin": "B0", "title": "t", "price": 3.5}\n', "jsonl",
         "meta.jsonl:1: not JSON lines of catalogue records: missing_field: item_id is "
         "required; JSON lines of other fields (Amazon's metadata) load with --format json"),
        ("movies.csv", MOVIES, "rees46", "movies.csv:1: expected a header with event_time"),
        ("movies.csv", b"movieId,title,genres\n1,Caf\xe9 (1995),Drama\n", "movielens",
         "movies.csv:2: not UTF-8 text: invalid continuation byte"),
    ],
)
def test_a_file_in_the_wrong_format_stops_with_one_line_naming_file_and_line(
        tmp_path: Path, name: str, text: str | bytes, fmt: str, expected: str) -> None:
    assert expected in _error(_write(tmp_path, name, text), fmt)


def test_a_missing_file_or_an_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(CatalogFileError, match="missing.csv: no such file"):
        read_catalog(tmp_path / "missing.csv", "movielens")
    with pytest.raises(ValueError, match="unknown catalogue format 'tsv'; choose one of movielens"):
        read_catalog(tmp_path / "missing.csv", "tsv")
    assert set(CATALOG_FORMATS) == {"movielens", "goodbooks", "rees46", "amazon", "jsonl",
                                    "json", "csv"}


def test_catalog_load_stops_on_a_wrong_file_in_one_line_before_touching_kafka(
        tmp_path: Path, streamrec: Callable[..., tuple[int, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,9\n")
    monkeypatch.setenv("STREAMREC_KAFKA_BOOTSTRAP", "nowhere:1")
    assert streamrec("catalog", "load", str(path), "--format", "movielens") == (1, (
        f"error: {path}:1: expected a header with movieId, title, genres; missing title, "
        "genres (got 'userId,movieId,rating,timestamp')"))
