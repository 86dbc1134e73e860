//! Test module: same shape as the real contract but package version 0.0.1,
//! so it exports `switchyard:transform/guest@0.0.1`. The host must refuse it
//! at load. If it were loaded anyway, it passes events through unchanged.

wit_bindgen::generate!({
    inline: r#"
package switchyard:transform@0.0.1;

interface types {
    enum op { insert, update, delete, soft-delete, restore, snapshot, event }
    record commit-info { id: string, seq: u64 }
    record event {
        id: string,
        topic: string,
        source: string,
        op: op,
        account-id: string,
        key: option<string>,
        before: option<string>,
        after: option<string>,
        data: option<string>,
        changed: list<string>,
        occurred-at: string,
        ingested-at: string,
        commit: option<commit-info>,
        traceparent: option<string>,
        consent: list<tuple<string, string>>,
        attributes: list<tuple<string, string>>,
    }
    record request {
        body: list<u8>,
        content-type: string,
        method: option<string>,
        path: option<string>,
        headers: list<tuple<string, string>>,
    }
    variant output { request(request), event(event) }
    record transform-error { message: string, retryable: bool }
    enum level { trace, debug, info, warn, error }
}

interface host {
    use types.{level};
    log: func(level: level, message: string);
}

interface guest {
    use types.{event, output, transform-error};
    init: func(config: list<tuple<string, string>>) -> result<_, string>;
    transform: func(event: event) -> result<list<output>, transform-error>;
}

world transformer {
    import host;
    export guest;
}
"#,
    world: "transformer",
});

use exports::switchyard::transform::guest::Guest;
use switchyard::transform::types::{Event, Output, TransformError};

struct OldAbi;

impl Guest for OldAbi {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
    fn transform(event: Event) -> Result<Vec<Output>, TransformError> {
        Ok(vec![Output::Event(event)])
    }
}

export!(OldAbi);
