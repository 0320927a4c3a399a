"""``python -m segdeploy``."""

from segdeploy.cli import app

app(prog_name="segdeploy")
