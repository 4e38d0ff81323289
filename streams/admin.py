"""Kafka topic set-up: every topic GiftGuard reads or writes, created if missing."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams import topics


async def ensure_topics(bootstrap: list[str], partitions: int, timeout: float = 30.0) -> None:
    """Create the public and internal topics with ``partitions`` partitions.

    Topics that exist are left as they are. Retries while the broker is still starting.
    """
    wanted = [*topics.PUBLIC_TOPICS, *topics.INTERNAL_TOPICS]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [NewTopic(name, partitions, 1, topic_configs=topics.TOPIC_CONFIGS.get(name, {}))
                       for name in wanted if name not in existing]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass  # another process made them between our list and create
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
