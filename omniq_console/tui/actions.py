"""Operator actions run from the console: confirmation first, then a worker, then a poll.

Every action here refuses when the console has no operator or is read-only. Each runs the
operator call in a worker (the UI never waits on storage), tells the operator what happened
in words (a conflict says to refresh and try again), and asks the source for a fresh poll so
the screen shows the result.

Actions run on the console's own event loop (Textual's async workers), so the operator's
backend must be opened on that loop; the monitor reads through a backend of its own, on its
own thread's loop (``monitor/thread.py``). Each HTTP session stays on the loop that made it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rich.text import Text
from textual.app import App
from textual.notifications import SeverityLevel

from ..models import TaskStatus
from ..monitor.snapshot import TaskRow
from .fmt import count, plural
from .operations import ConsoleOperator, StateChanged, describe_bulk, describe_error
from .screens.confirm import ConfirmScreen
from .source import SnapshotSource
from .text import literal

PREVIEW_IDS = 5
"""How many of the ids a bulk confirmation lists."""


def describe_task(task_id: str, row: TaskRow | None) -> Text:
    """``task 0193… (send_email in queue emails, failed)``, every part literal."""
    text = Text("task ", end="")
    text.append_text(literal(task_id, "bold"))
    if row is not None:
        text.append(" (")
        text.append_text(literal(row.func))
        text.append(" in queue ")
        text.append_text(literal(row.queue_name))
        text.append(", ")
        text.append_text(literal(row.status))
        text.append(")")
    return text


class ActionRunner:
    """The console's operator actions, bound to one app, source and operator."""

    def __init__(
        self,
        app: App[Any],
        source: SnapshotSource,
        operator: ConsoleOperator | None,
        *,
        read_only: bool,
    ) -> None:
        self._app = app
        self._source = source
        self._operator = operator
        self.read_only = read_only

    def connect(self, operator: ConsoleOperator) -> None:
        """Act through ``operator`` from now on (given after the first frame: the CLI loads
        the backend it writes through once the dashboard is drawn)."""
        self._operator = operator

    @property
    def enabled(self) -> bool:
        """True when actions are offered: there is an operator and the console is not read-only."""
        return self._operator is not None and not self.read_only

    def _operator_or_refuse(self) -> ConsoleOperator | None:
        if not self.enabled or self._operator is None:
            why = "read-only" if self.read_only else "not connected to an operator"
            self._app.notify(f"No actions: this console is {why}.", severity="warning")
            return None
        return self._operator

    def _run(
        self,
        label: str,
        call: Callable[[], Awaitable[Any]],
        success: Callable[[Any], tuple[str, bool]],
        after: Callable[[], object] | None = None,
        on_changed: Callable[[StateChanged], None] | None = None,
    ) -> None:
        self._app.run_worker(
            self._perform(label, call, success, after, on_changed),
            group="actions",
            description=label,
            exit_on_error=False,
        )

    async def _perform(
        self,
        label: str,
        call: Callable[[], Awaitable[Any]],
        success: Callable[[Any], tuple[str, bool]],
        after: Callable[[], object] | None,
        on_changed: Callable[[StateChanged], None] | None = None,
    ) -> None:
        try:
            changed, told = await self._outcome(label, call, success)
            message, title, severity, timeout = told
            self._app.notify(message, title=title, severity=severity, markup=False, timeout=timeout)
            if changed is not None and on_changed is not None and changed.allowed:
                on_changed(changed)
        finally:
            self._source.request_poll()
            if after is not None:
                after()

    @staticmethod
    async def _outcome(
        label: str,
        call: Callable[[], Awaitable[Any]],
        success: Callable[[Any], tuple[str, bool]],
    ) -> tuple[StateChanged | None, tuple[str, str, SeverityLevel, float]]:
        """What ``call`` did, as a notification: message, title, severity, seconds shown."""
        try:
            result = await call()
        except StateChanged as changed:
            return changed, (
                describe_error(label, changed),
                "Changed since you saw it",
                "warning",
                12,
            )
        except Exception as error:  # every failure is told to the operator, none crashes the UI
            return None, (describe_error(label, error), "Not done", "error", 12)
        message, complete = success(result)
        if complete:
            return None, (message, "Done", "information", 8)
        return None, (message, "Partly done", "warning", 12)

    def _confirm(
        self, title: str, question: Text, on_yes: Callable[[], None], detail: Text | None = None
    ) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                on_yes()

        self._app.push_screen(
            ConfirmScreen(title, question, detail=detail, confirm_label=title), answered
        )

    # Tasks. ``seen`` is the row the operator acted on: its status binds the action, so a
    # task that moved on since (a worker finished it, another operator retried it) is refused.

    def task_action(
        self,
        action: str,
        task_id: str,
        seen: TaskRow | None = None,
        *,
        status: str | None = None,
        after: Callable[[], object] | None = None,
    ) -> None:
        """``retry`` (put a finished task back in its queue), ``cancel`` (a pending or
        running task) or ``delete`` (with its queue entry and result) one task; cancel and
        delete ask first.

        ``status`` (else ``seen``'s) is the status the operator saw: a task that moved on is
        offered the action its new state allows. ``after`` runs once the action is over.
        """
        if (op := self._operator_or_refuse()) is None:
            return
        expected = _expected(seen, status)
        verb = action.capitalize()

        def run() -> None:
            self._run(
                f"{verb} task {task_id}",
                lambda: _send(op, action, task_id, expected),
                lambda outcome: _task_outcome(action, task_id, outcome),
                after,
                lambda changed: self._offer_after_change(changed, action, after),
            )

        if action == "retry":
            run()
            return
        question = _task_question(verb, task_id, seen)
        self._confirm(f"{verb} task", question, run, _task_warning(action, expected))

    def retry_failed(self, ids: Sequence[str], what: str) -> None:
        """Retry exactly ``ids`` (failed tasks the operator saw), after a confirmation naming them.

        ``what`` says which tasks these are (``of ValueError in queue emails``). The ids are
        frozen now: what the operator confirms is what is sent, with the status seen
        (failed), so the operator skips any task whose status changed in between.
        """
        if (op := self._operator_or_refuse()) is None:
            return
        self._bulk(
            "Retry",
            ids,
            what,
            lambda chosen: op.retry_tasks(chosen, expected_status=TaskStatus.FAILED.value),
            "Only these tasks are retried; any that is no longer failed is skipped.",
            kind="failed",
        )

    def _offer_after_change(
        self, changed: StateChanged, tried: str, after: Callable[[], object] | None
    ) -> None:
        """The task moved on: say what it is now and offer the action for its new state
        (the one tried when it still applies), bound to the status just read."""
        if (op := self._operator_or_refuse()) is None:
            return
        action = tried if tried in changed.allowed else changed.allowed[0]
        task_id, now = changed.task_id, changed.now_status
        verb = action.capitalize()
        question = Text(str(changed), style="bold", end="")
        question.append(f".\n{verb} it now, as it is ({now})?", style="bold")
        self._confirm(
            f"{verb} task",
            question,
            lambda: self._run(
                f"{verb} task {task_id}",
                lambda: _send(op, action, task_id, now),
                lambda _: (f"Task {task_id}: {action} done.", True),
                after,
            ),
        )

    def _bulk(
        self,
        verb: str,
        ids: Sequence[str],
        what: str,
        call: Callable[[tuple[str, ...]], Awaitable[Any]],
        note: str,
        *,
        kind: str = "",
    ) -> None:
        """Confirm ``verb`` of exactly ``ids`` (listed, counted; ``kind`` says which, as in
        "failed"), then send exactly those."""
        chosen = tuple(ids)
        noun = f"{kind} task".strip()
        if not chosen:
            self._app.notify(f"No {noun} to {verb.lower()} here.", severity="warning")
            return
        label = f"{verb} {plural(len(chosen), noun)}"
        question = Text(label, style="bold", end="")
        if what:
            question.append(" ")
            question.append_text(literal(what, "bold"))
        question.append("?", style="bold")
        detail = Text(end="")
        for task_id in chosen[:PREVIEW_IDS]:
            detail.append("  ")
            detail.append_text(literal(task_id))
            detail.append("\n")
        if len(chosen) > PREVIEW_IDS:
            detail.append(f"  … and {count(len(chosen) - PREVIEW_IDS)} more\n", style="dim")
        detail.append(note, style="dim")
        self._confirm(
            f"{verb} {noun}s",
            question,
            lambda: self._run(
                label, lambda: call(chosen), lambda outcome: describe_bulk(label, outcome)
            ),
            detail,
        )

    def cancel_tasks(self, ids: Sequence[str], what: str) -> None:
        """Cancel exactly ``ids`` (pending or running tasks counted), after confirmation."""
        if (op := self._operator_or_refuse()) is None:
            return
        self._bulk(
            "Cancel",
            ids,
            what,
            lambda chosen: op.cancel_tasks(chosen),
            "Only these tasks are cancelled; any that finished meanwhile is skipped.",
        )

    def delete_tasks(self, ids: Sequence[str], what: str) -> None:
        """Delete exactly ``ids`` with their entries and results, after confirmation."""
        if (op := self._operator_or_refuse()) is None:
            return
        self._bulk(
            "Delete",
            ids,
            what,
            lambda chosen: op.delete_tasks(chosen),
            "Only these tasks are deleted, for good; their events stay.",
        )

    # Queues.

    def pause_queue(self, queue: str) -> None:
        """Stop every worker claiming from ``queue`` (within one claim cycle)."""
        if (op := self._operator_or_refuse()) is None:
            return
        self._run(
            f"Pause queue {queue}",
            lambda: op.pause_queue(queue),
            lambda _: (f"Queue {queue} is paused: workers stop claiming from it.", True),
        )

    def resume_queue(self, queue: str) -> None:
        """Let workers claim from ``queue`` again."""
        if (op := self._operator_or_refuse()) is None:
            return
        self._run(
            f"Resume queue {queue}",
            lambda: op.resume_queue(queue),
            lambda _: (f"Queue {queue} is resumed.", True),
        )

    def purge_queue(self, queue: str, ids: Sequence[str]) -> None:
        """Delete exactly the pending tasks ``ids`` of ``queue`` counted, after confirmation."""
        if (op := self._operator_or_refuse()) is None:
            return
        self._bulk(
            "Purge",
            ids,
            f"pending in queue {queue}",
            lambda chosen: op.purge_queue(queue, chosen),
            "Only these pending tasks are deleted; any claimed meanwhile is skipped.",
        )

    # Schedules. ``generation`` is the one the operator saw: a schedule changed since is refused.

    def pause_schedule(self, schedule_id: str, generation: int | None = None) -> None:
        """Stop a schedule firing."""
        if (op := self._operator_or_refuse()) is None:
            return
        self._run(
            f"Pause schedule {schedule_id}",
            lambda: op.pause_schedule(schedule_id, generation=generation),
            lambda _: (f"Schedule {schedule_id} is paused.", True),
        )

    def resume_schedule(self, schedule_id: str, generation: int | None = None) -> None:
        """Make a paused schedule fire again (from now on, missed runs are not replayed)."""
        if (op := self._operator_or_refuse()) is None:
            return
        self._run(
            f"Resume schedule {schedule_id}",
            lambda: op.resume_schedule(schedule_id, generation=generation),
            lambda _: (f"Schedule {schedule_id} is active again.", True),
        )

    def trigger_schedule(self, schedule_id: str, *, paused: bool = False) -> None:
        """Enqueue one run of a schedule now; a paused schedule asks first."""
        if (op := self._operator_or_refuse()) is None:
            return

        def run() -> None:
            self._run(
                f"Run schedule {schedule_id} now",
                lambda: op.trigger_schedule(schedule_id),
                lambda task_id: (f"Schedule {schedule_id} enqueued task {task_id}.", True),
            )

        if not paused:
            run()
            return
        question = Text("Schedule ", style="bold", end="")
        question.append_text(literal(schedule_id, "bold"))
        question.append(" is paused. Run it once now anyway?", style="bold")
        detail = Text("It stays paused: only this one run is enqueued.", style="dim", end="")
        self._confirm("Run now", question, run, detail)


