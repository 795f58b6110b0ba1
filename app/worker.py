"""Where the app's jobs run: in one child process (the app) or on the job runner's own thread (tests).

Why a process: the Streamlit server reruns the progress fragments of every open page each second and
collects garbage after every script run. In the server's process those reruns held the GIL so often
that a pruning thread got about 4% of a core, and the same Compare took several times as long as from
the CLI (issue 11). The child process has its own interpreter: it loads the models, runs
`execute_run` and sends back the same typed events the CLI draws; the server only relays them.

A job is a `RunRequest` (prune) or a `RepairRequest` (fine-tune a pruned run): both go through the
same queue and the same child, one at a time. This module is what the server imports: the process,
its queues (the messages are in `app.messages`), no torch (the server stays light and its first page fast); the job's
own steps are in `app.execution`, which only the worker process imports. No Streamlit here.
"""
from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.messages import Cancel, JobRequest, JobStatus, Outcome
from wanda_engine.core.events import Event
from wanda_engine.store.run_store import RunStore

def _child_main(orders: Any, messages: Any, cancel: Any) -> None:
    """The worker process's entry point."""
    from app.execution import serve  # imported in the child only: the server process never loads torch

    serve(orders, messages, cancel)


class WorkerProcess:
    """One child process that keeps its models loaded between jobs; restarted if it dies."""

    POLL_S = 0.2  # how often a waiting relay checks for a cancel request or a dead child

    def __init__(self) -> None:
        # spawn, not fork: the server has threads (a forked child could inherit a held lock)
        self._ctx = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the child now (its imports take seconds) so that the first job finds it ready."""
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._orders, self._messages, self._cancel = self._ctx.Queue(), self._ctx.Queue(), self._ctx.Event()
                self._process = self._ctx.Process(target=_child_main, args=(self._orders, self._messages, self._cancel),
                                                  name="wanda-worker", daemon=True)
                self._process.start()

    def run(self, request: JobRequest, store: RunStore, on_event: Callable[[Event], None], cancel: Cancel) -> Outcome:
        self.start()
        # this job's process and queues: `close` may drop the runner's references while the job relays
        process, orders, messages, child_cancel = self._process, self._orders, self._messages, self._cancel
        child_cancel.clear()
        orders.put((request, str(Path(store.root))))
        while True:
            if cancel.is_set():
                child_cancel.set()
            try:
                message = messages.get(timeout=self.POLL_S)
            except queue.Empty:
                if not process.is_alive():
                    return Outcome(JobStatus.FAILED, error=f"the worker process stopped unexpectedly (exit code "
                                                 f"{process.exitcode}; out of memory?); the next run starts a new one")
                continue
            if isinstance(message, Outcome):
                return message
            on_event(message)

    def close(self) -> None:
        with self._lock:
            if self._process is not None and self._process.is_alive():
                self._cancel.set()
                self._orders.put(None)
                self._process.join(timeout=5)
                if self._process.is_alive():
                    self._process.terminate()
            self._process = None
