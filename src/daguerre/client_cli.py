"""`daguerre generate` and `daguerre generations list|get|cancel`: the client side of the CLI.

They reach the local `daguerre serve` with no flags (its address and the key it saved on first
start), or any Luma-compatible server with `--server` / `--key` or the SDK's own variables
`LUMA_BASE_URL` / `LUMA_AGENTS_API_KEY`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from daguerre.client import DEFAULT_SERVER, Client, ClientError

USAGE, STATE, INTERRUPTED = 2, 1, 130

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="LUMA_BASE_URL",
        help="The API's base URL (env LUMA_BASE_URL).",
        show_default=DEFAULT_SERVER,
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="LUMA_AGENTS_API_KEY",
        help="API key (env LUMA_AGENTS_API_KEY; default: the key `daguerre serve` saved).",
        show_default=False,
    ),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Where `daguerre serve` saved its key.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the Generation as JSON, for scripts.")]

generations_app = typer.Typer(
    help="The account's generations on a server: list, get, cancel.", no_args_is_help=True
)


def _fail(status: int, message: str) -> NoReturn:
    typer.echo(f"daguerre: {' '.join(message.split())}", err=True)
    raise typer.Exit(status)


@contextmanager
def _session(server: str | None, key: str | None, data_dir: Path | None) -> Iterator[Client]:
    """A client of the server; a request it refuses, or a server it cannot reach, ends the command
    with one line on stderr and exit status 1."""
    with _client(server, key, data_dir) as client:
        try:
            yield client
        except ClientError as error:
            _fail(STATE, str(error))


def _client(server: str | None, key: str | None, data_dir: Path | None) -> Client:
    if key is None:
        from pydantic import ValidationError

        from daguerre.settings import Settings

        try:  # the local server's settings, for where it saved its key
            settings = Settings(data_dir=data_dir) if data_dir is not None else Settings()
        except ValidationError as error:  # a server setting that is wrong here (not shown: secrets)
            _fail(
                USAGE,
                f"no API key: pass --key or set LUMA_AGENTS_API_KEY ({error.error_count()} "
                "server setting(s) in this environment do not load, so the saved key cannot be found)",
            )
        key_file = settings.first_key_file
        if not key_file.is_file():
            _fail(
                USAGE,
                f"no API key: pass --key or set LUMA_AGENTS_API_KEY (`daguerre serve` saves its first key "
                f"to {key_file} on its first start)",
            )
        key = key_file.read_text().strip()
    return Client(server or DEFAULT_SERVER, key)


def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw, or for --edit what to change.")],
    model: Annotated[str, typer.Option(help="uni-1 or uni-1-max.")] = "uni-1",
    aspect_ratio: Annotated[
        str | None,
        typer.Option("--aspect-ratio", help="3:1 2:1 16:9 3:2 1:1 2:3 9:16 1:2 1:3.", show_default=False),
    ] = None,
    style: Annotated[str | None, typer.Option(help="auto or manga.", show_default=False)] = None,
    output_format: Annotated[
        str | None, typer.Option("--format", help="png or jpeg.", show_default="png")
    ] = None,
    edit: Annotated[
        str | None,
        typer.Option(
            "--edit", help="Edit this image: a local file, a URL or a generation id.", show_default=False
        ),
    ] = None,
    ref: Annotated[
        list[str] | None,
        typer.Option("--ref", help="A reference image (file, URL or generation id); repeatable."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Where to save the image.", show_default="<id>.png")
    ] = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_output: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Make an image (or edit one) and save it, with live progress; Ctrl-C cancels the job."""
    with _session(server, key, data_dir) as client:
        body: dict[str, Any] = {"prompt": prompt, "model": model}
        for name, value in (
            ("aspect_ratio", aspect_ratio),
            ("style", style),
            ("output_format", output_format),
        ):
            if value is not None:
                body[name] = value
        if edit is not None:
            body["type"] = "image_edit"
            body["source"] = client.image_ref(edit, "input")
        if ref:
            body["image_ref"] = [client.image_ref(r, "reference") for r in ref]
        generation = client.create(body)
        try:
            generation = _follow(client, generation)
        except KeyboardInterrupt:
            try:
                client.cancel(generation["id"])
                typer.echo(f"daguerre: cancelled {generation['id']}", err=True)
            except ClientError as error:
                typer.echo(f"daguerre: could not cancel {generation['id']}: {error}", err=True)
            raise typer.Exit(INTERRUPTED) from None
        if generation["state"] == "failed":
            if json_output:
                typer.echo(json.dumps(generation, indent=2))
            _fail(
                STATE,
                f"generation {generation['id']} failed: {generation.get('failure_code')}: "
                f"{generation.get('failure_reason')}",
            )
        extension = "jpg" if output_format == "jpeg" else "png"
        path = output or Path(f"{generation['id']}.{extension}")
        client.download(generation["output"][0]["url"], path)
    if json_output:
        typer.echo(json.dumps(generation, indent=2))
    else:
        typer.echo(str(path))


def _follow(client: Client, generation: dict[str, Any]) -> dict[str, Any]:
    """Show the job's progress on stderr (a rich progress bar on a terminal) until it ends."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(f"{generation['id'][:8]} queued", total=None)
        for name, data in client.follow(generation["id"]):
            if name == "queue":
                progress.update(
                    task, description=f"{generation['id'][:8]} queued, position {data['position']}"
                )
            elif name == "progress":
                progress.update(
                    task,
                    description=f"{generation['id'][:8]} generating",
                    completed=data["step"],
                    total=data["total"],
                )
            elif name == "generation":
                generation = data
                if data["state"] == "processing":
                    progress.update(task, description=f"{generation['id'][:8]} processing")
    return generation


@generations_app.command("list")
def generations_list(
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    state: Annotated[str | None, typer.Option(help="Only this state.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.", show_default=False)] = None,
    server: ServerOpt = None,
    key: KeyOpt = None,
    json_output: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """The account's latest generations (state, model, type, failure)."""
    with _session(server, key, data_dir) as client:
        page = client.list(limit=limit, state=state, model=model)
    if json_output:
        typer.echo(json.dumps(page, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "state", "model", "type", "created", "failure", box=None)
    for g in page["data"]:
        failure = f"{g.get('failure_code')}: {g.get('failure_reason')}" if g["state"] == "failed" else ""
        table.add_row(g["id"], g["state"], g["model"], g["type"], g["created_at"][:19], _short(failure))
    Console(width=160 if not sys.stdout.isatty() else None).print(table)


@generations_app.command("get")
def generations_get(
    generation_id: Annotated[str, typer.Argument(help="The generation's id.")],
    server: ServerOpt = None,
    key: KeyOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """One generation as JSON."""
    with _session(server, key, data_dir) as client:
        typer.echo(json.dumps(client.get(generation_id), indent=2))


@generations_app.command("cancel")
def generations_cancel(
    generation_id: Annotated[str, typer.Argument(help="The generation's id.")],
    server: ServerOpt = None,
    key: KeyOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Cancel a queued or running generation (a finished one is left as it is)."""
    with _session(server, key, data_dir) as client:
        generation = client.cancel(generation_id)
    typer.echo(
        f"{generation['id']} {generation['state']}"
        + (f" ({generation.get('failure_reason')})" if generation["state"] == "failed" else "")
    )


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
