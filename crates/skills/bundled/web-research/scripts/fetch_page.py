#!/usr/bin/env python3
"""fetch_page: read one web page as plain text.

Input (JSON on stdin): {"url": "https://...", "max_chars": 20000}. Output: the page's title,
final URL, text and links. Network access goes through the sandbox's egress proxy (the
HTTP(S)_PROXY variables), which refuses hosts the group may not reach.
"""
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

MAX_BYTES = 5 * 1024 * 1024
DEFAULT_CHARS = 20_000
MAX_CHARS = 100_000
MAX_LINKS = 100
SKIP = {"script", "style", "noscript", "svg", "template", "head"}
BLOCK = {
    "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "br", "hr",
    "tr", "table", "ul", "ol", "pre", "blockquote", "figure", "figcaption", "dl", "dt", "dd",
}
HEADINGS = {"h1": "# ", "h2": "## ", "h3": "### ", "h4": "#### ", "h5": "##### ", "h6": "###### "}


def fail(message):
    print(message)
    sys.exit(1)


class PageText(HTMLParser):
    """Collects visible text with line breaks at block boundaries, and the links."""

    def __init__(self, base):
        super().__init__(convert_charrefs=True)
        self.base = base
        self.title = ""
        self.in_title = False
        self.skip_depth = 0
        self.parts = []
        self.links = []
        self.link_href = None
        self.link_text = []

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self.in_title = True
        if tag in SKIP:
            self.skip_depth += 1
            return
        if tag in BLOCK:
            self.parts.append("\n")
        elif tag in HEADINGS:
            self.parts.append("\n\n" + HEADINGS[tag])
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag == "a":
            href = dict(attrs).get("href")
            if href and not href.startswith(("javascript:", "mailto:", "#")):
                self.link_href = urllib.parse.urljoin(self.base, href)
                self.link_text = []

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if tag in SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if tag in BLOCK or tag in HEADINGS:
            self.parts.append("\n")
        elif tag == "a" and self.link_href:
            text = " ".join("".join(self.link_text).split())
            if len(self.links) < MAX_LINKS and (text, self.link_href) not in self.links:
                self.links.append((text, self.link_href))
            self.link_href = None

    def handle_data(self, data):
        if self.in_title:
            self.title += data
            return
        if self.skip_depth:
            return
        self.parts.append(data)
        if self.link_href is not None:
            self.link_text.append(data)

    def text(self):
        lines = []
        for line in "".join(self.parts).split("\n"):
            line = " ".join(line.split())
            if line or (lines and lines[-1]):
                lines.append(line)
        return "\n".join(lines).strip()


def decode(body, content_type):
    charset = "utf-8"
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip('"')
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def main():
    try:
        args = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        fail(f"input is not JSON: {e}")
    url = args.get("url") if isinstance(args, dict) else None
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        fail('url must be an http or https URL, e.g. {"url": "https://example.org/page"}')
    max_chars = args.get("max_chars", DEFAULT_CHARS)
    if not isinstance(max_chars, int) or not 1 <= max_chars <= MAX_CHARS:
        fail(f"max_chars must be a whole number from 1 to {MAX_CHARS}")
    request = urllib.request.Request(url, headers={
        "User-Agent": "nanoclaw-web-research/1.0",
        "Accept": "text/html, text/plain;q=0.9, application/json;q=0.8",
    })
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read(MAX_BYTES + 1)
            final_url = response.geturl()
            content_type = response.headers.get("Content-Type", "text/html")
    except urllib.error.HTTPError as e:
        detail = e.read(2000).decode("utf-8", errors="replace").strip()
        fail(f"HTTP {e.code} {e.reason} for {url}\n{detail}")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        fail(f"could not fetch {url}: {reason}")
    truncated_body = len(body) > MAX_BYTES
    body = body[:MAX_BYTES]
    kind = content_type.split(";")[0].strip().lower()
    text = decode(body, content_type)
    title = ""
    links = []
    if kind in ("text/html", "application/xhtml+xml"):
        page = PageText(final_url)
        page.feed(text)
        page.close()
        title = " ".join(page.title.split())
        text = page.text()
        links = page.links
    elif not (kind.startswith("text/") or kind in ("application/json", "application/xml")):
        fail(f"{final_url} is {kind}, not a text page; nothing to read")
    cut = len(text) > max_chars or truncated_body
    text = text[:max_chars]
    out = []
    if title:
        out.append(f"Title: {title}")
    out.append(f"URL: {final_url}")
    out.append("")
    out.append(text)
    if cut:
        out.append(f"\n[cut at {max_chars} characters]")
    if links:
        out.append("\nLinks:")
        for i, (label, href) in enumerate(links, 1):
            out.append(f"[{i}] {label or href} — {href}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
