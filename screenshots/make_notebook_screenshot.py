"""Write screenshots/notebook.png: the live dashboard in the executed example notebook.

Run from the repository root (needs the ``notebook`` and ``serve`` extras, nbconvert, npm and
Debian's chromium)::

    python screenshots/make_notebook_screenshot.py

It executes ``examples/incident.ipynb`` in a real kernel (its demo branch: a local emulator and
the seed-42 fleet, stopped with the kernel) up to the dashboard, waits until the fleet has
failed tasks of two kinds, converts the dashboard's executed cell to HTML with the widget state
nbclient recorded, and loads that page in headless Chromium, which draws the
widgets with Jupyter's own HTML widget manager (``@jupyter-widgets/html-manager``, fetched once
with ``npm pack`` into ``~/.cache/omniq-console``; the page loads nothing from the network).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "incident.ipynb"
CACHE = Path.home() / ".cache" / "omniq-console" / "js"
PACKAGES = {
    # The widget manager matching ipywidgets 8 (widget protocol 2), and the loader it needs.
    "html-manager": ("@jupyter-widgets/html-manager@1.0.15", "dist/embed-amd.js"),
    "requirejs": ("requirejs@2.3.8", "require.js"),
}
SETTLE = """
try:
    await board.wait_for(lambda s: len(board.groups) >= 2, within=90, what="two failure groups")
except TimeoutError:
    pass  # one group is a picture too
await board.refresh()  # re-sends the panel from this cell, which nbclient records
"""
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-background-networking",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--virtual-time-budget=20000",
    "--allow-file-access-from-files",
]


def fetch_js(name: str) -> Path:
    """The JavaScript file of ``PACKAGES[name]``, from the cache or ``npm pack``."""
    spec, inner = PACKAGES[name]
    target = CACHE / name / inner
    if target.exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        sys.exit(f"npm is needed once to fetch {spec} (or put {inner} in {target.parent})")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, "pack", "--silent", spec], cwd=tmp, check=True, capture_output=True)
        (archive,) = Path(tmp).glob("*.tgz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(tmp, "package", inner).parent, target.parent, dirs_exist_ok=True)
    return target


def execute(notebook: Path) -> nbformat.NotebookNode:
    """Run the notebook in a fresh kernel on the demo (no bucket given) up to its drill-down,
    wait until the fleet has failed tasks of two kinds, and keep only the dashboard's cell."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("OMNIQ_BUCKET", "STORAGE_EMULATOR_HOST")
    }
    nb: nbformat.NotebookNode = nbformat.read(notebook, as_version=4)  # type: ignore[no-untyped-call]
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        shutdown_kernel="graceful",
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    board = next(i for i, c in enumerate(nb.cells) if c.source.startswith("board = dashboard("))
    drill = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Drill"))
    settle = nbformat.v4.new_code_cell(SETTLE)  # type: ignore[no-untyped-call]
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells[:drill]):
            client.execute_cell(cell, index)
        client.execute_cell(settle, drill)
        client.set_widgets_metadata()
    shown: nbformat.NotebookNode = nbformat.v4.new_notebook(  # type: ignore[no-untyped-call]
        cells=[nb.cells[board]], metadata=nb.metadata
    )
    return shown


def to_html(nb: nbformat.NotebookNode, out_dir: Path) -> Path:
    manager, loader = fetch_js("html-manager"), fetch_js("requirejs")
    shutil.copytree(manager.parent, out_dir / "html-manager", dirs_exist_ok=True)
    shutil.copy(loader, out_dir / "require.js")
    exporter = HTMLExporter(  # type: ignore[no-untyped-call]
        template_name="lab",
        widget_renderer_url="html-manager/embed-amd.js",
        require_js_url="require.js",
    )
    body, _ = exporter.from_notebook_node(nb)
    page = out_dir / "incident.html"
    page.write_text(body)
    return page


def screenshot(page: Path, out: Path, width: int, height: int) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is needed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={out}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "notebook.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1290)
    parser.add_argument("--keep", type=Path, help="also write the executed cell's notebook here")
    args = parser.parse_args()
    nb = execute(EXAMPLE)
    if args.keep:
        nbformat.write(nb, args.keep)  # type: ignore[no-untyped-call]
    with tempfile.TemporaryDirectory() as tmp:
        page = to_html(nb, Path(tmp))
        screenshot(page, args.out.resolve(), args.width, args.height)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