def _expected(seen: TaskRow | None, status: str | None) -> str | None:
    if status is not None:
        return status
    return seen.status if seen is not None else None


def _send(op: ConsoleOperator, action: str, task_id: str, expected: str | None) -> Awaitable[Any]:
    """The operator's call that does ``action`` to one task, bound to the status ``expected``."""
    calls = {"retry": op.retry_task, "cancel": op.cancel_task, "delete": op.delete_task}
    return calls[action](task_id, expected_status=expected)


def _task_outcome(action: str, task_id: str, outcome: object) -> tuple[str, bool]:
    """What ``action`` did to the task, in words, and whether it did all it was asked (a
    delete answers whether there was anything to delete)."""
    if action == "delete" and not outcome:
        return f"Task {task_id} was already gone.", False
    now = {"retry": "pending again", "cancel": "cancelled", "delete": "deleted"}[action]
    return f"Task {task_id} is {now}.", True


def _task_warning(action: str, expected: str | None) -> Text | None:
    """The dim line under a task action's confirmation: what the operator cannot take back."""
    if action == "delete":
        warning = "Its task object, queue entry and result are removed for good; its events stay."
    elif expected == TaskStatus.RUNNING.value:
        warning = "Its worker drops the outcome of the run under way."
    else:
        return None
    return Text(warning, style="dim", end="")


def _task_question(verb: str, task_id: str, seen: TaskRow | None) -> Text:
    """``Cancel <the task as the operator saw it>?``: the bold question of a confirmation."""
    question = Text(f"{verb} ", style="bold", end="")
    question.append_text(describe_task(task_id, seen))
    question.append("?", style="bold")
    return question
