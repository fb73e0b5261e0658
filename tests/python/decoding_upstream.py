"""An upstream that routes on the *decoded* path, as real servers do.

Usage: python3 decoding_upstream.py PORT

Every request is answered 200 with JSON: the raw request target, and which
resource the server would serve. "private" when ANY common server reading
of the path lands under /w/private (WSGI's PATH_INFO: every escape
decoded; Tomcat: `;params` stripped, decoded, dot segments removed; nginx:
decoded, slashes merged, dot segments removed; IIS: backslash as slash;
and a second decoding pass), so the gateway in front of it must never let
a request without the private route's credential reach it.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_to_bytes


def decode(p: str) -> str:
    b = unquote_to_bytes(p)
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def remove_dots(p: str) -> str:
    out = []
    segs = p.split("/")[1:]
    for i, s in enumerate(segs):
        last = i + 1 == len(segs)
        if s == ".":
            if last:
                out.append("")
        elif s == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(s)
    return "/" + "/".join(out)


def readings(raw_path: str):
    wsgi = decode(raw_path)
    tomcat = remove_dots(decode("/".join(s.split(";")[0] for s in raw_path.split("/"))))
    merged = wsgi
    while "//" in merged:
        merged = merged.replace("//", "/")
    nginx = remove_dots(merged)
    iis = remove_dots(wsgi.replace("\\", "/"))
    double = decode(wsgi)
    return {"wsgi": wsgi, "tomcat": tomcat, "nginx": nginx, "iis": iis, "double": double}


def served(r) -> str:
    for v in r.values():
        # Case-folded too: a case-insensitive server serves /W/PRIVATE
        # (Java's simple mapping folds U+0130 to i).
        low = v.replace("\u0130", "i").lower()
        if low == "/w/private" or low.startswith("/w/private/"):
            return "private"
        # An exact route, which Express, ASP.NET and Spring also serve
        # with a trailing slash.
        if low in ("/w/admin", "/w/admin/"):
            return "private"
    return "public"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_one(self):
        raw = self.path
        raw_path = raw.split("?", 1)[0]
        r = readings(raw_path)
        headers = {}
        for k, v in self.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        body = json.dumps(
            {"raw": raw, "readings": r, "served": served(r), "method": self.command, "headers": headers}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_one

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.serve_forever()
