"""Cross-node fan-out: one module per engine, picked by the scheme of MERCURIO_MQ_CONN.

An engine's driver is imported only when its scheme is used, so a node without RabbitMQ never
needs aio-pika (`pip install mercurio[rabbitmq]` / `mercurio[redis]` / `mercurio[postgres]`
bring them in).
"""

from __future__ import annotations

import importlib
from typing import Any

from mercurio.brokers.base import Broker
from mercurio.errors import BrokerUnavailable, ConfigError
from mercurio.urls import redact_url, scheme_of

__all__ = ["BACKENDS", "Broker", "BrokerUnavailable", "create_broker", "unsupported"]

BACKENDS: dict[str, str] = {
    "amqp": "mercurio.brokers.amqp:AmqpBroker",
    "amqps": "mercurio.brokers.amqp:AmqpBroker",
    "redis": "mercurio.brokers.redis:RedisBroker",
    "rediss": "mercurio.brokers.redis:RedisBroker",
    "memory": "mercurio.brokers.memory:MemoryBroker",
    "postgresql": "mercurio.brokers.postgres:PostgresBroker",
    "postgres": "mercurio.brokers.postgres:PostgresBroker",
}
"""URL scheme → engine class, as `module:Class`; adding an engine is one line here."""


def unsupported(url: str) -> str | None:
    """Why MERCURIO_MQ_CONN names no engine (the one message for it), or None when it does."""
    scheme = scheme_of(url)
    if scheme in BACKENDS:
        return None
    names = ", ".join(f"{name}://" for name in BACKENDS)
    return (
        f"MERCURIO_MQ_CONN: unsupported scheme {scheme!r} in {redact_url(url)!r}; "
        f"use one of {names}"
    )


def create_broker(url: str, **options: Any) -> Broker:
    """The engine for url's scheme (its driver imported now), not yet started."""
    refusal = unsupported(url)
    if refusal is not None:
        raise ConfigError(refusal)
    scheme = scheme_of(url)
    target = BACKENDS[scheme]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        engine_name = module_name.rsplit(".", 1)[-1]
        extra = {"amqp": "rabbitmq"}.get(engine_name, engine_name)
        raise ConfigError(
            f"MERCURIO_MQ_CONN: {scheme}:// needs {exc.name}; pip install 'mercurio[{extra}]'"
        ) from None
    engine: type[Broker] = getattr(module, class_name)
    return engine(url, **options)
