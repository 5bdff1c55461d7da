//! The server → client direction of a session: relays what the server sent
//! and keeps every part of the session that an answer changes in step —
//! the phase (transaction status, COPY, FATAL), the fill being captured,
//! the write path (which may hold the acknowledgement back), and the
//! request's accounting.

use bytes::BytesMut;

use super::cached::CachePath;
use super::phase::{Phase, Tx};
use super::request::{Request, Requests};
use super::upstream::Upstream;
use crate::backend::BackendError;
use crate::cache::{entry, WritePath};
use crate::frontend::expect::{Effects, Forget};
use crate::net::message::tag;

/// The parts of a session an answer touches.
pub struct Relay<'a> {
    pub upstream: &'a mut Upstream,
    pub phase: &'a mut Phase,
    /// The client's pending output.
    pub out: &'a mut BytesMut,
    pub cache: Option<&'a mut CachePath>,
    pub writes: Option<&'a mut WritePath>,
    pub requests: &'a mut Requests,
}

/// What a relay leaves the session to do.
pub struct Relayed {
    /// A ReadyForQuery committed writes: the relay stopped there, and the
    /// writes must be recorded before anything more reaches the client.
    pub commit: bool,
    /// The request that ended, to report.
    pub finished: Option<Request>,
    /// The client's prepared statements were dropped (`DEALLOCATE ALL`,
    /// `DISCARD ALL`).
    pub statements_dropped: bool,
    /// Statements the server confirmed it dropped (session mode).
    pub forgotten: Vec<Forget>,
}

impl Relay<'_> {
    /// Relays every whole message the server has sent, stopping early at a
    /// ReadyForQuery that commits writes.
    pub fn run(mut self) -> Result<Relayed, BackendError> {
        // One request at a time is in flight, so at most one finishes here.
        let mut finished = None;
        let mut commit = false;
        let mut effects = Effects::default();
        while let Some(answer) = self.upstream.next_answer(self.out, &mut effects)? {
            let frame = answer.frame;
            let (tag, len) = (frame.tag(), frame.len());
            if tag == tag::READY_FOR_QUERY && !answer.forward {
                // pgstash's own Sync: no request of the client's ended.
                self.upstream.consume(len, tag);
                continue;
            }
            if let Some(cache) = self.cache.as_deref_mut() {
                cache.capture(frame);
            }
            match tag {
                tag::READY_FOR_QUERY => {
                    let tx = Tx::from_status(frame.body().first().copied().unwrap_or(b'I'));
                    self.phase.on_ready(tx);
                    if let Some(mut request) = self.requests.take() {
                        request.ended(!tx.is_idle());
                        finished = Some(request);
                    }
                    if let Some(writes) = self.writes.as_deref_mut() {
                        commit = writes.on_ready(!tx.is_idle(), frame);
                    }
                }
                tag::COMMAND_COMPLETE => {
                    self.phase.flow.copy_ended();
                    self.requests.add_rows(entry::rows_in_tag(frame.body()));
                    if let Some(writes) = self.writes.as_deref_mut() {
                        writes.on_command_complete(frame.body());
                    }
                }
                tag::COPY_IN_RESPONSE => self.phase.flow.copy_started(answer.copy_in_extended),
                tag::COPY_OUT_RESPONSE | tag::COPY_BOTH_RESPONSE => {
                    self.phase.flow.copy_started(false)
                }
                tag::ERROR_RESPONSE => {
                    self.phase.flow.copy_ended();
                    if answer.fatal {
                        self.phase.flow.close();
                    }
                }
                _ => {}
            }
            if commit {
                // The ReadyForQuery waits in the write path.
                self.upstream.consume(len, tag);
                break;
            }
            if answer.forward {
                match &answer.renamed {
                    Some(renamed) => self.out.extend_from_slice(renamed),
                    None => self.out.extend_from_slice(frame.as_bytes()),
                }
            }
            self.upstream.drain_synthetic(self.out);
            self.upstream.consume(len, tag);
        }
        let (statements_dropped, forgotten) = self.upstream.end_relay(effects);
        Ok(Relayed {
            commit,
            finished,
            statements_dropped,
            forgotten,
        })
    }
}
