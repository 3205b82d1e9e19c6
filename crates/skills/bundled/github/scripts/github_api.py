#!/usr/bin/env python3
"""github_api: one call to the GitHub REST API.

Input (JSON on stdin): {"method", "path", "query"?, "body"?}. The token is the placeholder in
NANOCLAW_SECRET_GITHUB_TOKEN, swapped for the real token by the egress proxy on requests to
api.github.com only. NANOCLAW_GITHUB_API_URL replaces https://api.github.com (a local server in
tests).
"""
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

API = "https://api.github.com"
METHODS = {"GET", "POST", "PATCH", "PUT", "DELETE"}
MAX_OUTPUT = 60_000
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after")


def fail(message):
    print(message)
    sys.exit(1)


def main():
    try:
        args = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        fail(f"input is not JSON: {e}")
    if not isinstance(args, dict):
        fail("input must be an object with method and path")
    method = str(args.get("method", "")).upper()
    if method not in METHODS:
        fail(f"method must be one of {', '.join(sorted(METHODS))}")
    path = args.get("path")
    # Only a path on the API host: no scheme, host, traversal or fragment can send the token
    # anywhere else (the proxy would refuse another host too).
    if (not isinstance(path, str) or not path.startswith("/") or path.startswith("//")
            or "://" in path or ".." in path.split("?")[0].split("/") or "#" in path
            or any(c.isspace() for c in path)):
        fail('path must be an API path such as "/repos/OWNER/REPO/issues"')
    query = args.get("query") or {}
    if not isinstance(query, dict):
        fail("query must be an object of parameters")
    body = args.get("body")
    if body is not None and method in ("GET", "DELETE"):
        fail(f"{method} takes no body; put parameters in query")
    base = os.environ.get("NANOCLAW_GITHUB_API_URL", API).rstrip("/")
    url = base + path
    if query:
        url += ("&" if "?" in path else "?") + urllib.parse.urlencode(
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in query.items()})
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "nanoclaw-github-skill/1.0",
    }
    token = os.environ.get("NANOCLAW_SECRET_GITHUB_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, reason, got = response.status, response.reason, response.headers
            raw = response.read(MAX_OUTPUT * 4)
    except urllib.error.HTTPError as e:
        status, reason, got = e.code, e.reason, e.headers
        raw = e.read(MAX_OUTPUT)
    except (urllib.error.URLError, OSError) as e:
        fail(f"could not reach the GitHub API: {getattr(e, 'reason', e)}")
    lines = [f"HTTP {status} {reason}"]
    rate = [f"{h}: {got.get(h)}" for h in RATE_HEADERS if got.get(h)]
    if rate:
        lines.append("; ".join(rate))
    text = raw.decode("utf-8", errors="replace")
    try:
        text = json.dumps(json.loads(text), ensure_ascii=False, indent=1) if text else ""
    except json.JSONDecodeError:
        pass
    if len(text) > MAX_OUTPUT:
        text = text[:MAX_OUTPUT] + f"\n[cut at {MAX_OUTPUT} characters; ask for fewer with per_page]"
    if status == 401:
        lines.append("GitHub refused the token: the owner can store one with `nanoclaw vault set github-token`.")
    lines.append(text)
    print("\n".join(lines))
    if status >= 400:
        sys.exit(1)


if __name__ == "__main__":
    main()
