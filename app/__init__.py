"""The Streamlit app (`streamlit run app/main.py`): helpers that wire widgets to the engine; no tensor math.

main.py             navigation and the shared sidebar
jobs.py             the job runner: one job at a time per server, a queue, typed views of each job (JobView)
messages.py         what the server and the worker process say to each other (requests, events, outcomes)
worker.py           the worker process that runs the jobs and keeps the dense models loaded (torch-free side)
execution.py        a job's steps (load the model, name the run, execute_run): the worker process only imports it
progress.py         the polled progress fragments;  overview.py: the Prune page's comparison
ui.py               cached resources, the run selection, captions that say what a number measured
forms.py            the Prune and Shrink forms' values -> a RunRequest, uploads, a GenerateRequest;  runs_table.py
submit.py           queueing the form's run, the Compare, the Explain page's small sweep, a Shrink run or comparison,
                    a zero-shot scoring and a generation
export_controls.py  the download controls under an exportable figure;  bundle_controls.py: Export all
repairs.py          the Repair page's choices -> a RepairRequest
headless.py         serve the app in a child process (browser tests, the app benchmark)
ast_lock.py         syntax-tree conversions take turns on CPython 3.11 (a race between threads, see the README)

The server never imports torch (a test checks it): the job's tensor work runs in the worker process.
"""
