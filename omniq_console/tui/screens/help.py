"""The help screen: every key, by where it works, from the bindings themselves."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen
from textual.widgets import Static

INTRO = (
    "omniq-console shows what the Monitor reads from the bucket; it never writes unless you "
    "act. Actions ask first when they delete, cancel or touch many tasks, and tell you when "
    "a task changed since you saw it. The command palette (ctrl+p) lists views and actions."
)

HelpSection = tuple[str, Sequence[Binding]]


def offered(bindings: Iterable[BindingType], node: DOMNode | None) -> list[Binding]:
    """The bindings ``node`` offers now (its ``check_action`` says yes), all without a node.

    The help screen lists what the keys would do here and now: an action the selection
    does not allow (cancel on a failed task) or a read-only console forbids is left out.
    """
    shown: list[Binding] = []
    for binding in bindings:
        if not isinstance(binding, Binding):
            continue
        action = binding.action.split("(", 1)[0]
        if node is None or node.check_action(action, ()):
            shown.append(binding)
    return shown


def help_text(sections: Sequence[HelpSection], key_display: dict[str, str]) -> Text:
    """One block per section: key, then what it does."""
    text = Text(INTRO + "\n", style="italic", end="")
    for title, bindings in sections:
        shown = [b for b in bindings if b.description]
        if not shown:
            continue
        text.append(f"\n{title}\n", style="bold underline")
        for binding in shown:
            keys = binding.key_display or " / ".join(
                key_display.get(k.strip(), k.strip()) for k in binding.key.split(",")
            )
            text.append(f"  {keys:<16}", style="bold cyan")
            text.append(f"{binding.description}\n")
    return text


class HelpScreen(ModalScreen[None]):
    """Keys of the main screen, each view and the task detail."""

    # The stylesheet sizes the dialog for a wide terminal; at 80 columns it must still fit.
    DEFAULT_CSS = """
    #help-dialog { max-width: 100%; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "app.pop_screen", "Close help"),
    ]

    def __init__(self, sections: Sequence[HelpSection]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        display = {
            "question_mark": "?",
            "slash": "/",
            "left_square_bracket": "[",
            "right_square_bracket": "]",
            "plus": "+",
            "minus": "-",
            "equals_sign": "=",
            "space": "space",
            "escape": "esc",
            "enter": "enter",
        }
        with VerticalScroll(id="help-dialog") as dialog:
            dialog.border_title = "Help"
            dialog.border_subtitle = "esc to close"
            yield Static(help_text(self.sections, display), id="help-text")
