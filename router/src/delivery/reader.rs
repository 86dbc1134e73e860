//! The reading side of one (consumer, partition): new entries from the
//! consumer group, in batches, to the actor — paused while the partition's
//! buffer is full, so a backlog stays in Redis.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::coordinator::Lease;
use super::ConsumerCtx;
use switchyard_core::event::{self, Event};
use switchyard_store::consumer::{GroupReader, ReadError};
use switchyard_store::log::{Log, LogError};

/// Entries from the reader. `resync`: re-read from this consumer's pending
/// list after a read failed (see [`reader`]); some may already be in memory.
pub(super) struct Batch {
    pub resync: bool,
    pub entries: Vec<(String, Result<Event, event::CodecError>)>,
}

/// Reads new entries for the actor, never more than the partition's free room.
///
/// A read whose reply is lost (a response timeout while Redis is paused, a
/// connection cut) may still run in Redis, moving entries into this
/// consumer's pending list that nobody delivers. So after any failed read the
/// reader opens a new connection, kills the old one server-side (a read still
/// queued there can no longer run later), and reads its pending list past the
/// last entry it received, sending those (`resync`) before any newer entry:
/// nothing is stranded and an account's order holds.
pub(super) async fn reader(
    log: Log,
    ctx: Arc<ConsumerCtx>,
    p: u32,
    lease: Arc<Lease>,
    room: Arc<Semaphore>,
    tx: mpsc::Sender<Batch>,
    stop: CancellationToken,
) {
    let mut rd = GroupReader::new(ctx.keys.clone(), p, Some(lease.token));
    let mut last_seen = "0-0".to_string();
    let mut resync = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        if !rd.connected() {
            if let Err(e) = rd.connect(&log).await {
                tracing::warn!(consumer = %ctx.name, partition = p, error = %e, "reader cannot connect; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        }

        let r: Result<(), ReadError> = async {
            if resync {
                loop {
                    let entries = rd.read_pending(&last_seen, 500).await?;
                    let Some((last, _)) = entries.last() else { break };
                    last_seen = last.clone();
                    tracing::info!(consumer = %ctx.name, partition = p, n = entries.len(), "re-read pending entries after a failed read");
                    if tx.send(Batch { resync: true, entries }).await.is_err() {
                        return Ok(());
                    }
                }
                resync = false;
            }
            let want = room.available_permits().clamp(1, 500) as u32;
            let permit = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                p = room.clone().acquire_many_owned(want) => p.expect("never closed"),
            };
            let entries = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = rd.read_new(want as usize, 1000) => r?,
            };
            if let Some((last, _)) = entries.last() {
                last_seen = last.clone();
            }
            permit.forget();
            room.add_permits(want as usize - entries.len());
            if !entries.is_empty() {
                let _ = tx.send(Batch { resync: false, entries }).await;
            }
            Ok(())
        }
        .await;
        if tx.is_closed() {
            return;
        }
        let e = match r {
            Ok(()) => continue,
            Err(ReadError::NoGroup) => {
                // The stream or group vanished (e.g. Redis lost its data): recreate it.
                tracing::warn!(consumer = %ctx.name, partition = p, "consumer group missing; recreating it");
                let _ = rd.recreate_group().await;
                continue;
            }
            Err(ReadError::Other(LogError::Fenced)) => {
                // Another instance holds the partition now: stop reading;
                // the actor stops too (the coordinator saw it, or its next write is refused).
                tracing::warn!(consumer = %ctx.name, partition = p, "read refused: another instance holds the partition now");
                lease.lost.cancel();
                return;
            }
            Err(ReadError::Other(e)) => e,
        };
        tracing::warn!(consumer = %ctx.name, partition = p, error = %e, "read failed; reconnecting and re-reading pending entries");
        rd.drop_connection();
        resync = true;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
