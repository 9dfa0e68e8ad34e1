"""``xbarlab rehash``: record the SHA-256 of a trusted checkpoint's weights in its JSON."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``rehash`` command to ``app``."""

    @app.command("rehash")
    def rehash_cmd(
        path: Path = typer.Argument(..., help="Checkpoint or state: <path>, <path>.json or <path>.safetensors."),
        force: bool = typer.Option(False, "--force", help="Replace a recorded hash that differs from the file's."),
    ) -> None:
        """Record the SHA-256 of a checkpoint's .safetensors in its .json (for a file you trust that has none).

        Checkpoints without ``weights_sha256`` are refused on load because their weights cannot be verified.
        """
        from xbarlab.checkpoint import checkpoint_paths, rehash

        sha = rehash(path, force=force)
        typer.echo(f"{checkpoint_paths(path)[1]}: recorded SHA-256 {sha}")
