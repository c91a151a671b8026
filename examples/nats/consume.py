#!/usr/bin/env python3
"""Reads the workflowops JetStream feed from the start, in log order, and prints
one line per event. Needs `pip install nats-py`. Usage:

    python3 examples/nats/consume.py [nats://127.0.0.1:4222] [workflowops.>]
"""
import asyncio, json, sys
import nats
from nats.js.api import DeliverPolicy

async def main(url, subjects):
    nc = await nats.connect(url)
    js = nc.jetstream()
    # An ordered consumer: every message once, in stream (= log) order, no acks.
    sub = await js.subscribe(subjects, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    async for msg in sub.messages:
        event = json.loads(msg.data)
        print(msg.headers.get("Nats-Msg-Id"), event["position"], msg.subject,
              event["metadata"].get("actor"), flush=True)

args = sys.argv[1:] + ["nats://127.0.0.1:4222", "workflowops.>"][len(sys.argv[1:]):]
asyncio.run(main(*args[:2]))
