"""`python -m kube_double --dir DIR [--runner CONFIG]`: serves on a free loopback port, writes DIR/kubeconfig and
prints `listening on http://127.0.0.1:PORT` once ready. SIGTERM stops the runner's processes, then the server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from .api import Api
from .resources import Registry
from .runner import DeploymentRunner
from .server import Server
from .store import Store

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: double
  cluster: {{server: "{server}"}}
users:
- name: tester
  user: {{token: test-token}}
contexts:
- name: double
  context: {{cluster: double, user: tester, namespace: default}}
current-context: double
"""


async def main(args: argparse.Namespace) -> None:
    store = Store(history=args.history)
    api = Api(store, Registry())
    server = Server(api)
    # The access log (stderr) is what a failure report shows of the clients' requests.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    runner = web.AppRunner(server.app, handle_signals=False, shutdown_timeout=1,
                           access_log_format='%s "%r" %b %Tfs "%{User-Agent}i"')
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - aiohttp has no public accessor for port 0
    server.address = f"127.0.0.1:{port}"
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "kubeconfig").write_text(KUBECONFIG.format(server=f"http://127.0.0.1:{port}"))
    deployments = None
    if args.runner:
        deployments = DeploymentRunner(api, Path(args.runner), work / "pods", f"http://127.0.0.1:{port}",
                                       work / "kubeconfig")
        deployments.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    await stop.wait()
    if deployments is not None:
        await deployments.stop()
    server.closing.set()
    await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="kube_double")
    p.add_argument("--dir", required=True, help="working directory: kubeconfig, pod logs")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--history", type=int, default=5000, help="watch events kept for resuming")
    p.add_argument("--runner", help="deployment runner config (YAML: image → local binary)")
    asyncio.run(main(p.parse_args()))
    sys.exit(0)
