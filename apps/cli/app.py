"""``tumorboard app``: start the Streamlit app (Patient, Models and Data pages) on a lake and runs."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from apps.cli.common import Command, console, fail

APP_FILE = Path(__file__).resolve().parents[1] / "streamlit" / "app.py"


def register(app: typer.Typer) -> None:
    app.command("app", cls=Command)(run_app)


def streamlit_command(lake: Path, runs: Path | None, *, host: str = "127.0.0.1",
                      port: int = 8501) -> list[str]:
    """The ``streamlit run`` command line: headless, bound to ``host``, no error details in the browser."""
    command = [sys.executable, "-m", "streamlit", "run", str(APP_FILE), "--server.address", host,
               "--server.port", str(port), "--server.headless", "true", "--client.showErrorDetails", "none",
               "--client.toolbarMode", "viewer",
               "--browser.gatherUsageStats", "false", "--", "--lake", str(lake)]
    if runs is not None:
        command += ["--runs", str(runs)]
    return command


def run_app(
    lake: Annotated[Path, typer.Option("--lake", help="The lake directory.")],
    runs: Annotated[Path | None, typer.Option("--runs", help="Folder of run directories (`tumorboard train "
                                                             "--out RUNS/<name>`).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; 0.0.0.0 exposes the app (and patient "
                                                     "data) to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8501,
) -> None:
    """Start the app: Patient (predictions, evidence), Models (runs side by side), Data (lake status)."""
    if lake.exists() and not lake.is_dir():
        raise fail(f"--lake {lake} is a file; pass a lake directory")
    if runs is not None and runs.exists() and not runs.is_dir():
        raise fail(f"--runs {runs} is a file; pass the folder that holds the run directories")
    if not lake.is_dir():
        console.print(f"[yellow]The lake {escape(str(lake))} does not exist yet; the app will say how to create it.[/]")
    if not _is_loopback(host):
        console.print(f"[yellow]--host {escape(host)}: the app and the patient data it shows are reachable from "
                      "other machines; it has no login. Use 127.0.0.1 unless the network is yours alone.[/]")
    console.print(f"Starting tumorboard on http://{host}:{port} (Ctrl+C stops it)")
    try:
        code = subprocess.call(streamlit_command(lake, runs, host=host, port=port))
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))  # [::1] as in a URL
    except ValueError:  # a host name: it may resolve to any interface
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or address).is_loopback
