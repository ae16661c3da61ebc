"""A Markdown table file as a standalone HTML page, for the Snakemake report (which shows HTML
results in a frame, and Markdown only as plain text)."""

from __future__ import annotations

import argparse
from pathlib import Path

from markdown_it import MarkdownIt

from core.errors import UserError
from core.io import write_text

_STYLE = ("body{font-family:sans-serif;font-size:13px;margin:1em}"
          "table{border-collapse:collapse;margin:0.5em 0}"
          "th,td{border:1px solid #bbb;padding:2px 6px;text-align:right}th{background:#eee}"
          "td:first-child,th:first-child{text-align:left}")


def markdown_page(markdown: str, title: str) -> str:
    """The HTML page of a Markdown document (CommonMark with GitHub tables)."""
    body = MarkdownIt("commonmark").enable("table").render(markdown)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{_STYLE}</style></head>\n<body>\n{body}</body></html>\n")


def write_markdown_page(md_path: str | Path, out_html: str | Path) -> None:
    md_path = Path(md_path)
    if not md_path.is_file():
        raise UserError(f"missing {md_path}: build it first (`snakemake {md_path}`).")
    write_text(out_html, markdown_page(md_path.read_text(), md_path.stem))


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("html", help="a Markdown table as an HTML page (for the Snakemake report)")
    p.add_argument("--md", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=lambda a: write_markdown_page(a.md, a.out))
