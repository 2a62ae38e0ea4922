//! How both inference elements hold their graph, as dav1ddec holds its decoder: loaded at
//! NULL->READY (and again at READY->PAUSED when the model settings changed in READY),
//! dropped at READY->NULL, and taken out of the slot while it runs, so that no lock is held
//! while ONNX Runtime works and a property read never waits for a run.

use std::sync::{Mutex, MutexGuard};

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::graph::Graph;
use super::properties::ModelSettings;
use super::remote::Interrupt;
use super::{ExecutionProvider, ModelInfo};

struct Loaded<G> {
    /// The settings it was loaded with.
    key: ModelSettings,
    info: ModelInfo,
    active_provider: ExecutionProvider,
    /// `None` while a streaming thread runs it.
    graph: Option<G>,
    /// Tells a graph put back after a run from one loaded since.
    generation: u64,
}

/// The element's loaded graph (`None` when stopped).
pub(crate) struct GraphSlot<G> {
    inner: Mutex<Option<Loaded<G>>>,
    generation: Mutex<u64>,
    /// Shared with a remote graph: set while the element flushes or stops.
    interrupt: Interrupt,
}

impl<G> Default for GraphSlot<G> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(None),
            generation: Mutex::new(0),
            interrupt: Interrupt::default(),
        }
    }
}

/// The graph is not loaded (element stopped) or already running in another thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable;

impl<G: Graph> GraphSlot<G> {
    fn lock(&self) -> MutexGuard<'_, Option<Loaded<G>>> {
        self.inner.lock().unwrap()
    }

    /// Loads the graph `settings` name unless the one held was loaded with the same
    /// settings; returns what it is. Errors (and a permitted CPU fallback, as a warning)
    /// are posted on the bus from `imp`.
    pub fn ensure<T: ElementImpl>(
        &self,
        imp: &T,
        settings: &ModelSettings,
    ) -> Result<ModelInfo, gst::StateChangeError> {
        // A (re)start: whatever stopped the element before is over.
        self.interrupt.set(false);
        if let Some(l) = self.lock().as_ref().filter(|l| &l.key == settings) {
            return Ok(l.info.clone());
        }
        // Load without the lock: a property read must not wait seconds for ONNX Runtime.
        let model = settings.load(imp, G::ROLE, &self.interrupt).map_err(|e| {
            imp.post_error_message(e.message());
            gst::StateChangeError
        })?;
        let info = model.info.clone();
        let active_provider = model.active_provider;
        let generation = {
            let mut g = self.generation.lock().unwrap();
            *g += 1;
            *g
        };
        *self.lock() = Some(Loaded {
            key: settings.clone(),
            info: info.clone(),
            active_provider,
            graph: Some(G::new(model)),
            generation,
        });
        imp.obj().notify("active-execution-provider");
        Ok(info)
    }

    pub fn info(&self) -> Option<ModelInfo> {
        self.lock().as_ref().map(|l| l.info.clone())
    }

    /// The provider the loaded graph runs on.
    pub fn active_provider(&self) -> Option<ExecutionProvider> {
        self.lock().as_ref().map(|l| l.active_provider)
    }

    /// Takes the graph out, runs `f` on it without any lock held, and puts it back (unless
    /// the slot was emptied or reloaded meanwhile).
    pub fn run<R>(&self, f: impl FnOnce(&mut G) -> R) -> Result<R, Unavailable> {
        let (mut graph, generation) = {
            let mut guard = self.lock();
            let l = guard.as_mut().ok_or(Unavailable)?;
            (l.graph.take().ok_or(Unavailable)?, l.generation)
        };
        let r = f(&mut graph);
        if let Some(l) = self.lock().as_mut().filter(|l| l.generation == generation) {
            l.graph = Some(graph);
        }
        Ok(r)
    }

    /// The flag that cuts a remote graph's retries short, for the element's [`Worker`],
    /// which sets it while it flushes or stops (and waits for the run in progress).
    ///
    /// [`Worker`]: crate::worker::Worker
    pub fn interrupt(&self) -> Interrupt {
        self.interrupt.clone()
    }

    /// A run that failed while this was set failed because of it: a flush, not an error.
    pub fn interrupted(&self) -> bool {
        self.interrupt.is_set()
    }

    /// Drops the graph (READY->NULL).
    pub fn unload(&self) {
        *self.lock() = None;
    }
}
