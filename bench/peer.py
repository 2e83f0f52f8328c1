"""The typical peer: a notification service as it is usually written with FastAPI.

FastAPI routes, sse-starlette's EventSourceResponse for the stream, an asyncio.Queue per open
stream, the stdlib sqlite3 module for the rows (WAL, synchronous=FULL, one INSERT per row in
one transaction per request, run in a worker thread so the event loop keeps serving), PyJWT
checking the same HS256 tokens Mercurio's test mode accepts. It answers the routes the
benchmark uses with Mercurio's contract (docs/API.md): the stream, unicast, broadcast to a
list of destinations, announce. Nothing in it is made slow on purpose; nothing is tuned.

    python -m bench.peer --port 8124 --db /tmp/peer.db
"""

# No `from __future__ import annotations`: FastAPI resolves the routes' Annotated
# dependencies, which are closures of create_app, from live annotations.

import argparse
import asyncio
import json
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import jwt
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse

from bench.proc import raise_nofile
from mercurio.config import DEVELOPMENT_KEY

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    category TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    read_at TEXT
);
CREATE INDEX IF NOT EXISTS ix_notifications_client_id ON notifications (client_id, id);
"""
INSERT = (
    "INSERT INTO notifications (event_id, source_id, client_id, category, data, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def connect(path: str) -> sqlite3.Connection:
    """A connection with the schema in place (also used to prepare a database beforehand)."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    return db


class Store:
    """One sqlite3 connection; a lock keeps one transaction on it at a time."""

    def __init__(self, path: str) -> None:
        self.db = connect(path)
        self.lock = threading.Lock()

    def insert(self, rows: list[tuple[str, str, str, str, str, str]]) -> list[int]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                ids = [int(self.db.execute(INSERT, row).lastrowid or 0) for row in rows]
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return ids


class Unicast(BaseModel):
    id: str | None = None
    sourceID: str
    destinationID: str
    data: Any
    category: str = "general"


class Broadcast(BaseModel):
    id: str | None = None
    sourceID: str
    destinations: list[str] = Field(min_length=1)
    data: Any
    category: str = "general"


class Announce(BaseModel):
    id: str | None = None
    sourceID: str
    data: Any
    category: str = "general"


def create_app(db_path: str, key: str = DEVELOPMENT_KEY) -> FastAPI:
    app = FastAPI()
    store = Store(db_path)
    streams: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}

    # async def: a plain `def` dependency would be run in FastAPI's thread pool, a thread hop
    # per request for a few microseconds of work (both are common; this one is the fair one).
    async def claims(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise HTTPException(401, "missing bearer token")
        try:
            decoded: dict[str, Any] = jwt.decode(authorization[7:], key, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            raise HTTPException(401, str(exc)) from None
        return decoded

    async def publisher(token: Annotated[dict[str, Any], Depends(claims)]) -> dict[str, Any]:
        if "publisher" not in token.get("roles", []):
            raise HTTPException(403, "not a publisher")
        return token

    async def store_and_push(
        destinations: list[str], source: str, category: str, data: Any, event_id: str | None
    ) -> list[dict[str, Any]]:
        now = datetime.now(UTC).isoformat()
        text = json.dumps(data)
        events = [event_id or str(uuid.uuid4()) for _ in destinations]
        rows = [
            (e, source, d, category, text, now) for e, d in zip(events, destinations, strict=True)
        ]
        ids = await asyncio.to_thread(store.insert, rows)
        out = []
        for nid, event, destination in zip(ids, events, destinations, strict=True):
            notification = {
                "notificationID": nid,
                "eventID": event,
                "sourceID": source,
                "clientID": destination,
                "data": data,
                "category": category,
                "createdAt": now,
            }
            if destination == "*":
                targets = [q for queues in streams.values() for q in queues]
            else:
                targets = list(streams.get(destination, ()))
            for queue in targets:
                queue.put_nowait(notification)
            out.append({"notificationID": nid, "eventID": event})
        return out

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"message": "Welcome to the typical peer"}

    @app.get("/api/clients/{client_id}/notifications/stream")
    async def stream(
        client_id: str, token: Annotated[dict[str, Any], Depends(claims)]
    ) -> EventSourceResponse:
        if token.get("user_id", token.get("sub")) != client_id:
            raise HTTPException(403, "not your stream")
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        streams.setdefault(client_id, set()).add(queue)

        async def events() -> AsyncIterator[dict[str, Any]]:
            try:
                yield {"comment": "connected", "retry": 3000}
                while True:
                    notification = await queue.get()
                    yield {
                        "id": str(notification["notificationID"]),
                        "data": json.dumps(notification),
                    }
            finally:
                mine = streams.get(client_id)
                if mine is not None:
                    mine.discard(queue)
                    if not mine:
                        del streams[client_id]

        # sep="\n": the same line endings as Mercurio's frames (the default is "\r\n").
        return EventSourceResponse(events(), ping=60, sep="\n")

    @app.post("/api/events/unicast")
    async def unicast(
        body: Unicast, _: Annotated[dict[str, Any], Depends(publisher)]
    ) -> dict[str, Any]:
        [answer] = await store_and_push(
            [body.destinationID], body.sourceID, body.category, body.data, body.id
        )
        return answer

    @app.post("/api/events/broadcast")
    async def broadcast(
        body: Broadcast, _: Annotated[dict[str, Any], Depends(publisher)]
    ) -> list[dict[str, Any]]:
        return await store_and_push(
            body.destinations, body.sourceID, body.category, body.data, body.id
        )

    @app.post("/api/events/announce")
    async def announce(
        body: Announce, _: Annotated[dict[str, Any], Depends(publisher)]
    ) -> dict[str, Any]:
        [answer] = await store_and_push(["*"], body.sourceID, body.category, body.data, body.id)
        return answer

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8124)
    parser.add_argument("--db", required=True, help="the SQLite file (created if missing)")
    args = parser.parse_args()
    raise_nofile()
    uvicorn.run(
        create_app(args.db),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
