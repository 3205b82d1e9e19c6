#!/usr/bin/env python3
"""web_search: search the web through DuckDuckGo's HTML endpoint.

Input (JSON on stdin): {"query": "...", "max_results": 8}. Output: a JSON list of
{title, url, snippet}. The endpoint is `https://html.duckduckgo.com/html/` (a form POST of `q`);
NANOCLAW_WEB_SEARCH_URL replaces it (a local server in tests). Requests go through the
sandbox's egress proxy like every other.
"""
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

ENDPOINT = "https://html.duckduckgo.com/html/"
DEFAULT_RESULTS = 8
MAX_RESULTS = 20


def fail(message):
    print(message)
    sys.exit(1)


def real_url(href):
    """DuckDuckGo links through `//duckduckgo.com/l/?uddg=<target>`; return the target."""
    parts = urllib.parse.urlsplit(urllib.parse.urljoin("https://duckduckgo.com/", href))
    if parts.path == "/l/":
        target = urllib.parse.parse_qs(parts.query).get("uddg")
        if target:
            return target[0]
    return urllib.parse.urlunsplit(parts)


class Results(HTMLParser):
    """Reads `a.result__a` (title and link) and `.result__snippet` elements, in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.results = []
        self.field = None
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        if self.field:
            self.depth += 1
            return
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "a" and "result__a" in classes and attrs.get("href"):
            self.results.append({"title": "", "url": real_url(attrs["href"]), "snippet": ""})
            self.field, self.depth = "title", 0
        elif "result__snippet" in classes and self.results:
            self.field, self.depth = "snippet", 0

    def handle_endtag(self, tag):
        if not self.field:
            return
        if self.depth == 0:
            self.field = None
        else:
            self.depth -= 1

    def handle_data(self, data):
        if self.field:
            self.results[-1][self.field] += data


def main():
    try:
        args = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        fail(f"input is not JSON: {e}")
    query = args.get("query") if isinstance(args, dict) else None
    if not isinstance(query, str) or not query.strip():
        fail('query must be a non-empty string, e.g. {"query": "rust async traits"}')
    limit = args.get("max_results", DEFAULT_RESULTS)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_RESULTS:
        fail(f"max_results must be a whole number from 1 to {MAX_RESULTS}")
    endpoint = os.environ.get("NANOCLAW_WEB_SEARCH_URL", ENDPOINT)
    form = urllib.parse.urlencode({"q": query.strip()}).encode()
    request = urllib.request.Request(endpoint, data=form, headers={
        "User-Agent": "nanoclaw-web-research/1.0",
        "Content-Type": "application/x-www-form-urlencoded",
    })
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            html = response.read(2 * 1024 * 1024).decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:
        detail = e.read(2000).decode("utf-8", errors="replace").strip()
        fail(f"the search failed: HTTP {e.code} {e.reason}\n{detail}")
    except (urllib.error.URLError, OSError) as e:
        fail(f"the search failed: {getattr(e, 'reason', e)}")
    parser = Results()
    parser.feed(html)
    parser.close()
    results = []
    for r in parser.results:
        r = {k: " ".join(v.split()) for k, v in r.items()}
        if r["url"].startswith(("http://", "https://")) and r not in results:
            results.append(r)
        if len(results) == limit:
            break
    print(json.dumps(results, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
