"""Built-in corpora: text that ships with Python, so a first run needs no download."""

from collections.abc import Callable


def python_docs() -> str:
    """CPython's language reference topics (pydoc_data.topics): ~465k characters of English
    prose and code examples, under the PSF licence."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key].strip("\n") + "\n" for key in sorted(topics))


BUILTINS: dict[str, Callable[[], str]] = {"python-docs": python_docs}
