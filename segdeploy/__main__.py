"""``python -m segdeploy``."""

from segdeploy.cli import main

main(prog_name="segdeploy")
