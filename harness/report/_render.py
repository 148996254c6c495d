"""The report's blocks as Markdown (plots linked as files) and as one self-contained HTML file.

Both render the same blocks, so the two pages never disagree; `backticks` in a paragraph become code in both.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from harness.report._blocks import Block, Code, Heading, Image, Table, Text

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1300px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    "th{background:#f0f0f0}pre{background:#f6f6f6;padding:0.8em;overflow-x:auto}"
    "code{font-family:ui-monospace,monospace}figure{margin:1em 0}img{max-width:100%;height:auto}"
)


# -- Markdown ------------------------------------------------------------------------------------


def to_markdown(blocks: list[Block], directory: Path) -> str:
    """Markdown with plots linked as files next to it (`plots/*.png`)."""
    return "\n\n".join(_markdown_block(block, directory) for block in blocks) + "\n"


def _markdown_block(block: Block, directory: Path) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Table):
        lines = [_md_row(block.headers), _md_row(["---"] * len(block.headers))]
        lines += [_md_row(row) for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Code):
        return f"```{block.lang}\n{block.text.rstrip()}\n```"
    return f"![{block.title}]({block.path.relative_to(directory).as_posix()})"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


# -- HTML ----------------------------------------------------------------------------------------


def to_html(blocks: list[Block], *, title: str) -> str:
    """One HTML file with nothing external: plots are base64 PNG data URIs, the style is inline."""
    body = [_html_block(block) for block in blocks]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(block, Code):
        return f"<pre><code>{html.escape(block.text.rstrip())}</code></pre>"
    return _html_image(block)


def _html_image(block: Image) -> str:
    """The plot embedded as a base64 PNG data URI, at the size it was drawn."""
    data = base64.b64encode(block.path.read_bytes()).decode("ascii")
    width, height = block.size
    return (
        f'<figure><img alt="{html.escape(block.title)}" width="{width}" height="{height}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(block.title)}'
        "</figcaption></figure>"
    )


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
