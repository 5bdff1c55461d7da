//! How a session waits: with a server connection held, for either side
//! ([`Session::wait`]); without one, parked ([`Session::park`]): what a
//! session holds and waits on while it has nothing to do (issue #20:
//! memory per idle client).
//!
//! A session's task lives as long as its client, and tokio allocates a
//! task's future once, at the size of its largest state. The session's
//! busy loop awaits the relay, the cache, the pool and error exits: its
//! state is kilobytes, and an idle client paid for it while it waited. So
//! the loop is split (see `Session::serve`): the busy part runs in a box
//! allocated when the client wakes the session and freed when it parks
//! again; the task itself keeps only [`Session::park`]'s state: the
//! client socket's readiness, the shutdown signal and the idle clock. No
//! read buffer either: the bytes are read once the socket is readable
//! (`FrameReader::fill` takes its buffer then). Session mode holds its
//! server connection for the client's life and never parks: its idle
//! clients keep the busy state, next to a server connection each.
//!
//! # Performance
//! One allocation and free of the busy loop's state (~1.9 KB) per park,
//! that is per transaction in transaction mode: `bench/instructions` counted
//! 0.6–4% more instructions per transaction (bench/README.md, issue #20).

use std::future::Future;
use std::task::Poll;

use super::clocks::Waiting;
use super::{Event, Session};

impl Session {
    /// Waits, holding no server connection, for the client to send, the
    /// shutdown, or the idle (or idle-in-transaction) clock. A readable
    /// client is [`Event::Readable`]: the busy loop reads.
    ///
    /// # Cancellation safety
    /// Nothing is consumed: readiness stays until a read takes it.
    pub(super) async fn park(&mut self) -> Event {
        self.client.park();
        self.upstream.park();
        let waiting = Waiting {
            in_flight: false,
            idle: self.is_idle(),
        };
        let deadline = self.clocks.deadline(waiting, self.requests.now());
        // Boxed: a timer is ~110 bytes of every parked session's state,
        // and only sessions with a timeout configured wait on one.
        let mut expiry = deadline.map(|(at, _)| Box::pin(tokio::time::sleep_until(at.into())));
        // Borrowed, not cloned: a token clone locks the token's tree.
        let mut shutdown = std::pin::pin!(self.context.shutdown.cancelled());
        let client = &self.client;
        // Polled by hand rather than by `select!` over async fns: each
        // layer of those would add its state to every idle session.
        std::future::poll_fn(|cx| {
            if shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
            if let Poll::Ready(r) = client.poll_readable(cx) {
                return Poll::Ready(match r {
                    Ok(()) => Event::Readable,
                    Err(e) => Event::Client(Err(e)),
                });
            }
            if let (Some(sleep), Some((_, kind))) = (expiry.as_mut(), deadline) {
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Expired(kind));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Waits for the next input from either side while a server
    /// connection is held (without one the session parks: `park.rs`).
    ///
    /// # Cancellation safety
    /// Both reads append to their buffers only on completion, so the branch
    /// that loses the race loses nothing.
    pub(super) async fn wait(&mut self) -> Event {
        let idle = self.is_idle();
        let waiting = Waiting {
            in_flight: !self.upstream.settled(),
            idle,
        };
        let deadline = self.clocks.deadline(waiting, self.requests.now());
        let expiry = async move {
            match deadline {
                Some((at, kind)) => {
                    tokio::time::sleep_until(at.into()).await;
                    kind
                }
                None => std::future::pending().await,
            }
        };
        // Borrowed, not cloned: a token clone locks the token's tree.
        let shutdown = &self.context.shutdown;
        tokio::select! {
            // In order, not at random (the draw showed in profiles). The
            // server first: reading its answers never blocks anyone, while a
            // client that keeps sending (a pipeline, COPY IN) must not keep
            // them unread until the server stops reading in turn. A server
            // sends only what the client asked for, so it cannot starve the
            // client.
            biased;
            _ = shutdown.cancelled(), if idle => Event::Shutdown,
            r = self.upstream.read() => Event::Server(r),
            r = self.client.read() => Event::Client(r),
            kind = expiry => Event::Expired(kind),
        }
    }
}
