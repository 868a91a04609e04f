"""Hosts a librdkafka 2.16 mock cluster (via confluent-kafka) for other processes; test code only.

Prints the bootstrap address on stdout, creates the topics named in argv (the mock auto-creates them with 4
partitions; it has no CreateTopics), then lives until stdin closes. The mock is the only broker here with
transaction markers, so the exactly-once tests run on it (verification: committed_view.py).
"""

import sys

import confluent_kafka

host = confluent_kafka.Producer({"test.mock.num.brokers": 1})
md = host.list_topics(timeout=10)
bootstrap = ",".join(f"{b.host}:{b.port}" for b in md.brokers.values())
creator = confluent_kafka.Producer({"bootstrap.servers": bootstrap})
for topic in sys.argv[1:]:
    creator.list_topics(topic, timeout=10)
print(bootstrap, flush=True)
sys.stdin.read()
