"""Reading what was published, straight from JetStream (the test's view of the broker)."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError


async def _read_subject(url: str, stream: str, subject: str, limit: int) -> list[dict[str, Any]]:
    client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = client.jetstream()
        try:
            subscription = await js.pull_subscribe(
                subject, stream=stream,
                config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
            )
        except NotFoundError:
            return []
        events: list[dict[str, Any]] = []
        while len(events) < limit:
            try:
                batch = await subscription.fetch(min(256, limit - len(events)), timeout=0.3)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                break
            for message in batch:
                payload = json.loads(message.data)
                payload["_subject"] = message.subject
                payload["_headers"] = dict(message.headers or {})
                events.append(payload)
        await subscription.unsubscribe()
        return events
    finally:
        await client.close()


def read_events(url: str, stream: str, subject: str = ">", limit: int = 100_000) -> list[dict[str, Any]]:
    return asyncio.run(_read_subject(url, stream, subject, limit))


def wait_for_events(url: str, stream: str, subject: str, count: int, timeout: float = 15.0,
                    **match: Any) -> list[dict[str, Any]]:
    """Wait until at least `count` events matching `match` are in the stream; return the matches."""
    deadline = time.monotonic() + timeout
    while True:
        events = [event for event in read_events(url, stream, subject)
                  if all(event.get(key) == value for key, value in match.items())]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


async def _publish(url: str, subject: str, payload: dict[str, Any], msg_id: str | None) -> None:
    client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        await client.jetstream().publish(subject, json.dumps(payload).encode(), headers=headers)
    finally:
        await client.close()


def publish_event(url: str, subject: str, payload: dict[str, Any], msg_id: str | None = None) -> None:
    asyncio.run(_publish(url, subject, payload, msg_id))


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def consumer_exists(runtime: Any, stream: str, durable: str) -> bool:
    """Whether `runtime`'s durable consumer `durable` of `stream` exists yet (its consumers subscribe in the
    background after start)."""
    try:
        runtime.nats.run(runtime.nats.jetstream.consumer_info(stream, durable))
        return True
    except Exception:
        return False
