"""A Flask app as users write them, served by gunicorn's default (sync) worker."""
import os
import socket

from flask import Flask, request

app = Flask(__name__)


@app.get("/")
def index():
    return "flask ok\n"


@app.get("/healthz")
def healthz():
    return "ok\n"


@app.get("/redis")
def redis_ping():
    """PING a Redis server in its own protocol; answers what it said."""
    host = request.args["host"]
    port = int(request.args.get("port", "6379"))
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).decode()
    except OSError as e:
        return f"error: {e}\n", 502
