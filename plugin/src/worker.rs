//! Inference off the streaming thread. The sink pad's thread queues work (one batch of
//! chunks) and the serialized events between batches; a task on the src pad takes them in
//! order, runs each batch and pushes what it made. Upstream thus keeps delivering frames
//! while a batch runs, and waits only when `max-queued-batches` batches are already queued
//! (the bound on memory). As with `queue`, a flow error downstream reaches upstream at its
//! next buffer, a flush empties the queue, and nothing waits forever: every wait ends on
//! progress, on a flush, or on an error.
//!
//! `max-queued-batches=0` keeps the old synchronous behaviour: each submit returns only when
//! its batch has been pushed.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::runtime::remote::Interrupt;

/// Default of `max-queued-batches`: one batch waits while one runs.
pub const DEFAULT_MAX_QUEUED_BATCHES: u32 = 1;
/// The largest `max-queued-batches` (with `batch-size` and the frame limits it bounds memory).
pub const MAX_QUEUED_BATCHES: u32 = 16;

/// The `max-queued-batches` property of both inference elements.
pub fn max_queued_batches_spec(what: &str) -> glib::ParamSpec {
    glib::ParamSpecUInt::builder("max-queued-batches")
        .nick("Max queued batches")
        .blurb(&format!(
            "Batches of {what} chunks that may wait for the graph while one runs on the element's own \
             thread (upstream blocks only when this many wait); 0 runs each batch before the \
             buffer that completed it returns (no overlap, least memory)"
        ))
        .maximum(MAX_QUEUED_BATCHES)
        .default_value(DEFAULT_MAX_QUEUED_BATCHES)
        .mutable_ready()
        .build()
}

/// What the task takes from the queue.
enum Item<J> {
    Work(J),
    /// A serialized event, pushed on the src pad in its place among the batches.
    Event(gst::Event),
}

struct Queue<J> {
    items: VecDeque<Item<J>>,
    /// `Item::Work` entries in `items` (events do not count against the bound).
    work: usize,
    /// The task is handling an item it took.
    busy: bool,
    /// Set by a flush and by a stop: waits end, submits are refused (until the next start).
    flushing: bool,
    /// The flow of the last push downstream; after an error (or EOS) the task pauses and
    /// this is what upstream gets until the next flush.
    flow: Result<gst::FlowSuccess, gst::FlowError>,
}

impl<J> Queue<J> {
    fn clear(&mut self) {
        self.items.clear();
        self.work = 0;
    }

    /// The queue will not move (flushing, or paused after an error): the flow to report.
    fn stuck(&self) -> Option<gst::FlowError> {
        if self.flushing {
            Some(gst::FlowError::Flushing)
        } else {
            self.flow.err()
        }
    }
}

/// The queue between the sink pad's thread and the src pad's task.
pub struct Worker<J> {
    queue: Mutex<Queue<J>>,
    changed: Condvar,
    /// Set from a flush or a stop until the next start: the batch in progress gives up
    /// what can be given up (a remote graph's retries) instead of making them wait.
    interrupt: Interrupt,
}

impl<J> Worker<J> {
    /// A worker whose flushes and stops set `interrupt` (the graph slot's).
    pub fn interrupting(interrupt: Interrupt) -> Self {
        Self {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                work: 0,
                busy: false,
                // Not flushing before the first start: a buffer that comes between the pads'
                // activation and the task's start waits in the queue.
                flushing: false,
                flow: Ok(gst::FlowSuccess::Ok),
            }),
            changed: Condvar::new(),
            interrupt,
        }
    }
}

