"""Text from the bucket is shown as it is: never markup, never terminal control codes."""

from __future__ import annotations

from rich.text import Text
from tui_fixtures import (
    ANSI_ERROR,
    LIGHT,
    MARKUP_FUNC,
    TAKEN_AT,
    demo_snapshot,
    make_app,
    screen_text,
    search_tasks,
    settle,
    task_rows,
)

from omniq_console.models import ResultStatus, Task, TaskResult, TaskStatus
from omniq_console.monitor.snapshot import EventRow, TaskDetail
from omniq_console.tui import StaticSource
from omniq_console.tui.text import escape_controls, literal

SIZE = (160, 48)
HOSTILE_TASK = next(r for r in task_rows() if r.func == MARKUP_FUNC)


def test_literal_keeps_markup_as_text() -> None:
    text = literal("[bold red]x[/] [@click=app.quit]quit[/]")
    assert text.plain == "[bold red]x[/] [@click=app.quit]quit[/]"
    assert text.spans == []


def test_literal_shows_control_characters_as_escapes() -> None:
    assert literal("Boom\x1b[31m").plain == "Boom\\x1b[31m"
    assert literal("a\u202eb").plain == "a\\u202eb"  # a right-to-left override
    assert literal("line1\nline2").plain == "line1\\x0aline2"
    assert literal("line1\n\tline2", multiline=True).plain == "line1\n\tline2"
    assert escape_controls("plain text") == "plain text"
    assert literal(None, empty="-").plain == "-"


async def test_hostile_task_renders_literally_in_the_tasks_table() -> None:
    app, _, _ = make_app(views=("tasks",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await search_tasks(pilot, HOSTILE_TASK.id)
        text = screen_text(app)
        assert MARKUP_FUNC in text
        assert "Boom\\x1b[31m" in text
        assert "\x1b" not in text
        cells = app.screen.query_one("#tasks-table").render_cell_values(HOSTILE_TASK.id)
        assert cells[4] == MARKUP_FUNC and cells[2] == "Boom\\x1b[31m"


async def test_hostile_error_type_renders_literally_in_results() -> None:
    app, _, _ = make_app(views=("results",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        groups = app.screen.query_one("#results-groups")
        assert groups.render_cell_values(ANSI_ERROR)[0] == "Boom\\x1b[31m"
        assert "Boom\\x1b[31m" in screen_text(app)


async def test_hostile_detail_and_events_render_literally() -> None:
    task = Task(
        id=HOSTILE_TASK.id,
        func=MARKUP_FUNC,
        queue_name="default",
        status=TaskStatus.FAILED,
        args=("[link=http://evil]click[/link]",),
        created_at=TAKEN_AT,
    )
    result = TaskResult(
        task_id=HOSTILE_TASK.id,
        status=ResultStatus.ERROR,
        error_type=ANSI_ERROR,
        error="[red]boom[/red]\x1b[2J",
        traceback="Traceback (most recent call last):\n  [blink]x[/blink]\x07",
    )
    event = EventRow(
        id="e-1",
        timestamp=TAKEN_AT,
        event_type="failed",
        task_id=HOSTILE_TASK.id,
        message="[b]msg[/b]",
        error_type=ANSI_ERROR,
        error_message="[i]why[/i]",
    )
    detail = TaskDetail(task_id=HOSTILE_TASK.id, task=task, result=result, events=(event,))
    source = StaticSource(demo_snapshot(), details={HOSTILE_TASK.id: detail})
    app, _, _ = make_app(source, views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_task(HOSTILE_TASK.id)
        await settle(pilot)
        text = screen_text(app)
        for shown in (
            f"Task {HOSTILE_TASK.id}  {MARKUP_FUNC} in queue default",
            "('[link=http://evil]click[/link]',)",
            "[red]boom[/red]\\x1b[2J",
            "  [blink]x[/blink]\\x07",
            "Boom\\x1b[31m: [i]why[/i]",
        ):
            assert shown in text
        assert "\x1b" not in text and "\x07" not in text


async def test_hostile_event_message_renders_literally_in_the_tail() -> None:
    app, _, _ = make_app(views=("events",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "retry by [bold]alice[/bold]" in text
        assert "ValueError: bad address [b]x[/b]" in text


def test_status_and_confirmations_never_parse_bucket_text() -> None:
    from omniq_console.tui.actions import describe_task

    question = describe_task("t[1]", HOSTILE_TASK)
    assert isinstance(question, Text)
    assert question.plain == f"task t[1] ({MARKUP_FUNC} in queue default, failed)"
