"""The MLflow tracking store and model registry: a sqlite file under ``.local/`` by default.

No server is needed for local use; any tracking URI MLflow understands (``http://...``)
works the same way. Artifacts of the local store go to a folder beside the database,
not to ``./mlruns`` in whatever directory the command happened to run in.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from infra.errors import StackError
from infra.tls import private_dir
from infra.urls import mask_url

MLFLOW_PROGRESS_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
MLFLOW_PRINTS_URLS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # SQLAlchemy's, as MLflow takes them


@dataclass(frozen=True)
class MlflowStore:
    tracking_uri: str = field(repr=False)  # may carry credentials
    artifact_root: Path

    # Whether the database's folder is ours (the data dir's ``mlflow/``), to be made
    # private; a folder named in the settings is left as it is (``/tmp``, a home).
    owns_home: bool = True

    @classmethod
    def local(cls, home: Path) -> "MlflowStore":
        # Quoted: SQLAlchemy decodes the URL, so "?" ended the path and "%41" read as "A"
        return cls(tracking_uri=f"sqlite:///{quote(str(home / 'mlflow.db'))}",
                   artifact_root=home / "artifacts")

    @classmethod
    def sqlite(cls, uri: str) -> "MlflowStore":
        """The sqlite database at ``uri`` (``sqlite:////abs/path.db``), its artifacts in a
        folder of its own beside it (``path-artifacts``), so one folder holds the registry
        whole (a demo run's, deleted with its folder)."""
        database = Path(unquote(uri.removeprefix("sqlite:///").split("?", 1)[0]))
        return cls(uri, database.with_name(f"{database.stem}-artifacts"), owns_home=False)

    @property
    def is_local(self) -> bool:
        return self.tracking_uri.startswith("sqlite:")

    @property
    def is_database(self) -> bool:
        """A database URI (sqlite, ``postgresql://``, ...): with no server between, the
        clients say where artifacts go, and MLflow's default is ``./mlruns`` in whichever
        folder the first caller ran in. A server, or a file store, decides its own."""
        return self.tracking_uri.split(":", 1)[0].split("+", 1)[0] in DATABASES

    def ensure(self) -> None:
        """Create the local folders; a remote server needs nothing from us."""
        if not self.is_local:
            return
        if self.owns_home:
            private_dir(self.artifact_root.parent)  # the database and its artifacts
        else:
            self.artifact_root.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self.artifact_root)

    def client(self) -> Any:
        """An ``MlflowClient`` of this store for runs and the registry alike: given the
        tracking URI alone, MLflow takes the registry from ``MLFLOW_REGISTRY_URI`` when
        that variable is set, and models would go somewhere the settings do not say."""
        from mlflow.tracking import MlflowClient

        self._keep_secret()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _keep_secret(self) -> None:
        """A tracking URI with credentials (``http://user:password@host``) never reaches
        stdout: MLflow prints each run's and experiment's link with the URI's host part as
        it is, by ``sys.stdout.write``, past every log mask."""
        if "@" in urlsplit(self.tracking_uri).netloc:
            os.environ[MLFLOW_PRINTS_URLS] = "true"

    def activate(self) -> None:
        """Point MLflow's module-level API (``mlflow.start_run``, ``mlflow.artifacts``,
        ``models:/`` URIs) at this store, its registry included (see ``client``). Off a
        terminal, MLflow's download progress bars are turned off (unless the variable says
        otherwise): a worker's log got three bars of carriage returns for each model load."""
        import mlflow

        if not sys.stderr.isatty():
            os.environ.setdefault(MLFLOW_PROGRESS_BARS, "false")
        self._keep_secret()

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    def answers(self) -> bool:
        """True when the tracking store accepts a query (creates the sqlite schema on first
        use). Asked once, within ``PROBE_TIMEOUT_S``: with MLflow's own retries and backoff,
        ``stack status`` waited about 4 minutes on a server that was down."""
        try:
            with _probing():
                self.client().search_experiments(max_results=1)
        except Exception:  # noqa: BLE001 - any failure means the store is not usable
            return False
        return True

    def experiment_id(self, name: str) -> str:
        """Id of experiment ``name``, created with its artifacts under our artifact root."""
        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (self.artifact_root / name).as_uri() if self.is_database else None
        return client.create_experiment(name, artifact_location=location)


PROBE_TIMEOUT_S = 5


@contextmanager
def _probing() -> Iterator[None]:
    """MLflow's HTTP requests without retries and with a short timeout, for this block
    (it reads both from the environment at each request)."""
    probe = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT_S)}
    saved = {name: os.environ.get(name) for name in probe}
    os.environ.update(probe)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def wait_for_mlflow(store: MlflowStore, timeout_s: float = 30.0) -> None:
    """Wait until the tracking server answers; one line when it has not within
    ``timeout_s``. ``stack up`` said the stack was up over a registry that was down, and
    the first worker or trainer found out."""
    deadline = time.monotonic() + timeout_s
    while not store.answers():
        if time.monotonic() > deadline:
            raise StackError(f"MLflow at {mask_url(store.tracking_uri)} did not answer "
                             f"within {timeout_s:.0f} s")
        time.sleep(1.0)
