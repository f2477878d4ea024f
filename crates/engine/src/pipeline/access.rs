//! The read and write rules of the data buffer. The rules look and decide; the engine then applies what they
//! return.
//!
//! - **Read:** from the run's own writes and its callers' ([`Read::Buffered`]); else from the nearest older slot
//!   that wrote the key, once that slot has finished and only its top run wrote it ([`Read::Forwarded`]); while
//!   it runs, the reader waits ([`Read::Stall`]). A read that a predicted dependence says an older running slot
//!   will overwrite also waits. Anything else reads committed state ([`Read::Store`]).
//! - **Write:** buffered under the run. A younger slot that read the key from further back than the writer (from
//!   the store, or from a slot older than the writer's) read too early, and is squashed (read-after-write).
//!   Writes after reads and writes after writes never squash.

use serde_json::Value;

use super::Engine;
use super::SlotId;
use super::runs::Source;
use super::slots::Progress;
use crate::{Action, Cause, Outcome, Reply, RequestId, RunId};

/// A read waiting for an older slot to finish.
#[derive(Debug, Clone)]
pub(super) struct PendingRead {
    pub run: RunId,
    pub request: RequestId,
    pub key: String,
}

/// Where the read rule answers a read from.
#[derive(Debug, Clone, PartialEq)]
enum Read {
    /// The run's own chain wrote it (`None`: deleted).
    Buffered(Option<Value>),
    /// The nearest older slot that wrote it has finished.
    Forwarded {
        value: Option<Value>,
        from: SlotId,
    },
    /// An older slot that writes (or, by the dependence predictor, will write) it is still running.
    Stall,
    Store,
}

impl Engine {
    /// The read rule.
    fn read_rule(&self, run: RunId, key: &str) -> Read {
        if let Some(v) = self.buffer.read(self.runs.chain(run), key) {
            return Read::Buffered(v.clone());
        }
        let own = self.runs[run].slot;
        let me = self.slot_index(own).expect("a running run's slot is in the pipeline");
        // The nearest older slot that wrote the key.
        for q in (0..me).rev() {
            let slot = &self.slots[q];
            let mut writers = self.runs.of_slot(slot.id).filter(|r| self.buffer.has_written(*r, key)).peekable();
            if writers.peek().is_none() {
                continue;
            }
            if let Progress::Finished(top, Outcome::Success(_)) = slot.progress
                && writers.all(|w| w == top)
            {
                let value = self.buffer.read([top], key).cloned().flatten();
                return Read::Forwarded { value, from: slot.id };
            }
            return Read::Stall;
        }
        // A predicted dependence: an older slot still running a function whose writes to this key kept squashing
        // this function: wait for it rather than be squashed again.
        let consumer = &self.runs[run].function;
        let threshold = self.config.dependence_squashes;
        let waits = self.slots.iter().take(me).any(|slot| {
            !slot.has_outcome() && self.oracle.dependences.streak(&slot.function, consumer, key) >= threshold
        });
        if waits { Read::Stall } else { Read::Store }
    }

    /// Answers a read, stalls it, or sends it to the store.
    pub(super) fn read(&mut self, run: RunId, request: RequestId, key: String, out: &mut Vec<Action>) {
        match self.read_rule(run, &key) {
            Read::Buffered(value) => {
                out.push(Action::Reply { run, request, reply: Reply::Ok(value.unwrap_or(Value::Null)) });
            }
            Read::Forwarded { value, from } => {
                self.runs[run].reads.push((key, Source::Slot(from)));
                out.push(Action::Reply { run, request, reply: Reply::Ok(value.unwrap_or(Value::Null)) });
            }
            Read::Stall => self.stalled.push(PendingRead { run, request, key }),
            Read::Store => {
                self.runs[run].reads.push((key.clone(), Source::Store));
                self.store_reads.insert(request, (run, key.clone()));
                out.push(Action::ReadStore { run, request, key });
            }
        }
    }

    /// The store answered a read: the run learns the version it read, for its commit.
    pub(super) fn store_read(
        &mut self,
        run: RunId,
        request: RequestId,
        value: Option<Value>,
        version: u64,
        out: &mut Vec<Action>,
    ) {
        if let Some((r, key)) = self.store_reads.remove(&request)
            && r == run
            && self.runs.is_running(run)
        {
            self.runs[run].versions.push((key, version));
            out.push(Action::Reply { run, request, reply: Reply::Ok(value.unwrap_or(Value::Null)) });
        }
    }

    /// The write rule: the first slot at or after `from` (younger than `writer`'s) that read `key` from further back
    /// than `writer`'s slot, which must be squashed.
    fn stale_reader(&self, writer: SlotId, key: &str, from: usize) -> Option<usize> {
        (from..self.slots.len()).find(|&t| {
            self.runs.of_slot(self.slots[t].id).any(|r| {
                self.runs[r].reads.iter().any(|(k, src)| {
                    k == key
                        && match src {
                            Source::Store => true,
                            Source::Slot(q) => self.older(*q, writer),
                        }
                })
            })
        })
    }

    /// Whether any run of the slot at `index` read a write of slot `id`.
    pub(super) fn reads_from_slot(&self, index: usize, id: SlotId) -> bool {
        self.runs
            .of_slot(self.slots[index].id)
            .any(|r| self.runs[r].reads.iter().any(|(_, src)| *src == Source::Slot(id)))
    }

    pub(super) fn write(
        &mut self,
        run: RunId,
        request: RequestId,
        key: String,
        value: Option<Value>,
        out: &mut Vec<Action>,
    ) {
        if !self.buffer.has_written(run, &key) && self.buffer.write_count(run) >= self.config.writes_max {
            let m =
                format!("a function may write at most {} keys before it commits (writes_max)", self.config.writes_max);
            out.push(Action::Reply { run, request, reply: Reply::Refused(m) });
            return;
        }
        self.buffer.write(run, key.clone(), value);
        out.push(Action::Reply { run, request, reply: Reply::Ok(Value::Null) });
        // Younger slots that read this key from further back read too early: squash them now.
        let own = self.runs[run].slot;
        let me = self.slot_index(own).expect("a running run's slot is in the pipeline");
        let producer = self.runs[run].function.clone();
        let mut from = me + 1;
        while let Some(t) = self.stale_reader(own, &key, from) {
            self.oracle.dependences.train_squash(&producer, &self.slots[t].function, &key);
            self.slots[t].raw_keys.push(key.clone());
            self.squash_slot(t, Cause::RawViolation, true, out);
            from = t + 1;
        }
        self.retry_stalled(out);
    }

    pub(super) fn retry_stalled(&mut self, out: &mut Vec<Action>) {
        for PendingRead { run, request, key } in std::mem::take(&mut self.stalled) {
            if self.runs.is_running(run) {
                self.read(run, request, key, out);
            }
        }
    }
}
