//! [`RemoteEngine`]: the [`Engine`] that sends each batch to an inference server.

use super::Interrupt;
use super::kserve::Client;
use crate::runtime::engine::{DType, Engine, EngineError, Tensor};

/// One model on one server; each [`Engine::run`] is one KServe v2 inference request
/// (retried, with a warning each time, for transport and server-side failures).
pub struct RemoteEngine {
    client: Client,
    model: String,
    retries: u32,
    warn: Box<dyn Fn(&str) + Send>,
    interrupt: Interrupt,
}

impl RemoteEngine {
    pub fn new(
        client: Client,
        model: String,
        retries: u32,
        warn: Box<dyn Fn(&str) + Send>,
        interrupt: Interrupt,
    ) -> Self {
        Self {
            client,
            model,
            retries,
            warn,
            interrupt,
        }
    }
}

impl Engine for RemoteEngine {
    fn run(&mut self, inputs: Vec<(&str, Tensor)>, outputs: &[(&str, DType)]) -> Result<Vec<Tensor>, EngineError> {
        super::with_retries(self.retries, &*self.warn, &self.interrupt, || {
            self.client.infer(&self.model, &inputs, outputs)
        })
        .map_err(|e| {
            let tries = if self.interrupt.is_set() {
                " (retries cut short by a flush or stop)".to_string()
            } else if self.retries > 0 && e.retryable() {
                format!(" (after {} retries)", self.retries)
            } else {
                String::new()
            };
            EngineError::Remote(format!("model '{}': {e}{tries}", self.model))
        })
    }
}
