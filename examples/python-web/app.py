"""Ferry's example web app: serves static/, says which commit it was built from on /version
($FERRY_REVISION, which Ferry sets in every image it builds) and reports its health on /healthz
(standard library only)."""
import http.server
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def version():
    """The commit this app was built from, as Ferry recorded it in the image."""
    revision = os.environ.get("FERRY_REVISION", "")
    return "commit " + revision[:8] if len(revision) >= 8 else "unknown"


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=ROOT, **kwargs)

    def do_GET(self):
        if self.path == "/healthz":
            self.answer(200, b"ok\n")  # health: ok
            return
        if self.path == "/version":
            self.answer(200, (version() + "\n").encode())
            return
        super().do_GET()

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    port = int(os.environ.get("PORT", "8000"))
    http.server.ThreadingHTTPServer(("", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
