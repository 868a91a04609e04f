"""What a read_committed consumer must see, computed from the raw log.

No broker that runs here filters aborted transactions for read_committed consumers: tansu and the librdkafka 2.16
mock cluster both write commit/abort markers, but their Fetch responses list no aborted transactions, so
librdkafka delivers aborted records. Exactly-once claims are therefore verified by reading the raw record
batches with read_uncommitted and applying the markers ourselves: a transactional batch of
producer P becomes visible at P's next COMMIT marker and is dropped at its next ABORT marker; records of a
transaction without a marker yet are not visible (still open).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from kafka.protocol.fetch import FetchRequest_v4
from kafka.protocol.parser import KafkaProtocol
from kafka.record import MemoryRecords


@dataclass
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list
    producer_id: int = -1
    producer_epoch: int = -1


def _request(sock: socket.socket, proto: KafkaProtocol, request):
    proto.send_request(request)
    sock.sendall(proto.send_bytes())
    while True:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("broker closed the connection")
        responses = proto.receive_bytes(data)
        if responses:
            return responses[0][1]


def committed_records(bootstrap: str, topic: str, partitions: int) -> dict[int, list[Record]]:
    """Per partition, the records a correct read_committed consumer sees, in offset order.

    Connects to the first bootstrap broker: the single-broker clusters used in tests lead every partition.
    """
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    result: dict[int, list[Record]] = {}
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        proto = KafkaProtocol(client_id="sensorpipe-e2e-verifier")
        for p in range(partitions):
            visible: list[Record] = []
            open_txns: dict[int, list[Record]] = {}
            offset = 0
            while True:
                req = FetchRequest_v4(-1, 100, 1, 64 << 20, 0, [(topic, [(p, offset, 32 << 20)])])
                resp = _request(sock, proto, req)
                _, parts = resp.topics[0]
                _, error, _high, _lso, _aborted, raw = parts[0]
                if error:
                    raise RuntimeError(f"fetch {topic}/{p}@{offset}: error {error}")
                records = MemoryRecords(raw)
                progressed = False
                while records.has_next():
                    batch = records.next_batch()
                    if batch is None:
                        break
                    pid = batch.producer_id
                    for r in batch:
                        if r.offset < offset:
                            continue
                        offset = r.offset + 1
                        progressed = True
                        if batch.is_control_batch:
                            pending = open_txns.pop(pid, [])
                            if r.commit:
                                visible.extend(pending)
                        elif batch.is_transactional:
                            open_txns.setdefault(pid, []).append(
                                Record(r.offset, r.key, r.value, r.headers, pid, batch.producer_epoch))
                        else:
                            visible.append(Record(r.offset, r.key, r.value, r.headers))
                    # A batch may end in offsets without records (compaction); continue after it.
                    offset = max(offset, batch.next_offset if hasattr(batch, "next_offset") else offset)
                # Not `offset >= high`: tansu reports a high watermark up to a batch too low.
                if not progressed:
                    break
            visible.sort(key=lambda r: r.offset)
            result[p] = visible
    return result
