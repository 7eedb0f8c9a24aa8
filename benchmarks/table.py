"""The one table writer: every benchmark prints its results as a Markdown table, ready for the docs."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence


def markdown(columns: Sequence[str], rows: Iterable[Sequence[object]], *, right: Collection[int] = ()) -> str:
    """A Markdown table of ``rows`` under ``columns``; the columns numbered in ``right`` align right.

    A cell is its ``str`` (``None``: empty), with its own ``|`` escaped and line breaks as `` / ``,
    so a log's last lines fit in one cell.
    """

    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " / ")

    rule = "|" + "|".join("---:" if i in right else "---" for i in range(len(columns))) + "|"
    lines = [f"| {' | '.join(line)} |" for line in [columns, *([cell(v) for v in row] for row in rows)]]
    return "\n".join([lines[0], rule, *lines[1:]])
