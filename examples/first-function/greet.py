"""Your first Keel function: answers {"greeting": "Hello, NAME!"} to a POST of {"name": "NAME"}.

Keel starts it with PORT set, POSTs each invocation's payload to it, and retries an answer of
408, 429 or 5xx. While a file named OUTAGE exists in its working directory it answers 503, as a
function whose database is down would: that is how the walkthrough sends a call to the DLQ.
Only Python's standard library is used.
"""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Greet(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if os.path.exists("OUTAGE"):
            return self.answer(503, {"error": "temporarily unavailable: try again later"})
        try:
            name = json.loads(body or b"{}")["name"]
        except (ValueError, KeyError, TypeError):
            # A 4xx is permanent: Keel does not retry it.
            return self.answer(400, {"error": 'expected a JSON body like {"name": "Ada"}'})
        self.answer(200, {"greeting": f"Hello, {name}!", "attempt": self.headers.get("keel-attempt")})

    def answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass  # Keel already logs every attempt.


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Greet).serve_forever()
