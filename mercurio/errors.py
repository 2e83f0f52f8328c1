"""The errors that cross module boundaries, in a leaf module so that nothing imports in circles."""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it in one line."""


class StoreUnavailable(Exception):
    """The database could not complete the operation."""


class EventConflict(Exception):
    """The publisher already used this event id for a different notification."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


class BrokerUnavailable(Exception):
    """The broker link is down (or closed): the message was not sent."""
