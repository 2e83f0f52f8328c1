"""The fan-out seam: where a committed notification goes after the store's writer commits it.

`Store(url, on_commit=fanout.committed)` hands every commit, in id order, to the node's one
Fanout. `LocalFanout` delivers it to this node's hub and nothing else (one node, no broker);
`cluster.Cluster` also rings the other nodes and sequences theirs into the hub. Read-state and
preference events take the same road, so no caller ever asks which of the two it has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

from mercurio.hub import Hub
from mercurio.model import Notification


class Ledger(Protocol):
    """What a fan-out reads from the store: the committed ledger and the clients' mutes."""

    async def last_id(self) -> int: ...

    async def committed_after(self, after_id: int, *, limit: int) -> list[Notification]: ...

    async def muted_categories(self, client_id: str) -> frozenset[str]: ...

    async def topics_of(self, client_id: str) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class LinkHealth:
    """The state of a fan-out's link to the other nodes."""

    connected: bool
    reconnects: int


class Fanout(ABC):
    """Takes this node's commits and events to every open stream that should see them."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def start(self, ledger: Ledger) -> None:
        """Begin (the store is open by now: `ledger` answers reads)."""
        return None

    async def close(self) -> None:
        """Stop; what is queued for other nodes is sent first, within a bound."""
        return None

    @abstractmethod
    def committed(self, notes: list[Notification]) -> None:
        """This node's writer committed `notes` (in id order): deliver them."""

    def read_state(self, client_id: str, frame: bytes) -> None:
        """The client's read state changed: tell each of its open streams."""
        self.hub.push_event(client_id, frame)

    def muted(self, client_id: str, muted: frozenset[str]) -> None:
        """The client's muted categories changed: its streams apply them from now on."""
        self.hub.set_muted(client_id, muted)

    def topic(
        self, client_id: str, topic: str, since: int | None, until: int | None = None
    ) -> None:
        """The client subscribed to the topic (since: where it starts) or left it (since
        None, until: where it ended)."""
        self.hub.set_topic(client_id, topic, since, until)

    def health(self) -> LinkHealth | None:
        """The link to other nodes, or None when there is none to have."""
        return None


class LocalFanout(Fanout):
    """One node alone: a commit goes straight to the hub."""

    def committed(self, notes: list[Notification]) -> None:
        self.hub.deliver(notes)
