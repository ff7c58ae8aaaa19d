"""The ``adapterpool`` command line: :mod:`.main` (commands and options, built from the config
dataclasses), :mod:`.display` (the tables it prints), :mod:`.demo` (``adapterpool demo``).

The pool's and the server's subcommands live with them (``adapterpool.pool.cli``,
``adapterpool.server.cli``), the benchmark's in ``adapterpool.bench.cli``.
"""
