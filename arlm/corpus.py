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


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")  # fmt: skip
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DATE_FORMS = (  # how people write a date; {d} day, {m} month number, {M} month name, {y} year
    "{d} {M} {y}",  # 7 December 2026
    "{M} {d}, {y}",  # December 7, 2026
    "{Mon} {d}, {y}",  # Dec 7, 2026
    "{d} {Mon} {y}",  # 7 Dec 2026
    "{M} {th}, {y}",  # December 7th, 2026
    "the {th} of {M}, {y}",  # the 7th of December, 2026
    "{W}, {M} {d}, {y}",  # Monday, December 7, 2026
    "{Wd} {d} {Mon} {y}",  # Mon 7 Dec 2026
    "{dd}.{mm}.{y}",  # 07.12.2026: day first, as much of Europe writes it
    "{mm}/{dd}/{y}",  # 12/07/2026: month first, as the United States writes it
    "{y}/{mm}/{dd}",  # 2026/12/07
    "{d}-{Mon}-{y}",  # 7-Dec-2026
    "{M_upper} {d} {y}",  # DECEMBER 7 2026
    "{th} {m_lower} {y}",  # 7th december 2026
)


def dates(count: int = 22_000, seed: int = 0) -> str:
    """A sequence-to-sequence corpus (`--task seq2seq`) as TSV, made on the fly: `count` dates
    between 1900 and 2099 written in one of DATE_FORMS, each with its ISO 8601 form
    (1999-03-05). Every form says which number is the day: the dots are day first, the slashes
    month first, so each line has one right answer."""
    import datetime
    import random

    rng = random.Random(seed)
    first = datetime.date(1900, 1, 1)
    days = (datetime.date(2099, 12, 31) - first).days
    lines = []
    for _ in range(count):
        date = first + datetime.timedelta(days=rng.randrange(days + 1))
        month, suffix = MONTHS[date.month - 1], _ordinal(date.day)
        fields = {
            "d": date.day, "dd": f"{date.day:02d}", "m": date.month, "mm": f"{date.month:02d}",
            "y": date.year, "M": month, "Mon": month[:3], "M_upper": month.upper(),
            "m_lower": month.lower(), "th": f"{date.day}{suffix}",
            "W": WEEKDAYS[date.weekday()], "Wd": WEEKDAYS[date.weekday()][:3],
        }  # fmt: skip
        lines.append(f"{rng.choice(DATE_FORMS).format(**fields)}\t{date.isoformat()}\n")
    return "".join(lines)


def _ordinal(day: int) -> str:
    """The suffix of an ordinal day: 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ..."""
    if 11 <= day <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


BUILTINS: dict[str, Callable[[], str]] = {"python-docs": python_docs}
LABELLED_BUILTINS: dict[str, Callable[[], str]] = {"python-modules": python_modules}
PAIR_BUILTINS: dict[str, Callable[[], str]] = {"dates": dates}
