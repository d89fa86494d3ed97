"""Publishes CloudEvents to a skiff topic with the official SDK (`cloudevents` on PyPI,
v2), one in binary mode and one in structured mode, over plain HTTP to the ingress.

Usage: python3 publish_events.py HOST:PORT TOPIC TOKEN
Prints, per event, its id, the mode and skiff's answer (JSON) on one line.
"""
import http.client
import json
import sys

from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent


def publish(address, topic, token, message):
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = dict(message.headers)
    headers["Host"] = f"{topic}.topics.skiff.internal"
    headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", "/", body=message.body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read().decode()


def main():
    address, topic, token = sys.argv[1:4]
    for mode, encode in (("binary", to_binary_event), ("structured", to_structured_event)):
        event = CloudEvent(
            attributes={
                "type": "com.example.order.paid",
                "source": "/shop/python",
                "id": f"py-{mode}",
                "datacontenttype": "application/json",
            },
            data={"order": f"py-{mode}", "amount": 42},
        )
        status, answer = publish(address, topic, token, encode(event))
        print(json.dumps({"id": event.get_id(), "mode": mode, "status": status, "answer": answer}))


main()
