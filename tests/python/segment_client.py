"""Sends Segment messages to a running Switchyard with the real
segment-analytics-python library, its host pointed at Switchyard.

Run by tests/it/ingest_compat.rs: python segment_client.py URL WRITE_KEY
Prints one JSON object: what was sent and any errors the library reported.
"""

import json
import sys
from datetime import datetime, timezone

import segment.analytics as analytics
from segment.analytics import Client
from segment.analytics.request import APIError

URL, WRITE_KEY = sys.argv[1], sys.argv[2]
T0 = datetime(2026, 11, 30, 10, 0, 0, tzinfo=timezone.utc)
errors = []
out = {}

# The module-level API, as the Segment docs configure it.
analytics.write_key = WRITE_KEY
analytics.host = URL
analytics.sync_mode = True
analytics.on_error = lambda e, batch: errors.append(["module", str(e)])
analytics.track("user-1", "Order Completed", {"total": 30}, timestamp=T0, message_id="seg-track-1",
                context={"consent": {"categoryPreferences": {"Advertising": False, "Analytics": True}},
                         "ip": "192.0.2.1"})
# The same message again (a retry): a duplicate in the log.
analytics.track("user-1", "Order Completed", {"total": 30}, timestamp=T0, message_id="seg-track-1",
                context={"consent": {"categoryPreferences": {"Advertising": False, "Analytics": True}},
                         "ip": "192.0.2.1"})

# A client in sync mode: one request per call, every message type.
c = Client(WRITE_KEY, host=URL, sync_mode=True, on_error=lambda e, b: errors.append(["sync", str(e)]))
c.identify("user-2", {"email": "a@example.com", "plan": "gold"}, timestamp=T0, message_id="seg-identify-1")
c.page("user-2", "Docs", "Getting started", {"path": "/docs"}, timestamp=T0, message_id="seg-page-1")
c.screen("user-2", "App", "Home", {"tab": 1}, timestamp=T0, message_id="seg-screen-1")
c.group("user-2", "group-9", {"name": "Acme"}, timestamp=T0, message_id="seg-group-1")
c.alias("anon-77", "user-2", timestamp=T0, message_id="seg-alias-1")
# Only an anonymous id: it is the account id.
c.track(anonymous_id="anon-88", event="Signed Up", properties={"via": "ads"}, timestamp=T0,
        message_id="seg-anon-1")

# The default, asynchronous client: messages queue up and go out as one
# gzip-compressed /v1/batch request on flush; one of them is a retry of
# a message above (same messageId).
b = Client(WRITE_KEY, host=URL, gzip=True, upload_size=100,
           on_error=lambda e, batch: errors.append(["async", str(e)]))
for i in range(5):
    b.track("user-3", "Item Viewed", {"i": i}, timestamp=T0, message_id="seg-batch-%d" % i)
b.identify("user-2", {"email": "a@example.com", "plan": "gold"}, timestamp=T0, message_id="seg-identify-1")
b.flush()
b.shutdown()

# A wrong write key: the library gets a 401 (and raises it in sync mode).
wrong = Client("not-the-write-key-0123456789", host=URL, sync_mode=True, max_retries=0)
try:
    wrong.track("user-1", "Nope", {}, message_id="seg-wrong-1")
    out["wrong_key"] = "accepted"
except APIError as e:
    out["wrong_key"] = {"status": e.status, "code": e.code, "message": e.message}

out["errors"] = errors
print(json.dumps(out))