impl<J: Send + 'static> Worker<J> {
    fn lock(&self) -> MutexGuard<'_, Queue<J>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, q: MutexGuard<'a, Queue<J>>) -> MutexGuard<'a, Queue<J>> {
        self.changed.wait(q).unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until everything queued has been handled; returns the downstream flow.
    fn idle(&self, mut q: MutexGuard<'_, Queue<J>>) -> Result<gst::FlowSuccess, gst::FlowError> {
        loop {
            if let Some(e) = q.stuck() {
                return Err(e);
            }
            if q.items.is_empty() && !q.busy {
                return q.flow;
            }
            q = self.wait(q);
        }
    }

    /// Queues a batch. Waits while `max_queued` batches wait already (with 0: until this one
    /// has been pushed). Returns the downstream flow so far: an error refuses the batch.
    pub fn submit(&self, job: J, max_queued: u32) -> Result<gst::FlowSuccess, gst::FlowError> {
        let bound = max_queued.max(1) as usize;
        let mut q = self.lock();
        loop {
            if let Some(e) = q.stuck() {
                return Err(e);
            }
            if q.work < bound {
                break;
            }
            q = self.wait(q);
        }
        q.items.push_back(Item::Work(job));
        q.work += 1;
        self.changed.notify_all();
        if max_queued == 0 { self.idle(q) } else { q.flow }
    }

    /// Queues a serialized event behind the batches before it (with `max_queued` 0: waits
    /// until it has been pushed). `Err`: the stream already stopped with that flow (the
    /// event is dropped; the caller decides what an EOS then needs).
    pub fn event(&self, event: gst::Event, max_queued: u32) -> Result<(), gst::FlowError> {
        let mut q = self.lock();
        if let Some(e) = q.stuck() {
            return Err(e);
        }
        q.items.push_back(Item::Event(event));
        self.changed.notify_all();
        if max_queued == 0 {
            // What pushing it did is the next buffer's business (after EOS: EOS).
            let _ = self.idle(q);
        }
        Ok(())
    }

    /// Waits until everything queued has been pushed (before a caps change, which the
    /// elements negotiate from the streaming thread).
    pub fn wait_idle(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.idle(self.lock())
    }

    /// Starts (or restarts, after a flush) the task on `pad`. `task` is the element's loop
    /// body: it calls [`Worker::step`] with its own batch runner.
    pub fn start(&self, pad: &gst::Pad, task: impl FnMut() + Send + 'static) -> Result<(), glib::BoolError> {
        {
            let mut q = self.lock();
            q.clear();
            q.flushing = false;
            q.flow = Ok(gst::FlowSuccess::Ok);
        }
        self.interrupt.set(false);
        pad.start_task(task)
    }

    /// One iteration of the task: the next item, handled without the lock; `run` handles a
    /// batch (runs the graph, pushes the results).
    pub fn step(&self, pad: &gst::Pad, mut run: impl FnMut(J) -> Result<gst::FlowSuccess, gst::FlowError>) {
        let item = {
            let mut q = self.lock();
            while q.items.is_empty() && q.stuck().is_none() {
                q = self.wait(q);
            }
            if q.stuck().is_some() {
                drop(q);
                let _ = pad.pause_task();
                return;
            }
            let item = q.items.pop_front().expect("not empty");
            if matches!(item, Item::Work(_)) {
                q.work -= 1;
            }
            q.busy = true;
            self.changed.notify_all();
            item
        };
        let flow = match item {
            Item::Work(job) => run(job),
            Item::Event(event) => {
                let eos = event.type_() == gst::EventType::Eos;
                if !pad.push_event(event) {
                    gst::debug!(gst::CAT_DEFAULT, obj = pad, "a serialized event was refused downstream");
                }
                // Nothing flows after EOS until a flush.
                if eos {
                    Err(gst::FlowError::Eos)
                } else {
                    Ok(gst::FlowSuccess::Ok)
                }
            }
        };
        let mut q = self.lock();
        q.busy = false;
        if let Err(e) = flow
            && q.flow.is_ok()
        {
            q.flow = Err(e);
        }
        let stop = q.flow.is_err();
        self.changed.notify_all();
        drop(q);
        if stop {
            let _ = pad.pause_task();
        }
    }

    /// FLUSH_START (after it went downstream): drops what is queued, ends every wait, and
    /// pauses the task once the batch it runs (if any) is done.
    pub fn flush_start(&self, pad: &gst::Pad) {
        self.set_flushing();
        let _ = pad.pause_task();
    }

    /// Stops the task for good (PAUSED->READY): like a flush, then joins it.
    pub fn stop(&self, pad: &gst::Pad) {
        self.set_flushing();
        let _ = pad.stop_task();
    }

    /// Drops what is queued, ends every wait and interrupts the batch in progress.
    fn set_flushing(&self) {
        self.interrupt.set(true);
        let mut q = self.lock();
        q.flushing = true;
        q.clear();
        self.changed.notify_all();
    }
}

/// Starts the src pad task of `imp`'s element: each iteration hands the next item of
/// `worker(imp)` to `run(imp, batch)`. The task holds the element and the pad weakly. An error
/// message is posted when the task cannot start.
pub fn start_task<T, J>(
    imp: &T,
    pad: &gst::Pad,
    worker: fn(&T) -> &Worker<J>,
    run: fn(&T, J) -> Result<gst::FlowSuccess, gst::FlowError>,
) -> bool
where
    T: ElementImpl,
    T::Type: Send + Sync,
    J: Send + 'static,
{
    let elem = imp.obj().downgrade();
    let task_pad = pad.downgrade();
    let started = worker(imp).start(pad, move || {
        let Some(pad) = task_pad.upgrade() else { return };
        match elem.upgrade() {
            Some(elem) => {
                let imp = elem.imp();
                worker(imp).step(&pad, |job| run(imp, job));
            }
            None => {
                let _ = pad.pause_task();
            }
        }
    });
    if let Err(e) = &started {
        gst::element_imp_error!(imp, gst::CoreError::Thread, ("cannot start the inference task: {}", e));
    }
    started.is_ok()
}

/// Queues EOS behind the last batches. When the stream already stopped on a flow that no
/// element reported (not linked, not negotiated), says so on the bus as `queue` does: nothing
/// downstream will end the stream.
pub fn queue_eos<T: ElementImpl, J: Send + 'static>(
    imp: &T,
    worker: &Worker<J>,
    eos: gst::Event,
    max_queued: u32,
) -> bool {
    match worker.event(eos, max_queued) {
        Ok(()) => true,
        Err(e) => {
            if matches!(e, gst::FlowError::NotLinked | gst::FlowError::NotNegotiated) {
                gst::element_imp_error!(
                    imp,
                    gst::StreamError::Failed,
                    ("Internal data stream error."),
                    ["streaming stopped, reason {:?}", e]
                );
            }
            false
        }
    }
}
