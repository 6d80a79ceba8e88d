//! Batches, the unit that flows between components, and their acknowledgements.
//!
//! Components pass [`Batch`]es, never single events: one channel send per batch amortises
//! the cost of synchronisation over hundreds of events.
//!
//! Every batch a source emits carries a [`BatchNotifier`]. Clones of it travel with the
//! events through transforms (fan-out clones it; `aggregate` keeps it with the group the
//! events joined) into sinks, which drop their clone once the events are durably accepted
//! (written and flushed, delivery report, 2xx). When the last clone is dropped, the source's
//! [`AckTracker`] learns the batch is done. The tracker releases positions strictly in order,
//! so a source checkpoints only past events that every sink has accepted: this is what makes
//! "nothing lost across a restart" possible. A sink that gives up on a batch calls
//! [`BatchNotifier::fail`]; the tracker then stops advancing the checkpoint for the rest of
//! the run, so a restart re-reads from before the failure (at-least-once, never at-most-once).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::event::Event;

/// Events travelling together, with the acknowledgement handles of the batches they came from.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// The events.
    pub events: Vec<Event>,
    /// Handles to drop once the events are durably accepted (usually one).
    pub notifiers: Vec<BatchNotifier>,
}

impl Batch {
    /// A batch without acknowledgement handles.
    pub fn new(events: Vec<Event>) -> Self {
        Batch {
            events,
            notifiers: Vec::new(),
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Marks every source batch this one came from as failed (not delivered).
    pub fn fail(&self) {
        for n in &self.notifiers {
            n.fail();
        }
    }
}

/// Outcome of one source batch, sent to its source when the last handle is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    seq: u64,
    delivered: bool,
}

struct NotifierInner {
    seq: u64,
    failed: AtomicBool,
    tx: mpsc::UnboundedSender<Ack>,
}

impl Drop for NotifierInner {
    fn drop(&mut self) {
        // The source may be gone already (shutting down); nothing to tell then.
        let _ = self.tx.send(Ack {
            seq: self.seq,
            delivered: !self.failed.load(Ordering::Relaxed),
        });
    }
}

/// A shared handle on one source batch; the batch is acknowledged when the last clone drops.
#[derive(Clone)]
pub struct BatchNotifier(Arc<NotifierInner>);

impl BatchNotifier {
    /// Records that some component could not deliver (part of) this batch.
    pub fn fail(&self) {
        self.0.failed.store(true, Ordering::Relaxed);
    }

    /// True when both handles refer to the same source batch.
    pub fn same_batch(&self, other: &BatchNotifier) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for BatchNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchNotifier({})", self.0.seq)
    }
}

/// Adds `n` to `list` unless it is already the last entry (events of one batch arrive together).
pub fn push_notifier(list: &mut Vec<BatchNotifier>, n: &BatchNotifier) {
    if !list.last().is_some_and(|last| last.same_batch(n)) {
        list.push(n.clone());
    }
}

/// Source-side bookkeeping: hands out notifiers and turns acknowledgements, which may arrive
/// in any order, into the highest position below which everything was delivered.
pub struct AckTracker<P> {
    tx: Option<mpsc::UnboundedSender<Ack>>,
    rx: mpsc::UnboundedReceiver<Ack>,
    next_seq: u64,
    /// Outstanding batches in emission order: (seq, position after it, outcome once known).
    pending: VecDeque<(u64, P, Option<bool>)>,
    failed: bool,
}

impl<P: Clone> Default for AckTracker<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Clone> AckTracker<P> {
    /// A tracker with nothing outstanding.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        AckTracker {
            tx: Some(tx),
            rx,
            next_seq: 0,
            pending: VecDeque::new(),
            failed: false,
        }
    }

    /// A notifier for a batch that ends at `position`.
    ///
    /// # Panics
    /// If called after [`AckTracker::close`].
    pub fn notifier(&mut self, position: P) -> BatchNotifier {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back((seq, position, None));
        let tx = self.tx.clone().expect("notifier requested after close");
        BatchNotifier(Arc::new(NotifierInner {
            seq,
            failed: AtomicBool::new(false),
            tx,
        }))
    }

    /// Batches emitted but not yet acknowledged.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// True once some batch was not delivered; the checkpoint no longer advances.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Applies acknowledgements received so far, without waiting, calling `released` with
    /// each position that became safe, in order.
    pub fn poll(&mut self, mut released: impl FnMut(P)) {
        while let Ok(ack) = self.rx.try_recv() {
            self.record(ack);
        }
        self.release(&mut released);
    }

    /// Stops handing out notifiers and waits (blocking the thread) until every outstanding
    /// batch is acknowledged, calling `released` as positions become safe.
    pub fn close_blocking(&mut self, mut released: impl FnMut(P)) {
        self.tx = None;
        self.release(&mut released);
        while let Some(ack) = self.rx.blocking_recv() {
            self.record(ack);
            self.release(&mut released);
        }
    }

    /// Async variant of [`AckTracker::close_blocking`].
    pub async fn close(&mut self, mut released: impl FnMut(P)) {
        self.tx = None;
        self.release(&mut released);
        while let Some(ack) = self.rx.recv().await {
            self.record(ack);
            self.release(&mut released);
        }
    }

    fn record(&mut self, ack: Ack) {
        let Some(&(front, _, _)) = self.pending.front() else {
            return;
        };
        if let Some(entry) = self.pending.get_mut((ack.seq - front) as usize) {
            entry.2 = Some(ack.delivered);
        }
    }

    fn release(&mut self, released: &mut impl FnMut(P)) {
        while let Some((_, _, Some(delivered))) = self.pending.front() {
            let delivered = *delivered;
            let (_, position, _) = self.pending.pop_front().expect("front exists");
            if !delivered {
                self.failed = true;
            }
            if !self.failed {
                released(position);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_released_in_order_whatever_order_acks_arrive_in() {
        let mut tracker = AckTracker::new();
        let a = tracker.notifier(10);
        let b = tracker.notifier(20);
        let c = tracker.notifier(30);
        let c2 = c.clone();
        let mut seen = Vec::new();
        drop(b);
        tracker.poll(|p| seen.push(p));
        assert!(seen.is_empty(), "batch a is still out");
        drop(a);
        tracker.poll(|p| seen.push(p));
        assert_eq!(seen, vec![10, 20]);
        drop(c);
        tracker.poll(|p| seen.push(p));
        assert_eq!(seen, vec![10, 20], "a clone of c is still held");
        drop(c2);
        tracker.poll(|p| seen.push(p));
        assert_eq!(seen, vec![10, 20, 30]);
        assert_eq!(tracker.outstanding(), 0);
    }

    #[test]
    fn a_failed_batch_stops_the_checkpoint() {
        let mut tracker = AckTracker::new();
        let a = tracker.notifier(1);
        let b = tracker.notifier(2);
        let c = tracker.notifier(3);
        drop(a);
        b.fail();
        drop(b);
        drop(c);
        let mut seen = Vec::new();
        tracker.close_blocking(|p| seen.push(p));
        assert_eq!(seen, vec![1]);
        assert!(tracker.has_failed());
    }
}
