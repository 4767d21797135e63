"""Ownership records: which libvirt objects a lab created on a connection.

An object's own XML cannot prove that topoc created it: the network and domain XML that
`topoc build` writes carry the same <metadata><topoc:lab/> and UUID, and may have been
defined by hand; and libvirt 9.0 keeps a network's <metadata> in its XML but has no
call to set or read it alone (virNetworkSetMetadata came in 9.7). So topoc keeps, per
connection URI and lab, a small JSON record of each network and domain it created:
libvirt name, UUID, and the XML it last applied (the base of the next plan). An object
is the lab's only when the record lists its name with the UUID the host reports and its
metadata names the lab: never a match on the name alone.

Records live in $TOPOC_STATE_DIR, else $XDG_STATE_HOME/topoc, else /var/lib/topoc for
root and ~/.local/state/topoc for others, one directory per connection URI. The test
driver (test:///...) is an in-memory host that dies with the process (with its last
connection), so its records live in memory too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

STATE_DIR_ENV = "TOPOC_STATE_DIR"
RECORD_VERSION = 1


class RecordError(Exception):
    """A record that cannot be read or written (a message for people)."""


@dataclass(frozen=True, slots=True)
class Owned:
    uuid: str
    xml: str | None  # the XML topoc last applied; None while a deploy is under way


@dataclass
class Record:
    """What one lab owns on one connection."""

    lab: str
    uri: str
    networks: dict[str, Owned] = field(default_factory=dict)
    domains: dict[str, Owned] = field(default_factory=dict)
    # What deploy made for the guests and the host besides networks and domains: the
    # storage pool it created (name -> UUID and XML), the volumes ("pool/volume" -> its
    # role: overlay, seed or base, and what it holds) and the nft table ("family name" ->
    # a digest and the ruleset it loaded). Absent from records written before they existed.
    pools: dict[str, Owned] = field(default_factory=dict)
    volumes: dict[str, Owned] = field(default_factory=dict)
    tables: dict[str, Owned] = field(default_factory=dict)

    KINDS = ("networks", "domains", "pools", "volumes", "tables")

    def of_kind(self, kind: str) -> dict[str, Owned]:
        """The objects of one kind: "network", "domain", "pool", "volume" or "table"."""
        found: dict[str, Owned] = getattr(self, f"{kind}s")
        return found

    def copy(self) -> Record:
        return Record(self.lab, self.uri, *(dict(getattr(self, kind)) for kind in self.KINDS))

    @property
    def empty(self) -> bool:
        return not any(getattr(self, kind) for kind in self.KINDS)

    def to_json(self) -> str:
        def objects(kind: dict[str, Owned]) -> dict:
            return {name: {"uuid": o.uuid, "xml": o.xml} for name, o in sorted(kind.items())}

        data = {"version": RECORD_VERSION, "lab": self.lab, "uri": self.uri,
                "networks": objects(self.networks), "domains": objects(self.domains)}
        # Written only when there are some, so records of labs without guests' storage
        # or host tables read exactly as before.
        for kind in self.KINDS[2:]:
            if getattr(self, kind):
                data[kind] = objects(getattr(self, kind))
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Record:
        try:
            data = json.loads(text)
            if data.get("version") != RECORD_VERSION:
                raise RecordError(f"{where}: record version {data.get('version')!r}, "
                                  f"this topoc reads version {RECORD_VERSION}")

            def objects(kind: str) -> dict[str, Owned]:
                return {name: Owned(str(o["uuid"]), o.get("xml")) for name, o in data[kind].items()}

            def optional(kind: str) -> dict[str, Owned]:
                return objects(kind) if kind in data else {}

            return cls(str(data["lab"]), str(data["uri"]), objects("networks"), objects("domains"),
                       optional("pools"), optional("volumes"), optional("tables"))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RecordError(f"{where}: not a topoc ownership record ({e}); "
                              "move it aside to start over") from None


class RecordStore(Protocol):
    def load(self, lab: str) -> Record: ...

    def save(self, record: Record) -> None: ...

    def where(self, lab: str) -> str: ...

    def lock(self, lab: str) -> contextlib.AbstractContextManager[None]: ...


class MemoryRecords:
    """Records for a host that lives only in this process (libvirt's test driver)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._records: dict[str, str] = {}

    def load(self, lab: str) -> Record:
        text = self._records.get(lab)
        return Record(lab, self.uri) if text is None else Record.from_json(text, self.where(lab))

    def save(self, record: Record) -> None:
        self._records[record.lab] = record.to_json()

    def where(self, lab: str) -> str:
        return f"memory (the {self.uri} host lives only as long as this process)"

    @contextlib.contextmanager
    def lock(self, lab: str) -> Iterator[None]:
        yield


def default_state_dir() -> Path:
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]) / "topoc"
    if os.geteuid() == 0:
        return Path("/var/lib/topoc")
    return Path.home() / ".local" / "state" / "topoc"


class FileRecords:
    """Records on disk, one JSON file per lab in a directory per connection URI,
    replaced atomically (write, fsync, rename) so a crash leaves the old or the new."""

    def __init__(self, uri: str, state_dir: Path | None = None) -> None:
        self.uri = uri
        self.directory = (state_dir or default_state_dir()) / quote(uri, safe="")

    def _path(self, lab: str) -> Path:
        return self.directory / f"{lab}.json"

    def where(self, lab: str) -> str:
        return str(self._path(lab))

    def load(self, lab: str) -> Record:
        path = self._path(lab)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Record(lab, self.uri)
        except OSError as e:
            raise RecordError(f"cannot read the ownership record {path}: {e.strerror}") from None
        return Record.from_json(text, str(path))

    def save(self, record: Record) -> None:
        path = self._path(record.lab)
        try:
            if record.empty:
                path.unlink(missing_ok=True)
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{record.lab}.")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(record.to_json())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except OSError as e:
            raise RecordError(f"cannot write the ownership record {path}: {e.strerror}") from None

    @contextlib.contextmanager
    def lock(self, lab: str) -> Iterator[None]:
        """One topoc at a time per lab and connection: a second one is told, not queued."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(self.directory / f".{lab}.lock", "w")  # noqa: SIM115  (held open: the lock lives as long as it)
        except OSError as e:
            raise RecordError(f"cannot lock {self.directory}: {e.strerror}") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RecordError(f"another topoc is changing lab {lab} on {self.uri} right now "
                                  "(its lock is held); try again when it is done") from None
            yield


def is_private_test_uri(uri: str) -> bool:
    """libvirt's test driver: every open() is a fresh host held in memory."""
    return uri.split(":", 1)[0] == "test"


def records_for(uri: str, state_dir: Path | None = None) -> RecordStore:
    if is_private_test_uri(uri) and state_dir is None:
        return MemoryRecords(uri)
    return FileRecords(uri, state_dir)
