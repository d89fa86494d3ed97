"""A CloudEvents consumer as users write one with the official SDK (`cloudevents` on
PyPI, v2), served by gunicorn: it parses what skiff delivers, in binary or structured
mode, and prints what it found on one line for the test to read."""
import json
import sys

# The SDK's wheels, unpacked into the image by scripts/debian-apps-image.
sys.path.insert(0, "/srv/pylib")

from cloudevents.core.bindings.http import HTTPMessage, from_http_event  # noqa: E402
from flask import Flask, request  # noqa: E402

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return "ok\n"


@app.post("/")
@app.post("/<path:where>")
def receive(where=""):
    message = HTTPMessage(headers=dict(request.headers), body=request.get_data())
    event = from_http_event(message)
    seen = {
        "path": request.path,
        "mode": "structured" if request.content_type == "application/cloudevents+json" else "binary",
        "id": event.get_id(),
        "type": event.get_type(),
        "source": event.get_source(),
        "specversion": event.get_specversion(),
        "data": event.get_data(),
    }
    print("parsed " + json.dumps(seen, sort_keys=True, default=str), flush=True)
    return "", 204
