"""What the dramatiq queues hold, read straight from the broker's Redis keys (no ``KEYS``).

Key layout (``dramatiq/brokers/redis/dispatch.lua``): ``ns:q`` ready ids, ``ns:q.msgs`` payloads
(in-flight included until acked), ``ns:q.DQ.msgs`` delayed payloads, ``ns:q.XQ`` / ``ns:q.XQ.msgs``
dead letters scored by time, ``ns:__acks__.<worker>.<q>`` fetched-but-unacked ids per worker
process, ``ns:__heartbeats__`` worker → last seen (ms). Producers (api, scheduler) beat too,
so which queues a worker consumes comes from the ``WorkerQueues`` middleware's hash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from cardpipe.redis_values import as_bytes, as_members, as_scored, as_text

#: Options dramatiq adds while a message is retried or failed; a requeued message starts clean.
_FAILURE_OPTIONS = ("eta", "retries", "traceback", "requeue_timestamp", "redis_message_id")
#: A process whose heartbeat is older than this is not counted as live.
LIVE_WORKER_AGE_S = 60.0
#: Broker id → comma-separated queues it consumes, kept by the ``WorkerQueues`` middleware.
WORKER_QUEUES_KEY = "cardpipe:worker-queues"
#: Per-actor counters (``actor|processed``, ``actor|failed``, ``actor|seconds``), summed across
#: worker processes by the ``ActorMetrics`` middleware and exported by ``cardpipe.metrics``.
ACTOR_METRICS_KEY = "cardpipe:actor-metrics"


def dead_letter_reasons_key(namespace: str, queue: str) -> str:
    """Dead-lettered message id → last traceback line and time, kept by the ``DeadLetterReasons`` middleware."""
    return f"cardpipe:dead-letter-reasons:{namespace}:{queue}"


@dataclass(frozen=True, slots=True)
class QueueStats:
    name: str
    ready: int
    delayed: int
    dead: int
    in_flight: int
    oldest_ready_age_s: float | None


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    worker_id: str
    age_s: float
    in_flight: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    queue: str
    redis_id: str
    message_id: str
    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    error: str
    retries: int
    failed_at: float


def _failure_line(recorded: bytes | None, options: dict[str, Any]) -> str:
    """The exception line: as recorded at nack time, else from a retried message's traceback."""
    if recorded:
        return recorded.decode().split("\n", 1)[0]
    lines = str(options.get("traceback", "")).strip().splitlines()
    return lines[-1] if lines else ""


