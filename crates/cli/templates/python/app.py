"""{{name}}: a Switchyard transform module in Python (componentize-py).

Glue between the WIT contract (`wit/`, world `transformer`) and logic.py:
each event whose topic matches `topics` (config, comma-separated globs;
default `*`) becomes one JSON request, `POST {{path}}`. Build with
./build.sh; try it with `switchyard transform test`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

import logic

TOPICS = ["*"]


def as_dict(ev):
    """The WIT event as the canonical JSON dict that logic.py reads."""
    def parse(text):
        return None if text is None else json.loads(text)

    return {
        "id": ev.id,
        "topic": ev.topic,
        "account_id": ev.account_id,
        "before": parse(ev.before),
        "after": parse(ev.after),
        "data": parse(ev.data),
        "changed": list(ev.changed),
    }


class Guest(exports.Guest):
    def init(self, config):
        global TOPICS
        cfg = dict(config)
        unknown = [k for k in cfg if k != "topics"]
        if unknown:
            raise Err(f"config `{unknown[0]}`: unknown key; expected topics")
        TOPICS = logic.split_list(cfg.get("topics", "")) or ["*"]

    def transform(self, event):
        try:
            b = logic.body(as_dict(event), TOPICS)
        except ValueError as e:
            raise Err(types.TransformError(message=f"bad event JSON: {e}", retryable=False))
        if b is None:
            return []
        text = json.dumps(b, sort_keys=True, separators=(",", ":"))
        return [types.Output_Request(types.Request(
            body=text.encode("utf-8"),
            content_type="application/json",
            method="POST",
            path="{{path}}",
            headers=[],
        ))]
