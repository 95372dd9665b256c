"""An orchestrator at work, instrumented with greenlight.agent, for the dashboards-on-data test.

``python agent_workload.py PORT`` serves the agent metrics on 127.0.0.1:PORT and runs: two
workflow runs that succeed and one that fails (each with a task), then a workflow that waits
for an approval and a task that stays running past its one-second timeout. It prints ``ready``
once all of that is in place and keeps running until it is terminated.
"""

from __future__ import annotations

import sys
import threading
import time

from greenlight.agent import Workflow, serve_metrics


def finished_runs() -> None:
    for _ in range(2):
        with Workflow("deploy") as workflow, workflow.task("preview"):
            time.sleep(0.05)
    try:
        with Workflow("deploy") as workflow, workflow.task("apply"):
            raise RuntimeError("apply failed")
    except RuntimeError:
        pass


def waiting_and_overdue(started: threading.Event, stop: threading.Event) -> None:
    workflow = Workflow("migrate", workflow_id="wf-migrate-1")
    with (
        workflow,
        workflow.awaiting_approval(request="migrate-prod"),
        workflow.task("backfill", task_id="task-backfill-1", timeout=1),
    ):
        started.set()
        stop.wait()


def main() -> int:
    server = serve_metrics(int(sys.argv[1]), host="127.0.0.1")
    finished_runs()
    started, stop = threading.Event(), threading.Event()
    worker = threading.Thread(target=waiting_and_overdue, args=(started, stop), daemon=True)
    worker.start()
    started.wait()
    time.sleep(1.5)  # past the backfill task's deadline
    print("ready", flush=True)
    try:
        stop.wait()
    finally:
        server()
    return 0


if __name__ == "__main__":
    sys.exit(main())
