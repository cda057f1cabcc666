"""One HIS view poller process for ``test_his_views`` (run as ``python his_view_poller.py URL
SCHEMA VIEW STOP_FILE``): polls the view as the ticker would (its own engine, its own worker id
with its pid), as often as it can; touches ``STOP_FILE.ready-<pid>`` after its first poll; once
``STOP_FILE`` exists and it has held the view at least once, polls once more and exits. Each
poll's result is one JSON line on stdout; an exception ends the process with its traceback."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(url: str, schema: str, view: str, stop_file: str) -> int:
    from careloop.engine.db import make_engine, transaction
    from careloop.flows.inbound import views

    options = {"connect_args": {"options": f"-csearch_path={schema}"}} if schema else {}
    engine = make_engine(url, **options)
    with transaction(engine) as session:
        spec = views.spec_of(session, view)
    stop = Path(stop_file)
    ready = stop.with_name(f"{stop.name}.ready-{os.getpid()}")
    held = False
    while True:
        stopping = stop.exists() and held
        result = views.poll(engine, spec, force=True)
        print(json.dumps(result.to_json()), flush=True)
        held = held or result.status == "polled"
        ready.touch()
        if stopping:
            break
        time.sleep(0.1)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
