"""What keeps the console's loop free with 100,000 tasks: each fix beside the behaviour it
must not change (the keys, pages and ids shown stay the same)."""

from __future__ import annotations

from textual.widget import Widget
from tui_fixtures import LIGHT, make_app, settle

from omniq_console.tui import ConsoleApp

SIZE = (160, 48)


def footer_keys(app: ConsoleApp) -> list[Widget]:
    return list(app.screen.query("FooterKey"))


def footer_text(app: ConsoleApp) -> str:
    return " ".join(str(key.render()) for key in footer_keys(app))


async def test_the_footer_is_composed_again_only_when_its_keys_change() -> None:
    app, _, _ = make_app(views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        keys, text = footer_keys(app), footer_text(app)
        assert "Pause" in text
        for _ in range(3):
            app.screen.refresh_bindings()  # what a page shown or a cursor move asks
            await settle(pilot)
        # The same key widgets: nothing was unmounted and mounted again.
        assert footer_keys(app) == keys
        assert footer_text(app) == text
        await pilot.press("P")
        await settle(pilot)
        assert "Resume" in footer_text(app) and "Pause" not in footer_text(app)
        assert footer_keys(app) != keys
