#!/usr/bin/env python3
"""Independent Kafka reader for kollate's integration tests.

Reads every partition of the given topic(s) from the beginning with assign()
(no consumer group, nothing committed) and prints one JSON line per message:

  {"topic": .., "partition": .., "offset": .., "key": str|null,
   "value": <parsed JSON, else the utf-8 string, or null>, "headers": {name: str|null}}

Stops when --expect messages were read, when nothing arrived for --idle-timeout
seconds, or at --timeout overall; exits 0 in all three cases (a note goes to stderr
when it stopped short of --expect). Exits 2 when the broker cannot be reached, or when a
topic still does not exist at the deadline.
Works against tansu (see tests/peers/setup.sh).
"""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition


def err(msg):
    print(f"kafka_consume: {msg}", file=sys.stderr, flush=True)


def text(b):
    if b is None:
        return None
    if isinstance(b, str):
        return b
    return b.decode("utf-8", errors="replace")


def value_of(b):
    if b is None:
        return None
    s = text(b)
    try:
        return json.loads(s)
    except ValueError:
        return s


def partitions_of(consumer, topics, deadline, connect_deadline):
    """Waits until every topic exists; returns [TopicPartition] from the beginning."""
    pending = list(topics)
    found = {}
    connected = False
    last_note = 0.0
    while True:
        now = time.monotonic()
        limit = deadline if connected else min(deadline, connect_deadline)
        try:
            md = consumer.list_topics(timeout=max(0.5, min(5.0, limit - now)))
            connected = True
        except KafkaException as e:
            if time.monotonic() >= limit:
                err(f"cannot get metadata from the broker: {e}")
                sys.exit(2)
            time.sleep(0.2)
            continue
        still = []
        for t in pending:
            tm = md.topics.get(t)
            if tm is None or tm.error is not None or not tm.partitions:
                still.append(t)
            else:
                found[t] = sorted(tm.partitions)
        pending = still
        if not pending:
            break
        now = time.monotonic()
        if now >= deadline:
            err(f"topic(s) do not exist: {', '.join(pending)}")
            sys.exit(2)
        if now - last_note > 5.0:
            err(f"waiting for topic(s) to exist: {', '.join(pending)}")
            last_note = now
        time.sleep(0.2)
    return [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in found[t]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True, help="HOST:PORT")
    ap.add_argument("--topic", action="append", required=True, help="repeatable")
    ap.add_argument("--expect", type=int, default=None, help="stop after N messages")
    ap.add_argument("--idle-timeout", type=float, default=10.0,
                    help="stop when nothing arrived for this many seconds (default 10)")
    ap.add_argument("--timeout", type=float, default=120.0, help="overall deadline (default 120)")
    ap.add_argument("--connect-timeout", type=float, default=10.0,
                    help="give up when the broker cannot be reached for this long (default 10)")
    args = ap.parse_args()

    start = time.monotonic()
    deadline = start + args.timeout
    topics = list(dict.fromkeys(args.topic))

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        # Required by the client but never used: assign() joins no group, nothing is committed.
        "group.id": f"kollate-test-reader-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "allow.auto.create.topics": False,
        "enable.partition.eof": False,
    })
    count = 0
    reason = "timeout"
    try:
        tps = partitions_of(consumer, topics, deadline, start + args.connect_timeout)
        consumer.assign(tps)
        last = time.monotonic()
        if args.expect is not None and args.expect <= 0:
            reason = "expect"
        while reason != "expect":
            now = time.monotonic()
            if now >= deadline:
                reason = "timeout"
                break
            if now - last >= args.idle_timeout:
                reason = "idle"
                break
            msg = consumer.poll(min(0.5, max(0.01, deadline - now)))
            if msg is None:
                continue
            if msg.error():
                e = msg.error()
                if e.code() == KafkaError._PARTITION_EOF:
                    continue
                err(f"consume error: {e}")
                if e.fatal():
                    sys.exit(2)
                continue
            last = time.monotonic()
            headers = {}
            for name, v in msg.headers() or []:
                headers[text(name)] = text(v)
            line = {
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": text(msg.key()),
                "value": value_of(msg.value()),
                "headers": headers,
            }
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            count += 1
            if args.expect is not None and count >= args.expect:
                reason = "expect"
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        try:
            consumer.close()
        except Exception:  # noqa: BLE001 - closing must not hide the result
            pass
    if args.expect is not None and count < args.expect:
        err(f"stopped ({reason}) after {count} of {args.expect} expected messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
