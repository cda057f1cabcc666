"""``python -m careloop`` runs the command-line interface."""

from careloop.engine.cli import main

main()
