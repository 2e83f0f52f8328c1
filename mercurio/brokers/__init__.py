"""Cross-node fan-out: one module per engine, picked by the scheme of MERCURIO_MQ_CONN.

An engine's driver is imported only when its scheme is used, so a node without RabbitMQ never
needs aio-pika (`pip install mercurio[rabbitmq]` / `mercurio[redis]` bring them in).
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from mercurio.brokers.base import Broker, BrokerUnavailable
from mercurio.config import ConfigError, redact_url

__all__ = ["BACKENDS", "Broker", "BrokerUnavailable", "create_broker", "scheme_of"]

BACKENDS: dict[str, str] = {
    "amqp": "mercurio.brokers.amqp:AmqpBroker",
    "amqps": "mercurio.brokers.amqp:AmqpBroker",
    "redis": "mercurio.brokers.redis:RedisBroker",
    "rediss": "mercurio.brokers.redis:RedisBroker",
    "memory": "mercurio.brokers.memory:MemoryBroker",
}
"""URL scheme → engine class, as `module:Class`; adding an engine is one line here."""


def scheme_of(url: str) -> str:
    return urlsplit(url.strip()).scheme.lower()


def supported() -> str:
    return ", ".join(f"{scheme}://" for scheme in BACKENDS)


def create_broker(url: str, **options: Any) -> Broker:
    """The engine for url's scheme (its driver imported now), not yet started."""
    scheme = scheme_of(url)
    target = BACKENDS.get(scheme)
    if target is None:
        raise ConfigError(
            f"MERCURIO_MQ_CONN: unsupported scheme {scheme!r} in {redact_url(url)!r}; "
            f"use one of {supported()}"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = "rabbitmq" if scheme.startswith("amqp") else "redis"
        raise ConfigError(
            f"MERCURIO_MQ_CONN: {scheme}:// needs {exc.name}; pip install 'mercurio[{extra}]'"
        ) from None
    engine: type[Broker] = getattr(module, class_name)
    return engine(url, **options)
