"""Turn an HTML mail body into readable plain text."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Elements whose content is never shown to a reader.
_HIDDEN = frozenset({"script", "style", "title", "template"})
# Elements that start on a new line in a browser; the rest flow inline.
_BLOCKS = frozenset(
    {"address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "footer", "form"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p", "pre", "section"}
    | {"table", "tr", "ul"}
)
# Table cells would otherwise run their words together.
_CELLS = frozenset({"td", "th"})

_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")
_SPACES = re.compile(r"[ \t]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


class _TextCollector(HTMLParser):
    """Collects visible text, turning block boundaries into line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "pre":
            self._pre += 1
        if tag in _BLOCKS:
            self.chunks.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # A self-closing <p/> or <div/> still breaks the line, but hides nothing.
        if tag in _BLOCKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in _BLOCKS:
            self.chunks.append("\n")
        elif tag in _CELLS:
            self.chunks.append(" ")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self.chunks.append(data if self._pre else _HTML_SPACE.sub(" ", data))


# A "<" that no ">" closes before the next "<": not a tag. html.parser looks for the end of
# each such one to the end of the input, which makes a body of many of them (hostile, or just
# broken) take time quadratic in its length: 300 KB took seconds, a few MB hours. Escaped
# first, in one linear pass (the lookahead stops at the next "<" or ">"), they are text.
_UNCLOSED_TAG = re.compile(r"<(?![^<>]*>)")


def html_to_text(html: str) -> str:
    """The visible text of ``html``: one line per block, at most one blank line in a row."""
    collector = _TextCollector()
    try:
        collector.feed(_UNCLOSED_TAG.sub("&lt;", html))
        collector.close()
    except Exception:  # HTMLParser is lenient, but a bad body must never fail a mail
        pass
    text = "".join(collector.chunks).replace("\xa0", " ")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()
