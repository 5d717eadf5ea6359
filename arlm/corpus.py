"""Built-in corpora: text that ships with Python, so a first run needs no download."""

from collections.abc import Callable


def python_docs() -> str:
    """CPython's language reference topics (pydoc_data.topics): ~465k characters of English
    prose and code examples, under the PSF licence."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key].strip("\n") + "\n" for key in sorted(topics))


# Packages of the standard library whose docstrings make a labelled corpus, each a topic of its
# own: which package does this docstring document?
MODULE_PACKAGES = ("asyncio", "email", "http", "importlib", "logging", "unittest")


def python_modules() -> str:
    """A labelled corpus (`--task classify`) as TSV: the first paragraph of each docstring of a
    function, class or method of six standard-library packages, labelled with its package
    (about 1,500 texts). A text that two packages share (an inherited docstring) is left out."""
    import importlib
    import inspect
    import pkgutil

    found: dict[str, set[str]] = {}
    for package in MODULE_PACKAGES:
        names = [package]
        root = importlib.import_module(package)
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules(root.__path__)
                  if not m.name.startswith("_") and "test" not in m.name]  # fmt: skip
        for name in names:
            try:
                module = importlib.import_module(name)
            except Exception:  # a module this platform cannot import (windows_events, ...)
                continue
            for thing in vars(module).values():
                if not (inspect.isfunction(thing) or inspect.isclass(thing)):
                    continue
                if not getattr(thing, "__module__", "").startswith(package):
                    continue
                inner = list(vars(thing).values()) if inspect.isclass(thing) else []
                for item in [thing, *filter(inspect.isfunction, inner)]:
                    paragraph = " ".join((inspect.getdoc(item) or "").split("\n\n")[0].split())
                    if len(paragraph) > 20:
                        found.setdefault(paragraph, set()).add(package)
    rows = sorted((labels.pop(), text) for text, labels in found.items() if len(labels) == 1)
    return "".join(f"{label}\t{text}\n" for label, text in rows)


BUILTINS: dict[str, Callable[[], str]] = {"python-docs": python_docs}
LABELLED_BUILTINS: dict[str, Callable[[], str]] = {"python-modules": python_modules}
