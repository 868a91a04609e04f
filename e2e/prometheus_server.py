"""A real Prometheus (Debian's `prometheus`, installed by scripts/test.sh) on a free loopback port, scraping
targets named in a file so they can change while it runs, and its query API."""

from __future__ import annotations

import contextlib
import json
import pathlib
import subprocess
import urllib.parse
import urllib.request

import yaml

from brokers import free_port
from kafka_io import http_get, stop, wait_until


@contextlib.contextmanager
def prometheus(work: pathlib.Path, targets: pathlib.Path | None = None):
    """Prometheus scraping every second the targets `set_targets` names (or those another writer keeps in
    `targets`, such as the API double's deployment runner), with the target labels the Prometheus Operator would
    add (namespace, pod). Targets come from a file, so workers can be added while it runs."""
    port = free_port()
    if targets is None:
        targets = work / "targets.json"
        targets.write_text("[]")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "sensorpipe",
                            "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}]}],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{port}",
         f"--storage.tsdb.path={work / 'tsdb'}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: http_get(port, "/-/ready")[0] == 200, 30, "Prometheus ready")
        yield port
    finally:
        stop(proc, timeout=15)
        log.close()


def set_targets(work: pathlib.Path, workers: dict[str, int]) -> None:
    """Scrape these workers (pod name → metrics port) in namespace `facilities`."""
    groups = [{"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": "facilities", "pod": pod}}
              for pod, port in workers.items()]
    tmp = work / "targets.json.tmp"
    tmp.write_text(json.dumps(groups))
    tmp.replace(work / "targets.json")  # atomic: Prometheus never reads half a file


def instant(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