class QueueMonitor:
    def __init__(self, broker: RedisBroker, *, clock: Callable[[], float] = time.time) -> None:
        self._broker = broker
        self._redis = broker.client
        self._ns = broker.namespace
        self._clock = clock

    def _key(self, *parts: str) -> str:
        return f"{self._ns}:{'.'.join(parts)}"

    def queue_names(self) -> list[str]:
        return sorted(q for q in self._broker.get_declared_queues() if not q.endswith((".DQ", ".XQ")))

    def workers(self) -> list[WorkerHeartbeat]:
        now_ms = self._clock() * 1000
        beats = as_scored(self._redis.zrange(f"{self._ns}:__heartbeats__", 0, -1, withscores=True))
        queues = self.queue_names()
        result = []
        for raw_id, last_seen in beats:
            worker_id = raw_id.decode()
            pipe = self._redis.pipeline(transaction=False)
            for queue in queues:
                pipe.scard(f"{self._ns}:__acks__.{worker_id}.{queue}")
                pipe.scard(f"{self._ns}:__acks__.{worker_id}.{queue}.DQ")
            in_flight = sum(pipe.execute())
            result.append(WorkerHeartbeat(worker_id, round((now_ms - last_seen) / 1000, 3), in_flight))
        return result

    def live_consumers(self, max_age_s: float = LIVE_WORKER_AGE_S) -> dict[str, int]:
        """Per queue, the worker processes consuming it whose heartbeat is under ``max_age_s`` old."""
        now_ms = self._clock() * 1000
        beats = dict(as_scored(self._redis.zrange(f"{self._ns}:__heartbeats__", 0, -1, withscores=True)))
        counts = dict.fromkeys(self.queue_names(), 0)
        for worker_id, queues in self._redis.hgetall(WORKER_QUEUES_KEY).items():
            last_seen = beats.get(as_bytes(worker_id))
            if last_seen is None or now_ms - last_seen > max_age_s * 1000:
                continue
            for queue in as_text(queues).split(","):
                if queue in counts:
                    counts[queue] += 1
        return counts

    def forget_departed_workers(self) -> int:
        """Drop the queue lists of processes without a heartbeat (killed, never shut down)."""
        beating = {raw for raw in self._redis.zrange(f"{self._ns}:__heartbeats__", 0, -1)}
        departed = [worker_id for worker_id in self._redis.hkeys(WORKER_QUEUES_KEY) if worker_id not in beating]
        return int(self._redis.hdel(WORKER_QUEUES_KEY, *departed)) if departed else 0

    def queues(self) -> list[QueueStats]:
        worker_ids = [raw.decode() for raw in as_members(self._redis.zrange(f"{self._ns}:__heartbeats__", 0, -1))]
        result = []
        for queue in self.queue_names():
            pipe = self._redis.pipeline(transaction=False)
            pipe.llen(self._key(queue))
            pipe.hlen(self._key(queue, "DQ", "msgs"))
            pipe.zcard(self._key(queue, "XQ"))
            pipe.lindex(self._key(queue), 0)
            for worker_id in worker_ids:
                pipe.scard(f"{self._ns}:__acks__.{worker_id}.{queue}")
            ready, delayed, dead, oldest_id, *acks = pipe.execute()
            result.append(
                QueueStats(queue, ready, delayed, dead, sum(acks), self._age_of(queue, oldest_id) if ready else None)
            )
        return result

    def _age_of(self, queue: str, redis_id: bytes | None) -> float | None:
        if redis_id is None:
            return None
        payload = self._redis.hget(self._key(queue, "msgs"), redis_id)
        if payload is None:
            return None
        sent_ms = float(json.loads(payload)["message_timestamp"])
        return round(max(0.0, self._clock() - sent_ms / 1000), 3)

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        entries = as_scored(self._redis.zrevrange(self._key(queue, "XQ"), 0, limit - 1, withscores=True))
        if not entries:
            return []
        ids = [redis_id for redis_id, _ in entries]
        payloads = self._redis.hmget(self._key(queue, "XQ", "msgs"), ids)
        reasons = self._redis.hmget(dead_letter_reasons_key(self._ns, queue), ids)
        letters = []
        for (redis_id, failed_ms), payload, reason in zip(entries, payloads, reasons, strict=True):
            if payload is None:
                continue
            data = json.loads(payload)
            options = data.get("options", {})
            letters.append(
                DeadLetter(
                    queue=queue,
                    redis_id=redis_id.decode(),
                    message_id=data["message_id"],
                    actor=data["actor_name"],
                    args=data.get("args", []),
                    kwargs=data.get("kwargs", {}),
                    error=_failure_line(reason, options),
                    retries=int(options.get("retries", 0)),
                    failed_at=failed_ms / 1000,
                )
            )
        return letters

    def requeue(self, queue: str, redis_id: str) -> bool:
        """Put a dead letter back on its queue as a fresh message, then drop it from the DLQ.
        Enqueue-then-remove: a crash in between runs it twice, which every actor tolerates."""
        payload = self._redis.hget(self._key(queue, "XQ", "msgs"), redis_id)
        if payload is None:
            return False
        message = Message.decode(as_bytes(payload))
        options = {k: v for k, v in message.options.items() if k not in _FAILURE_OPTIONS}
        fresh: Message[Any] = Message(
            queue_name=queue,
            actor_name=message.actor_name,
            args=message.args,
            kwargs=message.kwargs,
            options=options,
            message_id=message.message_id,
            message_timestamp=int(self._clock() * 1000),
        )
        self._broker.enqueue(fresh)
        self._drop(queue, redis_id)
        return True

    def purge(self, queue: str, redis_id: str | None = None) -> int:
        """Discard one dead letter, or all of a queue's."""
        if redis_id is not None:
            return self._drop(queue, redis_id)
        count = self._redis.zcard(self._key(queue, "XQ"))
        self._redis.delete(
            self._key(queue, "XQ"), self._key(queue, "XQ", "msgs"), dead_letter_reasons_key(self._ns, queue)
        )
        return count

    def _drop(self, queue: str, redis_id: str) -> int:
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(self._key(queue, "XQ"), redis_id)
        pipe.hdel(self._key(queue, "XQ", "msgs"), redis_id)
        pipe.hdel(dead_letter_reasons_key(self._ns, queue), redis_id)
        removed, _, _ = pipe.execute()
        return int(removed)
