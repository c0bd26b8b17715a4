"""The notebook in a real Jupyter kernel (nbclient + ipykernel) against the emulator.

A kernel runs cells the way JupyterLab would: the dashboard's Monitor lives on the kernel's
event loop between cells, widgets are driven through their real kernel-side objects
(``Button.click()`` fires the same handlers a browser click does), and the widget state the
front-end would receive is read back from nbclient. After the kernel shuts down, no process
it started may be left (the ``console()`` server, the demo's emulator and fleet).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

from omniq_console.backend.gcs import GCSBackend
from omniq_console.models import EventType

pytestmark = pytest.mark.timeout(240)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "incident.ipynb"
INTERVAL = 1.0
"""The dashboard's poll interval in the kernel: a change must show by the second poll after it
(the first may have been under way)."""


def new_cell(code: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(code)  # type: ignore[no-untyped-call,no-any-return]


class Kernel:
    """One kernel and the notebook whose cells it ran (outputs kept, as Jupyter saves them)."""

    def __init__(self, client: NotebookClient) -> None:
        self.client = client
        self.nb = client.nb

    async def run(self, code: str) -> str:
        """Execute ``code`` as a new cell; its stdout (raises with the traceback on error)."""
        cell = new_cell(code)
        self.nb.cells.append(cell)
        return await self.rerun(len(self.nb.cells) - 1)

    async def rerun(self, index: int) -> str:
        """Execute cell ``index`` again, as the user does with shift-enter."""
        cell = self.nb.cells[index]
        await self.client.async_execute_cell(cell, index)
        return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")

    async def json(self, code: str) -> Any:
        """Run ``code``, whose last printed line is JSON, and decode that line."""
        return json.loads((await self.run(code)).strip().splitlines()[-1])

    async def run_with_cell_id(self, code: str, cell_id: str) -> None:
        """Execute ``code`` as JupyterLab does, with ``cellId`` in the request's metadata."""
        kc: Any = self.client.kc  # the async client: get_shell_msg is awaitable
        content = {"code": code, "silent": False, "store_history": True,
                   "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}  # fmt: skip
        msg = kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
        kc.shell_channel.send(msg)
        while True:
            reply = await kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                break
        assert reply["content"]["status"] == "ok", reply["content"]

    def widget_values(self) -> list[str]:
        """The ``value`` of every widget model, as the front-end would receive them."""
        self.client.set_widgets_metadata()
        state = self.nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]
        return [str(m["state"].get("value", "")) for m in state["state"].values()]


@asynccontextmanager
async def kernel(env: dict[str, str]) -> AsyncIterator[Kernel]:
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    # "graceful": a shutdown request, as Jupyter sends when a notebook is closed.
    client = NotebookClient(nb, timeout=120, kernel_name="python3", shutdown_kernel="graceful")
    async with client.async_setup_kernel(env=env):
        assert client.km is not None
        # The kernel's exit hooks (stopping dashboards) must run: on a loaded machine they may
        # take longer than the 5 s jupyter_client waits by default before killing the kernel.
        client.km.shutdown_wait_time = 60.0
        yield Kernel(client)


