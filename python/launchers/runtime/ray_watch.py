"""``python -m launchers.runtime.ray_watch ADDRESS``: one JSON line per poll with the alive Ray
nodes, read from Ray's GCS without starting a driver.

Run by the leader as a child process (so the runtime itself never imports Ray):
``{"alive": [{"ip": "10.0.0.2", "name": "node2", "gpus": 4.0}], "error": null}``.
"""

from __future__ import annotations

import json
import sys

from launchers import waits

POLL = 0.5


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m launchers.runtime.ray_watch HOST:PORT", file=sys.stderr)
        return 2
    address = argv[0]
    from ray._raylet import GcsClient  # Ray's own client of its control store

    client = None
    for _ in waits.ticks(POLL):
        line: dict[str, object]
        try:
            if client is None:
                client = GcsClient(address=address)
            nodes = client.get_all_node_info(timeout=5)
            alive = []
            for info in nodes.values():
                if info.state != 0:  # GcsNodeInfo.ALIVE == 0
                    continue
                resources = dict(info.resources_total)
                alive.append(
                    {
                        "ip": info.node_manager_address,
                        "name": info.node_manager_hostname,
                        "gpus": resources.get("GPU", 0.0),
                    }
                )
            line = {"alive": alive, "error": None}
        except Exception as exc:  # keep watching: the head may still be starting
            line = {"alive": None, "error": f"{type(exc).__name__}: {exc}"[:300]}
        try:
            print(json.dumps(line), flush=True)
        except BrokenPipeError:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
