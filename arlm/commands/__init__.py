"""The `arlm` commands, one module each: `arlm X` is `arlm.commands.X.run(...)`, called by
arlm.cli with typed keyword arguments (train takes its flags as one mapping: they merge with a
TOML file by name, see arlm.settings).

Commands print (the product on stdout, progress and summaries on stderr, through the console
they are given); the library below them never does. A command never imports another: what
several share is in _shared.py.
"""
