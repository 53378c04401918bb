"""How every streamrec Kafka client connects: one bootstrap list plus librdkafka-style
security properties, mapped onto each client library from this one place.

confluent-kafka takes the properties as they are; aiokafka takes keyword arguments and an
``ssl.SSLContext`` (``aiokafka()``), and Faust, which runs on aiokafka, credentials built
from the same accessors (``streams.worker.faust_credentials``). Secrets stay ``SecretStr``
until the moment a client is built, so printing a connection never shows them.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from infra.errors import StackError

LIBRDKAFKA_LOG = logging.getLogger("librdkafka")  # librdkafka's own lines (``polled``)
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SECRET_KEYS = frozenset({"sasl.password", "ssl.key.password"})
_SPELLINGS = {"security.protocol": str.upper, "sasl.mechanism": str.upper,
              "ssl.endpoint.identification.algorithm": str.lower}
SUPPORTED_KEYS = frozenset({
    "security.protocol", "sasl.mechanism", "sasl.username", "sasl.password",
    "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
})


@dataclass(frozen=True)
class KafkaConnection:
    """Where the cluster is and how to authenticate; the one thing clients are given."""

    bootstrap: str
    security: Mapping[str, str | SecretStr] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.security) - SUPPORTED_KEYS)
        if unknown:
            raise StackError(f"unsupported Kafka properties {unknown}; supported: "
                             f"{', '.join(sorted(SUPPORTED_KEYS))}")
        if self.protocol not in PROTOCOLS:
            raise StackError(f"security.protocol must be one of {', '.join(PROTOCOLS)}, "
                             f"got {self.protocol!r}")
        if self.uses_sasl and self.mechanism not in SASL_MECHANISMS:
            raise StackError(f"sasl.mechanism must be one of {', '.join(SASL_MECHANISMS)}, "
                             f"got {self.mechanism!r}")
        if self.uses_sasl and not (self.get("sasl.username") and self.get("sasl.password")):
            raise StackError(f"{self.protocol} needs sasl.username and sasl.password")
        wrapped = {k: SecretStr(_reveal(v)) if k in SECRET_KEYS else _reveal(v)
                   for k, v in self.security.items()}
        # One spelling for every client: librdkafka takes "plain" as a mechanism it lacks
        # and "NONE" as no hostname check, where aiokafka's context read only "none".
        for key, spelled in _SPELLINGS.items():
            if key in wrapped:
                wrapped[key] = spelled(str(wrapped[key]))
        if self.uses_sasl:  # librdkafka's own default is GSSAPI, which its wheel lacks
            wrapped["sasl.mechanism"] = self.mechanism
        if wrapped.get("ssl.endpoint.identification.algorithm", "https") not in ("https", "none"):
            raise StackError("ssl.endpoint.identification.algorithm must be https or none, "
                             f"got {wrapped['ssl.endpoint.identification.algorithm']!r}")
        object.__setattr__(self, "security", wrapped)

    def __repr__(self) -> str:
        shown = {k: ("**********" if k in SECRET_KEYS else v) for k, v in self.security.items()}
        return f"KafkaConnection({self.bootstrap!r}, {shown})"

    __str__ = __repr__

    def get(self, key: str) -> str | None:
        value = self.security.get(key)
        return None if value is None else _reveal(value)

    @property
    def protocol(self) -> str:
        return (self.get("security.protocol") or "PLAINTEXT").upper()

    @property
    def mechanism(self) -> str:
        return (self.get("sasl.mechanism") or "PLAIN").upper()

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def librdkafka(self, polled: bool = False, **extra: Any) -> dict[str, Any]:
        """The config dict of a confluent-kafka Producer, Consumer or AdminClient.

        ``polled``: for a client this process polls (every producer here polls as it
        sends). Its librdkafka log lines then go through Python's logging (logger
        ``librdkafka``), in the process's format and level, where they were raw
        ``%3|...`` lines on stderr among the JSON ones of ``STREAMREC_LOG_FORMAT=json``.
        Not for a client nobody polls (an AdminClient, a consumer asked for offsets
        only): librdkafka hands a logger its lines only in a poll, so they would be lost,
        where on stderr they may be the one clue (a refused TLS handshake, say)."""
        revealed = {k: _reveal(v) for k, v in self.security.items()}
        logged = {"logger": LIBRDKAFKA_LOG} if polled else {}
        return {**logged, **extra, **revealed, "bootstrap.servers": self.bootstrap}

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context aiokafka needs, built from the same PEM files librdkafka reads."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(**_trust(self.get("ssl.ca.location")))
        if self.get("ssl.endpoint.identification.algorithm") == "none":
            context.check_hostname = False
        certificate = self.get("ssl.certificate.location")
        if certificate:
            context.load_cert_chain(certificate, self.get("ssl.key.location"),
                                    self.get("ssl.key.password"))
        return context

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's consumer and producer."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.bootstrap,
                                  "security_protocol": self.protocol,
                                  "ssl_context": self.ssl_context()}
        if self.uses_sasl:
            kwargs.update(sasl_mechanism=self.mechanism,
                          sasl_plain_username=self.get("sasl.username"),
                          sasl_plain_password=self.get("sasl.password"))
        return kwargs


def _trust(location: str | None) -> dict[str, str]:
    """``ssl.create_default_context``'s arguments for librdkafka's ``ssl.ca.location``: a
    file, a folder of hashed certificates (``/etc/ssl/certs``), or ``probe`` (the system's
    store, as no location). A folder or ``probe`` passed as a file stopped the worker,
    whose aiokafka reads this, while every librdkafka client worked (``Is a directory``)."""
    if not location or location == "probe":
        return {}
    if os.path.isdir(location):
        return {"capath": location}
    if not os.path.isfile(location):
        raise StackError(f"ssl.ca.location {location!r} (STREAMREC_KAFKA_SECURITY) is no "
                         "file or folder")
    return {"cafile": location}


def _reveal(value: str | SecretStr) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value
