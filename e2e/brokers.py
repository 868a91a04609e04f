"""Apache Kafka for the tests: KRaft nodes (combined broker + controller) on free loopback ports.

Kafka comes from Maven Central (`scripts/kafka.sh` copies the artifacts of e2e/kafka/pom.xml into
target/kafka/<version>/libs); each node runs `kafka.Kafka` from there with storage formatted by Kafka's own
StorageTool. `KafkaCluster` starts one node (the shared test broker) or three (replication factor 3,
`min.insync.replicas=2`, for broker-failure tests), optionally with an SSL listener (mutual TLS: clients present a
certificate) and a SASL_SSL listener with SCRAM-SHA-512 users, and a test CA made here. Nodes stop by PID (SIGTERM,
or SIGKILL for a crash) and restart on the same log directory and ports; their logs stay in the cluster's directory,
and the tail of each is printed when a `with kafka_cluster(...)` block fails.

As a command, `python brokers.py serve --dir D [--nodes 3] [--security]` starts a cluster, prints its addresses
as one JSON line and keeps it until SIGTERM or until the process given with `--parent-pid` is gone: the test
command starts the shared broker this way, and the Rust tests start their own this way when none is shared.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parent.parent
KAFKA_VERSION = "4.4.0"  # as in e2e/kafka/pom.xml
LIBS = ROOT / "target" / "kafka" / KAFKA_VERSION / "libs"

# Every setting the tests rely on, in one place. Replication settings follow the cluster size (`settings`).
TEST_SETTINGS = {
    # A consumer group's first join completes at once instead of after 3 s.
    "group.initial.rebalance.delay.ms": "0",
    # Fewer internal partitions: the topics are created on first use, and 50 of each is seconds on 2 cores.
    "offsets.topic.num.partitions": "5",
    "transaction.state.log.num.partitions": "5",
    "share.coordinator.state.topic.num.partitions": "1",
    # Tests create every topic they use, as the operator does; a typo must fail, not create a topic.
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
    # Aborted transactions of a killed producer are rolled back sooner than the 10 s default check interval.
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "2000",
    # A node started again after a kill gets its preferred leaderships back within seconds, not 5 minutes.
    "leader.imbalance.check.interval.seconds": "10",
}

# SCRAM-SHA-512 users of a cluster started with `security=True`: name → password.
SCRAM_USERS = {"sensorpipe": "sensorpipe-test-secret", "other": "other-test-secret"}


def settings(nodes: int) -> dict[str, str]:
    rf = str(min(nodes, 3))
    isr = "2" if nodes >= 3 else "1"
    return {
        **TEST_SETTINGS,
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_metadata(bootstrap: str, brokers: int = 1, timeout: float = 60.0, **config) -> None:
    """Waits until `brokers` brokers are registered and serving metadata."""
    from confluent_kafka.admin import AdminClient
    deadline = time.monotonic() + timeout
    # log_level 0: connection refusals while the node starts are expected, not worth a line each.
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **config})
    while True:
        try:
            if len(admin.list_topics(timeout=1.0).brokers) >= brokers:
                return
        except Exception:  # noqa: BLE001 — any failure before the deadline means "not up yet"
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Kafka at {bootstrap} did not show {brokers} broker(s) within {timeout:.0f} s")
        time.sleep(0.2)


def _classpath() -> str:
    if not (LIBS / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        raise RuntimeError(f"Apache Kafka is not installed in {LIBS}: run scripts/kafka.sh")
    return str(LIBS / "*")


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, never starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _make_ca(d: pathlib.Path) -> None:
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate (CN=sensorpipe) for the
    SSL listener's mutual TLS, both signed by it, as PEM files in `d`."""
    d.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=sensorpipe test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "30", "-extfile", "san.cnf", "-out", "server.crt")
    # Kafka's PEM key store: the (unencrypted PKCS#8) key followed by the certificate chain.
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server-pkcs8.key")
    (d / "server.pem").write_text((d / "server-pkcs8.key").read_text() + (d / "server.crt").read_text())
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=sensorpipe", "-keyout", "client.key",
            "-out", "client.csr")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "30", "-out", "client.crt")


LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.clients
        level: WARN
