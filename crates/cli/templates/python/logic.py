"""{{name}}: the module's logic, in plain Python so it can be unit-tested
without WebAssembly (`python3 -m unittest` in this directory).

`body(event, topics)` returns the JSON request body for one event, or None
when the event is not for this module (it is then dropped). `event` is a
dict in the canonical JSON form (the shape of sample-event.json).
"""

import fnmatch


def split_list(value):
    """Comma-separated, items trimmed, empty items dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def topic_matches(pattern, topic):
    """`*` any run of characters (dots included), `?` one character."""
    return fnmatch.fnmatchcase(topic, pattern.replace("[", "[[]"))


def body(event, topics):
    if not any(topic_matches(p, event["topic"]) for p in topics):
        return None
    after = event.get("after") if event.get("after") is not None else event.get("data")
    changed = {}
    if isinstance(after, dict):
        for field in event.get("changed", []):
            if field in after:
                changed[field] = after[field]
    return {"account": event.get("account_id", ""), "event": event["topic"], "changed": changed}
