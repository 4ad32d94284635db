"""The layered-runner's pytest plugin (loaded with ``-p _layered_runner_pytest``).

Written by the runner next to a run and put on PYTHONPATH; driven by environment variables:

- ``RUNNER_PYTEST_COLLECT=<file>``: after collection, write one JSON line per collected
  item (``id``, ``path``, ``line``) and a first line with the ``rootdir``.
- ``RUNNER_PYTEST_IDS=<file>``: keep only the items whose node id is listed (one per line).
- ``RUNNER_PYTEST_EVENTS=<file>``: append one JSON line when a test starts and one when it
  has finished (setup, call and teardown), flushed at once, so the runner can follow it;
  a finished test lists the child processes it started that are still running.
"""

import json
import os

import pytest

_COLLECT = os.environ.get("RUNNER_PYTEST_COLLECT")
_IDS = os.environ.get("RUNNER_PYTEST_IDS")
_EVENTS = os.environ.get("RUNNER_PYTEST_EVENTS")
_TEXT_MAX = 16384

_stream = None
_reports = {}
_children_before = {}
_PROC_TASKS = "/proc/self/task"
_TRACK_CHILDREN = bool(_EVENTS) and os.path.isdir(_PROC_TASKS)


def _children():
    """The pids of this process's children (Linux), to name a test that leaves one running."""
    found = set()
    try:
        for tid in os.listdir(_PROC_TASKS):
            with open("{}/{}/children".format(_PROC_TASKS, tid)) as f:
                found.update(int(p) for p in f.read().split())
    except OSError:
        pass
    return found


def _emit(record):
    global _stream
    if _stream is None:
        _stream = open(_EVENTS, "a", encoding="utf-8")
    _stream.write(json.dumps(record) + "\n")
    _stream.flush()


def _clip(text):
    if len(text) <= _TEXT_MAX:
        return text
    return "[...]\n" + text[-_TEXT_MAX:]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    if not _IDS:
        return
    with open(_IDS, encoding="utf-8") as f:
        wanted = {line.rstrip("\n") for line in f if line.strip()}
    keep = [i for i in items if i.nodeid in wanted]
    if len(keep) != len(items):
        dropped = [i for i in items if i.nodeid not in wanted]
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_collection_finish(session):
    if not _COLLECT:
        return
    with open(_COLLECT, "w", encoding="utf-8") as f:
        f.write(json.dumps({"rootdir": str(session.config.rootpath)}) + "\n")
        for item in session.items:
            path, line, _ = item.location
            f.write(
                json.dumps(
                    {
                        "id": item.nodeid,
                        "path": str(item.path),
                        "file": path,
                        "line": None if line is None else line + 1,
                    }
                )
                + "\n"
            )


def pytest_collectreport(report):
    if _EVENTS and report.failed:
        _emit({"e": "collect_error", "id": report.nodeid, "text": _clip(report.longreprtext)})


def pytest_runtest_logstart(nodeid, location):
    if _EVENTS:
        _reports[nodeid] = []
        if _TRACK_CHILDREN:
            _children_before[nodeid] = _children()
        _emit({"e": "start", "id": nodeid})


def pytest_runtest_logreport(report):
    if _EVENTS:
        _reports.setdefault(report.nodeid, []).append(report)


def _outcome(reports):
    """One outcome per test, as pytest's own summary counts it."""
    for r in reports:
        if r.failed:
            return ("failed" if r.when == "call" else "error"), r
    for r in reports:
        if r.skipped:
            return ("xfailed" if hasattr(r, "wasxfail") else "skipped"), r
    for r in reports:
        if r.when == "call" and hasattr(r, "wasxfail"):
            return "xpassed", r
    return "passed", None


def pytest_runtest_logfinish(nodeid, location):
    if not _EVENTS:
        return
    reports = _reports.pop(nodeid, [])
    outcome, culprit = _outcome(reports)
    record = {
        "e": "done",
        "id": nodeid,
        "outcome": outcome,
        "ms": round(sum(r.duration for r in reports) * 1000, 3),
    }
    if _TRACK_CHILDREN:
        spawned = _children() - _children_before.pop(nodeid, set())
        if spawned:
            record["spawned"] = sorted(spawned)
    if culprit is not None:
        if outcome in ("skipped", "xfailed"):
            if outcome == "xfailed":
                record["msg"] = culprit.wasxfail or "xfail"
            elif isinstance(culprit.longrepr, tuple):
                reason = str(culprit.longrepr[2])
                if reason.startswith("Skipped: "):
                    reason = reason[len("Skipped: "):]
                record["msg"] = reason
        else:
            text = culprit.longreprtext
            # The last report carries the captured output of every phase before it.
            sections = [
                "----- {} -----\n{}".format(name, content)
                for name, content in reports[-1].sections
                if content
            ]
            if sections:
                text = text + "\n" + "\n".join(sections)
            record["text"] = _clip(text)
            lines = [line for line in culprit.longreprtext.splitlines() if line.strip()]
            errors = [line[1:].strip() for line in lines if line.startswith("E ")]
            last = errors[0] if errors else (lines[-1].strip() if lines else "")
            record["msg"] = "{} in {}".format(outcome, culprit.when) + (
                ": " + last[:300] if last else ""
            )
    _emit(record)


def pytest_unconfigure(config):
    global _stream
    if _stream is not None:
        _stream.close()
        _stream = None
