"""The ``tumorboard`` command line. Each verb lives in its own module with a ``register(app)`` function;
commands only parse arguments, call library functions and print results."""

from apps.cli.main import app, main

__all__ = ["app", "main"]