def descendants(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def assert_all_gone(processes: list[psutil.Process]) -> None:
    # Generous: a demo fleet told to stop takes up to FLEET_STOP_S plus its retry deadline
    # (15 s) when the kernel is killed before its atexit hook has stopped it; a loaded machine
    # adds to that. Whatever leaked would still be running after any limit.
    _, alive = psutil.wait_procs(processes, timeout=60)
    assert not alive, f"left running after the kernel shut down: {[p.cmdline() for p in alive]}"


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


SEED = """
import asyncio, atexit, json, os, time
from omniq_console import OmniQ
from omniq_console.notebook import console, dashboard, session
from omniq_console.notebook.widget import MONITOR_TASK_PREFIX
from omniq_console.runtime import Operator
from omniq_console.settings import make_backend

BUCKET, INTERVAL = os.environ["OMNIQ_BUCKET"], float(os.environ["TEST_INTERVAL"])
seed = make_backend(bucket_name=BUCKET)  # another client of the bucket than the dashboard
await seed.aopen()
omniq = OmniQ(seed)

@omniq.task(name="payments.charge", queue="payments", max_retries=0)
def charge(amount):
    raise ValueError(f"card declined: {amount}")

@omniq.task(name="emails.send", queue="emails")
def send(to):
    return "sent"

async def fail(n):
    ids = [await omniq.enqueue_async(charge, i) for i in range(n)]
    worker = omniq.worker(["payments"], poll_interval=0.1)
    running = asyncio.ensure_future(worker.run())
    for task_id in ids:
        await omniq.get_result_async(task_id, timeout=60)
    worker.stop()
    await running

def monitors():
    return sum(1 for t in asyncio.all_tasks()
               if t.get_name().startswith(MONITOR_TASK_PREFIX) and not t.done())

def queue(s, name):
    return next((q for q in s.queues if q.name == name), None)

await fail(2)
for i in range(3):
    await omniq.enqueue_async(send, f"user{i}@example.com")
await omniq.schedule_async(send, "ops@example.com", interval=3600, schedule_id="nightly")
def report_exit():
    # Registered before any dashboard: runs after the notebook package's own exit hook.
    with open(os.environ["TEST_EXIT_REPORT"], "w") as report:
        json.dump([{"closed": b.closed, "released": not b.backend.is_open} for b in boards], report)

boards = []
atexit.register(report_exit)
print(os.getpid())
"""

DASHBOARD = 'board = dashboard(BUCKET, interval=INTERVAL, actor="analyst@notebook")'


async def test_dashboard_in_a_real_kernel(bucket: str, backend: GCSBackend, tmp_path: Path) -> None:
    exit_report = tmp_path / "exit.json"
    env = {
        **os.environ,
        "OMNIQ_BUCKET": bucket,
        "TEST_INTERVAL": str(INTERVAL),
        "TEST_EXIT_REPORT": str(exit_report),
    }
    async with kernel(env) as k:
        kernel_pid = int((await k.run(SEED)).split()[-1])
        board_cell = len(k.nb.cells)
        await k.run(DASHBOARD)
        view = k.nb.cells[board_cell].outputs[0]["data"]
        assert "application/vnd.jupyter.widget-view+json" in view

        # The seeded bucket, as the panel and its state show it.
        first = await k.json(
            "await board.wait_for(lambda s: queue(s, 'emails') and queue(s, 'payments'),"
            " within=30, what='the seeded queues')\n"
            "first_board = board\n"
            "await board.refresh()  # nbclient records widget updates sent while a cell runs\n"
            "print(json.dumps(board.state()))"
        )
        assert first["queues"]["emails"]["pending"] == 3
        assert first["tasks"]["failed"] == 2
        assert first["failure_groups"] == [
            {"error_type": "ValueError", "queue": "payments", "count": 2}
        ]
        assert first["schedules"] == {"nightly": "active"} and first["actions"] is True
        panel = next(v for v in k.widget_values() if "omniq-dashboard" in v)
        for text in (f"gs://{bucket}/omniq/", "LIVE", "emails", "payments", "ValueError",
                     "nightly", ">3</td>", ">2</b>"):  # fmt: skip
            assert text in panel, text

        # Another client changes the bucket; the dashboard shows it without its cell re-run.
        await k.run(
            "for i in range(2):\n"
            "    await omniq.enqueue_async(send, f'late{i}@example.com')\n"
            "await fail(1)\n"
            "await Operator(seed, 'oncall@elsewhere').pause_schedule('nightly')\n"
            "await Operator(seed, 'oncall@elsewhere').pause_queue('emails')\n"
            "polls_before = board.snapshots"
        )
        seen = await k.json(
            "await board.wait_for(lambda s: queue(s, 'emails').pending == 5"
            " and s.tasks['failed'] == 3 and s.schedules[0].status == 'paused'"
            " and queue(s, 'emails').paused,"
            " within=60, what='the enqueue, the failure and the pauses')\n"
            "polls = board.snapshots - polls_before\n"
            "await board.refresh()\n"
            "print(json.dumps({'polls': polls, **board.state()}))"
        )
        # Counted in the dashboard's own timed polls, not in the seconds a loaded machine takes.
        assert 1 <= seen["polls"] <= 2, seen["polls"]
        assert seen["failure_groups"][0]["count"] == 3
        panel = next(v for v in k.widget_values() if "omniq-dashboard" in v)
        assert seen["queues"]["emails"]["paused"] is True
        assert ">5</td>" in panel and "paused" in panel and "PAUSED" in panel

        # The actions, through the widget's own buttons.
        resumed = await k.json(
            "board.schedule_select.value = 'nightly'\n"
            "offered = [board.pause_button.disabled, board.resume_button.disabled]\n"
            "board.resume_button.click()\n"
            "await board.wait_for(lambda s: s.schedules[0].status == 'active', within=20,"
            " what='the resumed schedule')\n"
            "print(json.dumps({'offered': offered, 'said': board.last_action}))"
        )
        assert resumed == {"offered": [True, False], "said": "Schedule nightly is active again."}
        unpaused = await k.json(
            "board.queue_select.value = 'emails'\n"
            "offered = [board.pause_queue_button.disabled, board.resume_queue_button.disabled]\n"
            "board.resume_queue_button.click()\n"
            "await board.wait_for(lambda s: not queue(s, 'emails').paused, within=20,"
            " what='the resumed queue')\n"
            "print(json.dumps({'offered': offered, 'said': board.last_action}))"
        )
        assert unpaused == {"offered": [True, False], "said": "Queue emails is active again."}
        asked = await k.json(
            "board.group_select.value = board.groups[0].key\n"
            "board.retry_button.click()\n"
            "print(json.dumps({'question': board.confirm_text.value,"
            " 'yes': board.confirm_yes.description, 'shown': board.confirm_box.layout.display}))"
        )
        assert "Retry 3 failed tasks of ValueError in queue payments?" in asked["question"]
        assert asked["yes"] == "Yes, retry 3" and asked["shown"] == "flex"
        retried = await k.json(
            "board.confirm_yes.click()\n"
            "await board.wait_for(lambda s: s.tasks['failed'] == 0 and not board.groups,"
            " within=20, what='the retried group')\n"
            "print(json.dumps(board.state()))"
        )
        payments = retried["queues"]["payments"]
        assert payments["pending"] + payments["delayed"] == 3  # back in the queue
        assert retried["last_action"].endswith(
            "Retry 3 failed tasks of ValueError in queue payments: 3 of 3 done"
        )

        # Executing the dashboard's cell again leaves one Monitor, the new one.
        await k.rerun(board_cell)
        again = await k.json(
            "await first_board.wait_closed()\n"
            "await board.wait_for(within=20, what='the new dashboard')\n"
            "print(json.dumps({'monitors': monitors(), 'old_closed': first_board.closed,"
            " 'replaced': first_board is not board,"
            " 'dashboards': sum(k.startswith('dashboard:') for k in session.live())}))"
        )
        assert again == {"monitors": 1, "old_closed": True, "replaced": True, "dashboards": 1}

        # JupyterLab and VS Code send a cell id: an edited cell still replaces its dashboard.
        await k.run_with_cell_id("lab = dashboard(BUCKET, interval=5)", "cell-7f3a")
        await k.run("first_lab = lab")
        await k.run_with_cell_id("lab = dashboard(BUCKET, interval=5)  # edited", "cell-7f3a")
        # The replaced dashboard closes asynchronously: count once it has.
        assert await k.json(
            "await first_lab.wait_closed()\n"
            "print(json.dumps({'monitors': monitors(), 'replaced': first_lab is not lab}))"
        ) == {"monitors": 2, "replaced": True}

        # Read-only: a panel and no action.
        read_only = await k.json(
            "ro = dashboard(BUCKET, interval=INTERVAL, read_only=True)\n"
            "await ro.wait_for(within=20, what='the read-only panel')\n"
            "print(json.dumps({'actions': ro.state()['actions'],"
            " 'children': len(ro.widget.children), 'monitors': monitors()}))"
        )
        assert read_only == {"actions": False, "children": 1, "monitors": 3}

        # The full console in a cell, with its token in the iframe's URL.
        served = await k.json(
            "full = console(BUCKET, height=400)\n"
            "print(json.dumps({'pid': full.pid, 'url': full.url}))"
        )
        iframe = k.nb.cells[-1].outputs[0]["data"]["text/html"]
        assert served["url"] in iframe.replace("&amp;", "&")
        assert status_of(served["url"]) == 200
        assert status_of(served["url"].split("?")[0]) == 403
        processes = descendants(kernel_pid)
        assert served["pid"] in {p.pid for p in processes}
        await k.run("boards += [first_board, board, lab, ro]")
    assert_all_gone(processes)
    # The kernel's exit stopped every live dashboard and let its Monitor close the backend.
    assert json.loads(exit_report.read_text()) == [{"closed": True, "released": True}] * 4

    audits = await backend.async_event_storage.get_events(event_type=EventType.OPERATOR_ACTION)
    actions = {(a.actor, a.details["action"]) for a in audits}
    assert ("analyst@notebook", "resume_schedule") in actions
    assert ("analyst@notebook", "retry_task") in actions
    assert ("analyst@notebook", "resume_queue") in actions


async def test_example_notebook_runs_in_a_real_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    # No bucket given: the notebook starts the demo (its own emulator and fleet).
    for name in ("OMNIQ_BUCKET", "OMNIQ_PREFIX", "STORAGE_EMULATOR_HOST", "OMNIQ_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    nb = nbformat.read(EXAMPLE, as_version=4)  # type: ignore[no-untyped-call]
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", shutdown_kernel="graceful",
        resources={"metadata": {"path": str(EXAMPLE.parent)}},
    )  # fmt: skip
    async with client.async_setup_kernel():
        for index, cell in enumerate(nb.cells):
            await client.async_execute_cell(cell, index)
        probe = new_cell("import os; print(os.getpid())")
        nb.cells.append(probe)
        await client.async_execute_cell(probe, len(nb.cells) - 1)
        processes = descendants(int(probe.outputs[0]["text"]))
        client.set_widgets_metadata()
    assert_all_gone(processes)
    assert len(processes) >= 4  # kernel, emulator, fleet, console server (and more)

    text = "\n".join(
        o.get("text", "") + json.dumps(o.get("data", {}))
        for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )  # fmt: skip
    assert "watching gs://omniq-demo/omniq/" in text
    assert "failed tasks of" in text and "retried " in text and "<iframe" in text
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    panels = [m["state"]["value"] for m in state.values() if "omniq-dashboard" in str(m["state"])]
    assert panels and "gs://omniq-demo/omniq/" in panels[0]
