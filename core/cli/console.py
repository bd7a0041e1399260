"""``orderpipe console [--port N] [--no-open] [--read-only] [--stack NAME]``: the web console.

Serves the console (core/console) on loopback for the stack the other commands would use,
prints its URL with the per-run token once, and opens a browser unless ``--no-open``.
"""

from __future__ import annotations

import socket
import threading
import webbrowser

import click

from core.cli.context import resolve_target, stack_options
from core.console.app import build_app
from core.console.backend import Backend
from core.console.security import NotLoopback, Secrets, check_bind_host

DEFAULT_PORT = 8710


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            " (try --port 0 for any free port)"
        ) from None
    sock.listen(128)
    return sock


@click.command("console")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to serve on (0: any free port).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a --host other than loopback (anyone who can reach it and has the token).",
)
@click.option("--no-open", is_flag=True, help="Print the URL; do not open a browser.")
@click.option("--read-only", is_flag=True, help="Show everything; hide and refuse every action.")
@stack_options
def command(
    *,
    port: int,
    host: str,
    allow_remote: bool,
    no_open: bool,
    read_only: bool,
    stack_name: str | None,
    endpoint_url: str | None,
) -> None:
    """Browse the files, their rejected rows, dead letters and health in a local web page."""
    import uvicorn

    try:
        host = check_bind_host(host, allow_remote=allow_remote)
    except NotLoopback as exc:
        raise click.UsageError(str(exc)) from None
    target = resolve_target(stack_name, endpoint_url)
    backend = Backend.for_stack(target.clients, target.settings, target.where)
    sock = _listen(host, port)
    port = int(sock.getsockname()[1])
    shown = f"[{host}]" if ":" in host else host
    hosts = (
        None
        if allow_remote
        else frozenset(
            {f"{shown}:{port}", f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
        )
    )
    keys = Secrets()
    app = build_app(backend, keys=keys, read_only=read_only, hosts=hosts)
    url = f"http://{shown}:{port}/?token={keys.token}"
    click.echo(f"orderpipe console for {target.where}: {url}")
    if not no_open:
        threading.Timer(0.5, lambda: webbrowser.open(url)).start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