"""


@dataclass
class Node:
    node_id: int
    dir: pathlib.Path
    client_port: int
    internal_port: int
    controller_port: int
    ssl_port: int | None = None
    sasl_port: int | None = None
    proc: subprocess.Popen | None = None
    log: pathlib.Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.dir / "kafka.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class KafkaCluster:
    """`nodes` KRaft nodes in `root`. Use as a context manager, or call `start`/`stop`."""

    def __init__(self, root: pathlib.Path, nodes: int = 1, security: bool = False,
                 advertised_port: int | None = None, heap: str = "512m") -> None:
        self.root = pathlib.Path(root)
        self.security = security
        self.heap = heap
        self.cluster_id = _cluster_id()
        self.nodes = [
            Node(i + 1, self.root / f"node-{i + 1}", free_port(), free_port(), free_port(),
                 free_port() if security else None, free_port() if security else None)
            for i in range(nodes)
        ]
        # With `advertised_port`, node 1 tells clients to connect there (a proxy in front of it).
        self.advertised_port = advertised_port

    # --- addresses -----------------------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.client_port}" for n in self.nodes)

    @property
    def ssl_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.ssl_port}" for n in self.nodes)

    @property
    def sasl_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.sasl_port}" for n in self.nodes)

    @property
    def ca_file(self) -> pathlib.Path:
        return self.root / "tls" / "ca.pem"

    def describe(self) -> dict:
        out = {"bootstrap": self.bootstrap, "nodes": [n.node_id for n in self.nodes],
               "logs": [str(n.log) for n in self.nodes]}
        if self.security:
            out.update(ssl_bootstrap=self.ssl_bootstrap, sasl_bootstrap=self.sasl_bootstrap,
                       ca_file=str(self.ca_file), client_cert=str(self.root / "tls" / "client.crt"),
                       client_key=str(self.root / "tls" / "client.key"), scram_mechanism="SCRAM-SHA-512",
                       users=SCRAM_USERS)
        return out

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def _properties(self, n: Node) -> str:
        voters = ",".join(f"{m.node_id}@127.0.0.1:{m.controller_port}" for m in self.nodes)
        listeners = [f"CLIENT://127.0.0.1:{n.client_port}", f"INTERNAL://127.0.0.1:{n.internal_port}",
                     f"CONTROLLER://127.0.0.1:{n.controller_port}"]
        advertised_client = self.advertised_port if (self.advertised_port and n.node_id == 1) else n.client_port
        advertised = [f"CLIENT://127.0.0.1:{advertised_client}", f"INTERNAL://127.0.0.1:{n.internal_port}"]
        protocols = ["CLIENT:PLAINTEXT", "INTERNAL:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        props = {
            "process.roles": "broker,controller",
            "node.id": str(n.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "INTERNAL",
            "log.dirs": str(n.dir / "data"),
            **settings(len(self.nodes)),
        }
        if self.security:
            tls = self.root / "tls"
            listeners += [f"SSL://127.0.0.1:{n.ssl_port}", f"SASL_SSL://127.0.0.1:{n.sasl_port}"]
            advertised += [f"SSL://127.0.0.1:{n.ssl_port}", f"SASL_SSL://127.0.0.1:{n.sasl_port}"]
            protocols += ["SSL:SSL", "SASL_SSL:SASL_SSL"]
            props.update({
                "ssl.keystore.type": "PEM", "ssl.keystore.location": str(tls / "server.pem"),
                "ssl.truststore.type": "PEM", "ssl.truststore.location": str(tls / "ca.pem"),
                # The SSL listener authenticates clients by certificate (mutual TLS); SASL_SSL by SCRAM password.
                "listener.name.ssl.ssl.client.auth": "required",
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            })
        props.update({"listeners": ",".join(listeners), "advertised.listeners": ",".join(advertised),
                      "listener.security.protocol.map": ",".join(protocols)})
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, *args: str, heap: str) -> list[str]:
        return ["java", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.root / 'log4j2.yaml'}", "-cp", _classpath(), *args]

    def start(self, timeout: float = 90.0) -> "KafkaCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "log4j2.yaml").write_text(LOG4J2)
        if self.security:
            _make_ca(self.root / "tls")
        formats = []
        for n in self.nodes:
            shutil.rmtree(n.dir / "data", ignore_errors=True)  # a new cluster: nothing of an earlier one
            n.dir.mkdir(parents=True, exist_ok=True)
            (n.dir / "server.properties").write_text(self._properties(n))
            scram = [a for name, pw in SCRAM_USERS.items()
                     for a in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={pw}]")] if self.security else []
            formats.append(subprocess.Popen(
                self._java("kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c",
                           str(n.dir / "server.properties"), *scram, heap="256m"),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for n, f in zip(self.nodes, formats):
            out, _ = f.communicate(timeout=120)
            if f.returncode != 0:
                raise RuntimeError(f"formatting Kafka node {n.node_id} failed:\n{out}")
        for n in self.nodes:
            self.start_node(n.node_id, wait=False)
        self.wait_ready(timeout)
        return self

    def start_node(self, node_id: int, wait: bool = True) -> None:
        """Starts (or restarts) a node on its log directory and ports."""
        n = self.node(node_id)
        assert not n.running, f"node {node_id} is running"
        with n.log.open("a") as log:
            n.proc = subprocess.Popen(self._java("kafka.Kafka", str(n.dir / "server.properties"), heap=self.heap),
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 90.0) -> None:
        up = [n for n in self.nodes if n.running]
        for n in up:
            try:
                wait_for_metadata(f"127.0.0.1:{n.client_port}", brokers=len(up), timeout=timeout)
            except TimeoutError:
                self.print_logs()
                raise

    def stop_node(self, node_id: int, kill: bool = False, timeout: float = 60.0) -> None:
        """Stops a node by PID: SIGKILL (a crash) or SIGTERM (a controlled shutdown), and waits for it to exit."""
        n = self.node(node_id)
        if not n.running:
            return
        n.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            n.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait()

    def stop(self) -> None:
        for n in self.nodes:
            if n.running:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            self.stop_node(n.node_id, timeout=30)

    def node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def print_logs(self, lines: int = 40) -> None:
        for n in self.nodes:
            if n.log.exists():
                tail = n.log.read_text(errors="replace").splitlines()[-lines:]
                print(f"--- Kafka node {n.node_id} ({n.log}), last {len(tail)} lines ---", file=sys.stderr)
                print("\n".join(tail), file=sys.stderr)

    def __enter__(self) -> "KafkaCluster":
        return self.start()

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None:
            self.print_logs()
        self.stop()

    # --- who leads what ------------------------------------------------------------------------------------------

    def leader(self, topic: str, partition: int) -> int:
        """The node that leads `topic`/`partition` now."""
        from confluent_kafka.admin import AdminClient
        md = AdminClient({"bootstrap.servers": self.live_bootstrap()}).list_topics(topic, timeout=10)
        return md.topics[topic].partitions[partition].leader

    def transaction_coordinator(self, transactional_id: str) -> int:
        """The node that coordinates `transactional_id`: the leader of its `__transaction_state` partition, which
        Kafka picks as abs(Java hashCode of the id) modulo the partition count."""
        data, h = transactional_id.encode("utf-16-be"), 0
        for i in range(0, len(data), 2):
            h = (31 * h + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
        h = h - (1 << 32) if h >= 1 << 31 else h
        partition = (0 if h == -(1 << 31) else abs(h)) % int(TEST_SETTINGS["transaction.state.log.num.partitions"])
        return self.leader("__transaction_state", partition)

    def group_coordinator(self, group: str) -> int:
        """The node coordinating consumer group `group` (its offsets and its members), as the group reports it."""
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": self.live_bootstrap()})
        return admin.describe_consumer_groups([group])[group].result(timeout=10).coordinator.id

    def live_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.client_port}" for n in self.nodes if n.running)


@contextlib.contextmanager
def kafka_cluster(root: pathlib.Path, nodes: int = 1, **kw):
    """A started cluster, stopped afterwards."""
    with KafkaCluster(root, nodes, **kw) as cluster:
        yield cluster


def _serve(args: argparse.Namespace) -> None:
    cluster = KafkaCluster(pathlib.Path(args.dir), args.nodes, security=args.security)
    stopping = False

    def on_signal(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster.start()
    try:
        info = json.dumps(cluster.describe())
        (cluster.root / "cluster.json").write_text(info + "\n")
        print(info, flush=True)
        while not stopping:
            if args.parent_pid:
                try:
                    os.kill(args.parent_pid, 0)
                except ProcessLookupError:
                    break
            if not all(n.running for n in cluster.nodes):
                cluster.print_logs()
                raise SystemExit("a Kafka node exited")
            time.sleep(0.5)
    finally:
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start a cluster, print its addresses as JSON, keep it until SIGTERM")
    serve.add_argument("--dir", required=True, help="where the nodes keep their logs and data")
    serve.add_argument("--nodes", type=int, default=1)
    serve.add_argument("--security", action="store_true", help="also SSL and SASL_SSL (SCRAM-SHA-512) listeners")
    serve.add_argument("--parent-pid", type=int, help="stop when this process is gone")
    args = ap.parse_args()
    _serve(args)


if __name__ == "__main__":
    main()
