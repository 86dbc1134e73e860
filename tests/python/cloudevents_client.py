"""Posts CloudEvents to a running Switchyard with the real CloudEvents SDK.

Run by tests/it/ingest_compat.rs: python cloudevents_client.py URL TOKEN
Every request's HTTP message (headers and body) comes from the SDK's own
conversion: `to_structured` / `to_binary` with its JSONFormat. The SDK has
no batch writer, so a batch is the JSON array of the events the SDK's
JSONFormat writes (`write`, what `to_structured` puts in a body). Prints
one JSON line per request: what was sent and what Switchyard answered.
"""

import json
import sys
from datetime import datetime, timezone

# requests sends exactly the headers given (urllib would add a form
# Content-Type to the SDK's binary message, which has none for JSON data).
import requests

from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

URL, TOKEN = sys.argv[1], sys.argv[2]
FMT = JSONFormat()
T0 = datetime(2026, 11, 30, 10, 0, 0, tzinfo=timezone.utc)


def post(name, headers, body):
    headers = dict(headers)
    headers["Authorization"] = "Bearer " + TOKEN
    r = requests.post(URL + "/v1/events", data=body, headers=headers, timeout=10)
    print(json.dumps({
        "request": name,
        "status": r.status_code,
        "answer": r.json(),
        # What went on the wire, besides the token and requests' own
        # Host/User-Agent/Accept/Connection/Content-Length.
        "sent_headers": sorted(
            k.lower() for k in r.request.headers
            if k.lower() not in ("authorization", "host", "user-agent", "accept",
                                 "accept-encoding", "connection", "content-length")
        ),
    }), flush=True)


def event(id_, type_, account, data, **extra):
    attrs = {"id": id_, "type": type_, "source": "/shop/web", "time": T0, "accountid": account}
    attrs.update(extra)
    return CloudEvent(attributes=attrs, data=data)


# Structured mode, sent twice: the retry is a duplicate.
signup = event("ce-structured-1", "com.example.customer.signup", "acct-1",
               {"plan": "gold"}, subject="customer/1")
for name in ["structured", "structured-retry"]:
    m = to_structured(signup, FMT)
    post(name, m.headers, m.body)

# Batch mode: three events (one with an id that is not a Switchyard event
# id), sent twice.
batch = [
    event("ce-batch-1", "com.example.order.placed", "acct-2", {"total": 12.5}),
    event("ce-batch-2", "com.example.order.placed", "acct-3", {"total": 7}),
    event("urn:order/3#1", "com.example.order.shipped", "acct-2", {"carrier": "dhl"}),
]
body = ("[" + ",".join(FMT.write(e).decode() for e in batch) + "]").encode()
for name in ["batch", "batch-retry"]:
    post(name, {"Content-Type": "application/cloudevents-batch+json"}, body)

# Binary mode: JSON data (the SDK sets no Content-Type for it), and text data
# with a datacontenttype (sent as Content-Type), each sent twice.
binary_json = event("ce-binary-1", "com.example.customer.email_changed", "acct 4",
                    {"email": "new@example.com"}, traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
binary_text = event("ce-binary-2", "com.example.note", "acct-5", "hello, world",
                    datacontenttype="text/plain")
for e, name in [(binary_json, "binary-json"), (binary_text, "binary-text")]:
    for attempt in ["", "-retry"]:
        m = to_binary(e, FMT)
        post(name + attempt, m.headers, m.body)

# Invalid: the second event of a batch has no account id; nothing is written.
bad = [
    event("ce-bad-1", "com.example.ok", "acct-6", None),
    CloudEvent(attributes={"id": "ce-bad-2", "type": "com.example.x", "source": "/s"}),
]
post("batch-invalid", {"Content-Type": "application/cloudevents-batch+json"},
     ("[" + ",".join(FMT.write(e).decode() for e in bad) + "]").encode())
