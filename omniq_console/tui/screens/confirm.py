"""A yes/no question before anything destructive happens."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """Asks ``question``; dismisses with True only on an explicit yes.

    The question names exactly what will change (how many, of what, where); ``detail`` can
    list what is affected. Escape, ``n`` and the No button all answer no.
    """

    # The stylesheet sizes the dialog for a wide terminal; at 80 columns it must still fit.
    DEFAULT_CSS = """
    #confirm-dialog { max-width: 100%; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
        Binding("left", "app.focus_previous", "Previous button", show=False),
        Binding("right", "app.focus_next", "Next button", show=False),
    ]

    def __init__(
        self,
        title: str,
        question: Text,
        *,
        detail: Text | None = None,
        confirm_label: str = "Yes",
    ) -> None:
        super().__init__()
        self.title_text = title
        self.question = question
        self.detail = detail
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog") as dialog:
            dialog.border_title = self.title_text
            yield Static(self.question, id="confirm-question")
            if self.detail is not None:
                yield Static(self.detail, id="confirm-detail")
            with Horizontal(id="confirm-buttons"):
                yield Button(f"{self.confirm_label} (y)", variant="error", id="confirm-yes")
                yield Button("No (n)", variant="primary", id="confirm-no")

    def on_mount(self) -> None:
        # The safe answer has the focus: enter on a surprise dialog changes nothing.
        self.query_one("#confirm-no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")
