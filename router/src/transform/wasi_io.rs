//! `wasi:io/{streams,poll}` for guests called from inside a Tokio runtime.
//!
//! wasmtime-wasi's synchronous bindings implement every blocking WASI call
//! (e.g. `output-stream.blocking-write-and-flush`, which a Rust guest uses
//! for `eprintln!` and its panic message) with `Handle::block_on`, which
//! panics when the caller is a Tokio worker thread ("Cannot start a runtime
//! from within a runtime"). `Chain::run` must be callable inline from async
//! code, so these functions are re-linked here (shadowing the originals)
//! with [`run_blocking`]: the future is polled once in place, which is all
//! the streams we hand guests (an in-memory stderr tail, empty stdin/stdout)
//! ever need; only a future that is really pending (a guest sleeping or
//! polling a clock) falls back to blocking: outside a runtime on wasmtime's
//! own runtime, on a multi-thread runtime via `block_in_place`, and on a
//! current-thread runtime it traps instead of panicking.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::poll::{self as sync_poll, Pollable};
use wasmtime_wasi::p2::bindings::sync::io::streams::{
    self as sync_streams, InputStream, OutputStream,
};
use wasmtime_wasi::p2::{StreamError, StreamResult};
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    Host as AsyncHost, HostInputStream as AsyncIn, HostOutputStream as AsyncOut,
    StreamError as AsyncStreamError,
};

use super::engine::State;

/// Run a WASI future to completion without panicking inside Tokio.
fn run_blocking<T>(f: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let mut f = pin!(f);
    let handle = Handle::try_current();
    {
        // Poll once in place (inside the ambient runtime's context, if any,
        // so Tokio-backed futures can register themselves).
        let _enter = handle.as_ref().ok().map(|h| h.enter());
        if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            return v;
        }
    }
    match handle {
        Err(_) => wasmtime_wasi::runtime::in_tokio(f),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| h.block_on(f)),
        Ok(_) => Err(wasmtime::format_err!(
            "guest blocked on I/O while called from a current-thread Tokio runtime; call Chain::run from spawn_blocking"
        )),
    }
}

fn stream_blocking<T>(f: impl Future<Output = StreamResult<T>>) -> StreamResult<T> {
    // Carry StreamError through the wasmtime::Result-based helper.
    let r = run_blocking(async { Ok(f.await) });
    match r {
        Ok(v) => v,
        Err(e) => Err(StreamError::Trap(e)),
    }
}

pub(crate) struct NoTokioIo<'a>(&'a mut ResourceTable);

struct HasNoTokioIo;
impl HasData for HasNoTokioIo {
    type Data<'a> = NoTokioIo<'a>;
}

/// Shadow wasmtime-wasi's sync `wasi:io/poll` and `wasi:io/streams`.
pub(crate) fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    sync_poll::add_to_linker::<State, HasNoTokioIo>(linker, |s| NoTokioIo(s.table_mut()))?;
    sync_streams::add_to_linker::<State, HasNoTokioIo>(linker, |s| NoTokioIo(s.table_mut()))?;
    linker.allow_shadowing(false);
    Ok(())
}

impl sync_poll::Host for NoTokioIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<Pollable>>) -> wasmtime::Result<Vec<u32>> {
        run_blocking(async_poll::Host::poll(self.0, pollables))
    }
}

impl sync_poll::HostPollable for NoTokioIo<'_> {
    fn ready(&mut self, p: Resource<Pollable>) -> wasmtime::Result<bool> {
        run_blocking(async_poll::HostPollable::ready(self.0, p))
    }
    fn block(&mut self, p: Resource<Pollable>) -> wasmtime::Result<()> {
        run_blocking(async_poll::HostPollable::block(self.0, p))
    }
    fn drop(&mut self, p: Resource<Pollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, p)
    }
}

fn conv(e: AsyncStreamError) -> sync_streams::StreamError {
    match e {
        AsyncStreamError::LastOperationFailed(e) => {
            sync_streams::StreamError::LastOperationFailed(e)
        }
        AsyncStreamError::Closed => sync_streams::StreamError::Closed,
    }
}

impl sync_streams::Host for NoTokioIo<'_> {
    fn convert_stream_error(
        &mut self,
        err: StreamError,
    ) -> wasmtime::Result<sync_streams::StreamError> {
        Ok(conv(AsyncHost::convert_stream_error(self.0, err)?))
    }
}

impl sync_streams::HostOutputStream for NoTokioIo<'_> {
    fn drop(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<()> {
        run_blocking(AsyncOut::drop(self.0, s))
    }
    fn check_write(&mut self, s: Resource<OutputStream>) -> StreamResult<u64> {
        AsyncOut::check_write(self.0, s)
    }
    fn write(&mut self, s: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        AsyncOut::write(self.0, s, bytes)
    }
    fn blocking_write_and_flush(
        &mut self,
        s: Resource<OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        stream_blocking(AsyncOut::blocking_write_and_flush(self.0, s, bytes))
    }
    fn blocking_write_zeroes_and_flush(
        &mut self,
        s: Resource<OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        stream_blocking(AsyncOut::blocking_write_zeroes_and_flush(self.0, s, len))
    }
    fn subscribe(&mut self, s: Resource<OutputStream>) -> wasmtime::Result<Resource<Pollable>> {
        AsyncOut::subscribe(self.0, s)
    }
    fn write_zeroes(&mut self, s: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        AsyncOut::write_zeroes(self.0, s, len)
    }
    fn flush(&mut self, s: Resource<OutputStream>) -> StreamResult<()> {
        AsyncOut::flush(self.0, Resource::new_borrow(s.rep()))
    }
    fn blocking_flush(&mut self, s: Resource<OutputStream>) -> StreamResult<()> {
        stream_blocking(AsyncOut::blocking_flush(
            self.0,
            Resource::new_borrow(s.rep()),
        ))
    }
    fn splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        AsyncOut::splice(self.0, dst, src, len)
    }
    fn blocking_splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        stream_blocking(AsyncOut::blocking_splice(self.0, dst, src, len))
    }
}

impl sync_streams::HostInputStream for NoTokioIo<'_> {
    fn drop(&mut self, s: Resource<InputStream>) -> wasmtime::Result<()> {
        run_blocking(AsyncIn::drop(self.0, s))
    }
    fn read(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        AsyncIn::read(self.0, s, len)
    }
    fn blocking_read(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        stream_blocking(AsyncIn::blocking_read(self.0, s, len))
    }
    fn skip(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        AsyncIn::skip(self.0, s, len)
    }
    fn blocking_skip(&mut self, s: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        stream_blocking(AsyncIn::blocking_skip(self.0, s, len))
    }
    fn subscribe(&mut self, s: Resource<InputStream>) -> wasmtime::Result<Resource<Pollable>> {
        AsyncIn::subscribe(self.0, s)
    }
}
