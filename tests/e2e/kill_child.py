"""Child process for the kill loop: the real Database + Outbox + Publisher, killed at random moments.

Usage: kill_child.py DB PORT RUN_ID COUNT. Prints "ready" once publishing has started, enqueues COUNT
messages {"run": RUN_ID, "n": k} while publishing, then waits for the outbox to drain and exits cleanly
(COUNT 0: just drain). The parent SIGKILLs it at random moments.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from edge_agent.config import DeviceSettings, MqttSettings, StoreSettings
from edge_agent.store.db import Database
from edge_agent.store.outbox import Outbox
from edge_agent.sync.publisher import Publisher


def main() -> int:
    db_path, port, run_id, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    settings = MqttSettings(
        host="127.0.0.1",
        port=port,
        tls=False,
        backoff_min_s=0.05,
        backoff_max_s=0.2,
        batch_max=7,
        inflight_max=5,
        connect_timeout_s=3.0,
    )
    db = Database(db_path, StoreSettings())
    db.open()
    outbox = Outbox(db, DeviceSettings(), StoreSettings(), settings)
    outbox.open()
    publisher = Publisher(outbox, DeviceSettings(), settings)
    publisher.start()
    print("ready", flush=True)
    for n in range(count):
        future = outbox.enqueue("attention", {"run": run_id, "n": n})
        if n % 5 == 0:
            future.result(5)
            time.sleep(0.002)
    deadline = time.monotonic() + 20
    while outbox.backlog and time.monotonic() < deadline:
        time.sleep(0.02)
    publisher.stop()
    db.close()
    print("drained" if not outbox.backlog else "not drained", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
