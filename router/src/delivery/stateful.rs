//! Stateful modules at delivery (contract 0.2 `kv` and `emit`): reading
//! committed values for a running module, and committing what a chain run
//! staged together with the event's outcome. See "Stateful modules" in
//! ARCHITECTURE.md.

use std::time::Duration;

use switchyard_core::event::Event;
use switchyard_store::consumer::{KvWrite, PartitionStore};
use switchyard_store::log::Log;
use switchyard_wasm_host::{Effects, KvStore};
use tokio_util::sync::CancellationToken;

/// `kv.get` for modules running on guest threads: a blocking read through
/// the router's runtime (guest threads have no Tokio context of their own).
pub(super) struct RedisKv {
    pub store: PartitionStore,
    pub rt: tokio::runtime::Handle,
}

impl KvStore for RedisKv {
    fn get(&self, module: &str, account: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let mut store = self.store.clone();
        self.rt.block_on(async {
            match tokio::time::timeout(Duration::from_secs(2), store.kv_get(module, account, key))
                .await
            {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("Redis did not answer within 2s".into()),
            }
        })
    }
}

/// Commit the effects a chain run staged for `ev`, once per event id, before
/// its outcome is recorded: first the emitted events (deterministic ids: the
/// log drops the ones a previous attempt appended), then the kv writes with
/// the event's marker in one script. A marker already there means a
/// previous delivery of this event committed them: nothing is applied again
/// (and its emits were appended before its marker). Retries until done or
/// `cancel`; false: cancelled (the event stays pending and runs again).
pub(super) async fn commit(
    store: &mut PartitionStore,
    log: &Log,
    ev: &Event,
    effects: &Effects,
    cancel: &CancellationToken,
) -> bool {
    if effects.is_empty() {
        return true;
    }
    let mut backoff =
        switchyard_core::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match try_commit(store, log, ev, effects).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(event = %ev.id, error = %e, "committing a module's state and emits failed; retrying");
                if cancel.is_cancelled() {
                    return false;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

async fn try_commit(
    store: &mut PartitionStore,
    log: &Log,
    ev: &Event,
    effects: &Effects,
) -> Result<(), switchyard_store::log::LogError> {
    if store.effects_committed(&ev.id).await? {
        return Ok(());
    }
    if !effects.emits.is_empty() {
        log.append(&effects.emits).await?;
    }
    let writes: Vec<KvWrite<'_>> = effects
        .writes
        .iter()
        .map(|w| KvWrite {
            module: &w.module,
            key: &w.key,
            value: w.value.as_deref(),
            ttl_ms: w.ttl.map_or(0, |t| t.as_millis() as u64),
        })
        .collect();
    store
        .commit_effects(&ev.id, &ev.account_id, &writes)
        .await?;
    Ok(())
}
