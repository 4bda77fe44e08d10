"""Markdown reports: every run's `summary.md` is built with `Report`, so all three tasks write
tables, figures and warnings the same way (figures linked relative to the report)."""

from pathlib import Path

import numpy as np

from medlab.atomic import write_text_atomic


def markdown_table(rows, columns, formats=None, headers=None):
    """Rows of dicts as a Markdown table; `formats` maps a column to a format spec like '.3f'.

    `headers` labels the columns (default: their names), so two columns may share a label.

    A float that is NaN or infinite reads "n/a"; a missing cell is empty.
    """
    formats = formats or {}

    def cell(row, column):
        value = row.get(column, "")
        if isinstance(value, float) and column in formats:
            return "n/a" if not np.isfinite(value) else format(value, formats[column])
        return str(value)

    lines = ["| " + " | ".join(headers or columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row, c) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """A Markdown document written to `folder/name` in one atomic step by `write()`."""

    def __init__(self, folder, title, name="summary.md"):
        self.path = Path(folder) / name
        self.blocks = [f"# {title}"]

    def heading(self, text, level=2):
        self.blocks.append(f"{'#' * level} {text}")
        return self

    def text(self, *sentences):
        """One paragraph; empty sentences are left out, so optional ones can be passed as ''."""
        paragraph = " ".join(s for s in sentences if s)
        if paragraph:
            self.blocks.append(paragraph)
        return self

    def bold(self, sentence):
        """A warning the reader must not miss (a model that has not learnt, synthetic data)."""
        return self.text(f"**{sentence}**")

    def bullets(self, items):
        items = [item for item in items if item]
        if items:
            self.blocks.append("\n".join(f"- {item}" for item in items))
        return self

    def table(self, rows, columns, formats=None, headers=None):
        self.blocks.append(markdown_table(rows, columns, formats, headers))
        return self

    def figure(self, path, caption):
        """A figure in the report's folder or below it, linked relative to the report."""
        relative = Path(path).resolve().relative_to(self.path.parent.resolve())
        self.blocks.append(f"![{caption}]({relative.as_posix()})")
        return self

    def markdown(self):
        return "\n\n".join(self.blocks) + "\n"

    def write(self):
        write_text_atomic(self.path, self.markdown())
        return self.path
