"""The real front's proxy, served as the front serves it, for ``bench.front.run``:
``proxy.make_app`` before a vllm-router on loopback, through ``frontserver.start_site``
on the front's event loop (uvloop where installed), with the upstream limit the front
gives a service whose replicas' ``--max-num-seqs`` it does not know. The key is read from
a file (0600), never given on the command line.

    python -m bench.front.serve_proxy --port P --router-url http://127.0.0.1:R --key-file F
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

from launchers.service import front
from launchers.service.frontserver import start_site
from launchers.service.proxy import make_app

LOOPBACK = "127.0.0.1"


async def serve(port: int, router_url: str, key: str, upstream_limit: int) -> None:
    app = make_app(router_url, key, healthy=lambda: True, upstream_limit=upstream_limit)
    site = await start_site(app, LOOPBACK, port)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print(f"proxy on {LOOPBACK}:{port} -> {router_url} (upstream limit {upstream_limit})",
          flush=True)  # fmt: skip
    await done.wait()
    await site.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--router-url", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--upstream-limit", type=int, default=front.upstream_limit(None))
    args = parser.parse_args(argv)
    with open(args.key_file) as file:
        key = file.read().strip()
    with asyncio.Runner(loop_factory=front._loop_factory()) as runner:
        runner.run(serve(args.port, args.router_url, key, args.upstream_limit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
