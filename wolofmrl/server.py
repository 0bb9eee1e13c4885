"""Moved: the server is `wolofmrl.cli.server` (it sits with the rest of the command-line app). This name stays
importable for existing scripts (`from wolofmrl.server import Limits, create_app`)."""
from wolofmrl.cli.server import *  # noqa: F401,F403
from wolofmrl.cli.server import Engine, Limits, create_app, serve  # noqa: F401
