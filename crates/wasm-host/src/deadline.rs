//! Waits in the host end at the call's deadline.
//!
//! Epoch interruption stops guest code that runs too long, but it is only
//! checked in guest code: a guest blocked in a host call (`wasi:io/poll`,
//! e.g. `std::thread::sleep`, which waits on a clock) would hold its thread
//! for as long as it asked. So `wasi:io/poll`'s `poll` and `pollable.block`
//! are re-linked here (shadowing wasmtime-wasi's) to wait at most until the
//! deadline of the call in progress ([`State::deadline`], set right before
//! every guest entry). A wait cut short traps the call and sets
//! [`State::wait_timed_out`], so it is reported like any timeout: "timed out
//! after 100ms". Every other blocking WASI call a guest can reach finishes at
//! once: stdio are in-memory, and with no network and no preopened
//! directories there is no socket or file to wait on.

use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::poll::{self as sync_poll, Pollable};
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;

use super::engine::State;

pub(crate) struct DeadlinePoll<'a> {
    table: &'a mut ResourceTable,
    deadline: Instant,
    timed_out: &'a mut bool,
}

struct HasDeadlinePoll;
impl HasData for HasDeadlinePoll {
    type Data<'a> = DeadlinePoll<'a>;
}

fn view(s: &mut State) -> DeadlinePoll<'_> {
    let (table, deadline, timed_out) = s.poll_parts();
    DeadlinePoll {
        table,
        deadline,
        timed_out,
    }
}

/// Shadow wasmtime-wasi's synchronous `wasi:io/poll` (link it first).
pub(crate) fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let r = sync_poll::add_to_linker::<State, HasDeadlinePoll>(linker, view);
    linker.allow_shadowing(false);
    r
}

impl DeadlinePoll<'_> {
    /// Run `wait` (a WASI future over the resource table) until it is done or
    /// the deadline passes. Runs on wasmtime-wasi's runtime: guest code never
    /// runs on a thread with a Tokio context (see `threads.rs`).
    fn wait<T>(
        &mut self,
        wait: impl for<'t> FnOnce(
            &'t mut ResourceTable,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<T>> + 't>,
        >,
    ) -> wasmtime::Result<T> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let table = &mut *self.table;
        // The timer is made inside the runtime (the async block runs there).
        let r = in_tokio(async move { tokio::time::timeout_at(deadline, wait(table)).await });
        match r {
            Ok(v) => v,
            Err(_) => {
                *self.timed_out = true;
                Err(wasmtime::format_err!(
                    "the call's deadline passed while the guest was waiting"
                ))
            }
        }
    }
}

impl sync_poll::Host for DeadlinePoll<'_> {
    fn poll(&mut self, pollables: Vec<Resource<Pollable>>) -> wasmtime::Result<Vec<u32>> {
        self.wait(move |t| Box::pin(async_poll::Host::poll(t, pollables)))
    }
}

impl sync_poll::HostPollable for DeadlinePoll<'_> {
    fn ready(&mut self, p: Resource<Pollable>) -> wasmtime::Result<bool> {
        self.wait(move |t| Box::pin(async_poll::HostPollable::ready(t, p)))
    }
    fn block(&mut self, p: Resource<Pollable>) -> wasmtime::Result<()> {
        self.wait(move |t| Box::pin(async_poll::HostPollable::block(t, p)))
    }
    fn drop(&mut self, p: Resource<Pollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.table, p)
    }
}
