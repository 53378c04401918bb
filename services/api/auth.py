"""Who may call what. One ``Access``, built from the settings, both checks requests and
declares the OpenAPI security schemes, so the document says exactly what is enforced:
nothing when no key is set, and only the schemes that are.

Reads (lists, feeds, experiments, the dashboard's figures, metrics) need a read key
(``X-API-Key``) or a bearer token once either is configured; posting events needs an event
key once one is, and a key may be scoped to the users whose id starts with a prefix.
Writing what every user shares, the item catalogue and the experiments, needs an event key
too, an unscoped one: a key scoped to some users' events may not change them
(``shared_write_guard``). ``/healthz`` and ``/readyz`` stay open for probes. Secrets are
compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import SecretStr

from services.api.schemas import Problem
from services.settings import Settings

KEY_HEADER = "X-API-Key"
# RFC 9110 wants a challenge on every 401; an API key has no registered scheme, so the
# challenge names the header to send.
KEY_CHALLENGE = f'ApiKey header="{KEY_HEADER}"'


@dataclass(frozen=True)
class Access:
    """The configured secrets, and each event key's scope: everything a guard, an answer
    or the document's description needs, read from the settings once."""

    read_keys: tuple[SecretStr, ...] = ()
    read_tokens: tuple[SecretStr, ...] = ()
    event_keys: tuple[tuple[SecretStr, str], ...] = ()  # (key, user-id prefix; "" = all)

    @classmethod
    def of(cls, settings: Settings) -> Access:
        everyone = [(settings.api_key, "")] if settings.api_key is not None else []
        return cls(tuple(settings.api_read_keys), tuple(settings.api_bearer_tokens),
                   tuple(everyone + list(settings.api_event_keys.items())))

    @property
    def reads_open(self) -> bool:
        return not (self.read_keys or self.read_tokens)

    def may_read(self, key: str | None, authorization: str | None) -> bool:
        """Whether a request with these ``X-API-Key`` and ``Authorization`` headers may read."""
        scheme, _, token = (authorization or "").partition(" ")
        return (self.reads_open or _matches(key, self.read_keys)
                or (scheme.lower() == "bearer" and _matches(token, self.read_tokens)))

    def event_prefix(self, key: str | None) -> str | None:
        """The user-id prefix this key may post events for ("" for every user), or None
        when it may not post at all."""
        if not self.event_keys:
            return ""
        return next((prefix for secret, prefix in self.event_keys
                     if _matches(key, (secret,))), None)

    def read_guard(self) -> list[Any]:
        """The read routes' dependencies: none while reads are open; else the configured
        schemes, which FastAPI turns into the operation's documented security, and the
        check itself (which reads the same headers)."""
        if self.reads_open:
            return []
        return [*(Security(s) for s in self._read_schemes()), Depends(self._check_read)]

    def event_guard(self) -> list[Any]:
        """The event route's documented scheme, when event keys are configured (the route
        checks the key itself: it needs the key's scope)."""
        return [Security(self._event_scheme())] if self.event_keys else []

    def shared_write_guard(self, what: str) -> list[Any]:
        """The dependencies of a route that changes ``what`` every user shares (the
        catalogue, the experiments): none while no event key is configured; else the
        documented scheme and the check, which wants an unscoped event key (401 for no
        key it knows, 403 for a key scoped to some users), before the body is read."""
        if not self.event_keys:
            return []

        async def check(request: Request) -> None:
            prefix = self.event_prefix(request.headers.get(KEY_HEADER))
            if prefix is None:
                raise HTTPException(401, f"missing or wrong {KEY_HEADER}",
                                    headers={"WWW-Authenticate": KEY_CHALLENGE})
            if prefix:
                raise HTTPException(403, f"a key scoped to some users may not write {what}")

        return [*self.event_guard(), Depends(check)]

    def read_responses(self) -> dict[int | str, dict[str, Any]]:
        return {} if self.reads_open else {401: {"model": Problem, "description":
                                                 "missing or wrong read credentials"}}

    def event_responses(self) -> dict[int | str, dict[str, Any]]:
        answers: dict[int | str, dict[str, Any]] = {}
        if self.event_keys:
            answers[401] = {"model": Problem, "description": f"missing or wrong {KEY_HEADER}"}
        if any(prefix for _, prefix in self.event_keys):
            answers[403] = {"model": Problem, "description": "an event for a user outside "
                            "the key's scope; nothing was produced"}
        return answers

    def shared_write_responses(self, what: str) -> dict[int | str, dict[str, Any]]:
        """The answers ``shared_write_guard(what)`` may give, for the document."""
        answers: dict[int | str, dict[str, Any]] = {}
        if self.event_keys:
            answers[401] = {"model": Problem, "description": f"missing or wrong {KEY_HEADER}"}
        if any(prefix for _, prefix in self.event_keys):
            answers[403] = {"model": Problem, "description": "a key scoped to some users "
                            f"may not write {what}; nothing was changed"}
        return answers

    def describe(self) -> str:
        """Who may do what, for the OpenAPI description, which is always open: the rules,
        not the keys (listed, their scopes told anyone how many keys there are and each
        tenant's user-id prefix)."""
        if self.reads_open and not self.event_keys:
            return "No key is configured: every route is open."
        ways = [w for w, on in ((f"a read key in {KEY_HEADER}", self.read_keys),
                                ("a bearer token", self.read_tokens)) if on]
        reads = ("Reads are open." if self.reads_open else
                 f"Reads (lists, feeds, experiments, /v1/live, /metrics) need "
                 f"{' or '.join(ways)}.")
        events = (f"POST /v1/events needs an event key in {KEY_HEADER}, which may be "
                  "scoped to users whose id starts with a prefix (403 for another user); "
                  "the item and experiment writes need one for every user." if self.event_keys
                  else "Posting events, items and experiments is open.")
        return f"{reads} {events} /healthz and /readyz are always open."

    def _read_schemes(self) -> list[APIKeyHeader | HTTPBearer]:
        schemes: list[APIKeyHeader | HTTPBearer] = []
        if self.read_keys:
            schemes.append(APIKeyHeader(name=KEY_HEADER, scheme_name="readKey", auto_error=False,
                                        description="a read key (STREAMREC_API_READ_KEYS)"))
        if self.read_tokens:
            schemes.append(HTTPBearer(scheme_name="readToken", auto_error=False,
                                      description="a bearer token (STREAMREC_API_BEARER_TOKENS)"))
        return schemes

    def _event_scheme(self) -> APIKeyHeader:
        return APIKeyHeader(name=KEY_HEADER, scheme_name="eventKey", auto_error=False,
                            description="an event key (STREAMREC_API_KEY: every user; "
                                        "STREAMREC_API_EVENT_KEYS: users with its prefix)")

    def _check_read(self, request: Request) -> None:
        if not self.may_read(request.headers.get(KEY_HEADER), request.headers.get("authorization")):
            raise HTTPException(401, f"missing or wrong {KEY_HEADER} or bearer token",
                                headers={"WWW-Authenticate": "Bearer" if self.read_tokens
                                         else KEY_CHALLENGE})


def _matches(given: str | None, secrets: Iterable[SecretStr]) -> bool:
    """Constant-time comparison with each secret."""
    if not given:
        return False
    data = given.encode()
    return any(hmac.compare_digest(data, s.get_secret_value().encode()) for s in secrets)
