"""Addresses that are safe to print: credentials in a URL never reach a log or a topic."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# The scheme and user kept; everything up to the *last* '@' masked: an unescaped '@' or
# '/' in a password splits it at the first, and the rest would print.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^:/@]*:)?.*@")
# A URL in text ends at a quote or a bracket, but its credentials may hold them: runs up
# to an '@' with no space, and no quote followed by a separator (',', ':', '}', ']'),
# are taken as its user part, quotes and commas and all. Ended at the quote,
# ``http://u:pa'ss@h`` was cut to ``http://u:pa``, with no '@' to mask; taken up to any
# later '@' of the word, JSON beside a URL (``"http://h","owner":"ops@shop"``) was
# masked away.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:(?:[^\s@'\"]|['\"](?![,:}\]]))*@)*"
                  r"[^\s'\"<>]+")
_SECRET_QUERY_WORDS = ("password", "passwd", "secret", "token", "key")
# The same query values found in text, for a URL ``urlsplit`` cannot read.
_SECRET_QUERY = re.compile(rf"(?i)([?&][^=&#\s]*(?:{'|'.join(_SECRET_QUERY_WORDS)})[^=&#\s]*=)"
                           r"[^&#\s]*")


def mask_url(url: str) -> str:
    """``url`` with its password and secret-looking query values replaced by ``***``.

    The user name stays beside a password: it tells an operator which account is in use,
    and names are not secrets in Redis ACLs or SASL. A user name alone is masked: it is as
    often a password written without its colon (``redis://s3cret@cache``), which a
    client reads as a name. Strings that are not URLs come back as-is.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # an unmatched bracket ("Invalid IPv6 URL"), e.g. text around it
        url = _SECRET_QUERY.sub(rf"\1{MASK}", url)
        return _mask_userinfo(url) if "@" in url else url
    if not parts.scheme:
        return url
    query = urlencode([(k, MASK if any(w in k.lower() for w in _SECRET_QUERY_WORDS) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="/*")
    if not parts.netloc:  # a socket or a local database: its password can sit in the query
        return url if query == parts.query else url.replace(f"?{parts.query}", f"?{query}", 1)
    netloc = parts.netloc
    ats = url.count("@")
    if ats > 1 or (parts.password is None and ats):  # an unescaped '@', '/' or '#'
        return _mask_userinfo(url)
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _mask_userinfo(url: str) -> str:
    """``url`` masked from its user's name (kept with a colon) to its last '@'."""
    m = _USERINFO.match(url)
    return url if m is None else f"{m[1]}{m[2] or ''}{MASK}@{url[m.end():]}"


def mask_urls(text: str) -> str:
    """``text`` (a log line, an error message) with every URL in it masked."""
    return _URL.sub(lambda m: mask_url(m.group()), text) if "://" in text else text
