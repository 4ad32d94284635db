//! ResourceManagerAgent: owns the run's slots and memory budgets and admits every unit.
//!
//! One task owns the budget state; callers send requests over a channel and get an
//! [`AdmissionPermit`] back when their unit fits. Dropping the permit returns its slot
//! and memory. Admission is first-come first-served with a bounded bypass: a later,
//! smaller request may overtake one that does not fit only while the one it overtakes
//! has waited less than `bypass_window`; after that nothing overtakes it, running
//! units drain, and it starts. A request larger than a whole budget is admitted
//! when it would run alone, so nothing waits forever.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{AgentHandle, Health, names};

/// What a unit asks for.
#[derive(Debug, Clone)]
pub struct AdmissionRequest {
    /// Unit id (for diagnostics).
    pub unit: String,
    /// Its layer (for the layer's memory budget).
    pub layer: String,
    /// Memory estimate in MiB.
    pub memory_mb: u64,
}

/// Budgets.
#[derive(Debug, Clone)]
pub struct ResourceSettings {
    /// Global slots.
    pub slots: usize,
    /// Global memory budget, MiB.
    pub memory_budget_mb: Option<u64>,
    /// Memory budget per layer, MiB.
    pub layer_budgets_mb: HashMap<String, u64>,
    /// How long a request that does not fit may be overtaken by smaller ones.
    pub bypass_window: Duration,
}

/// A granted admission. Dropping it returns the resources.
#[derive(Debug)]
pub struct AdmissionPermit {
    id: u64,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Drop for AdmissionPermit {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Release(self.id));
    }
}

/// Budgets in use, for status displays.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    /// Slots in use.
    pub slots_used: usize,
    /// Slots in all.
    pub slots: usize,
    /// Memory admitted, MiB.
    pub memory_admitted_mb: u64,
    /// Global memory budget, MiB.
    pub memory_budget_mb: Option<u64>,
    /// Requests waiting.
    pub waiting: usize,
}

#[derive(Debug)]
enum Msg {
    Admit(AdmissionRequest, oneshot::Sender<AdmissionPermit>),
    Release(u64),
    Usage(oneshot::Sender<Usage>),
}

/// The agent was shut down.
#[derive(Debug, thiserror::Error)]
#[error("the resource manager has stopped")]
pub struct Closed;

/// A cheap, clonable handle to the resource manager.
#[derive(Clone)]
pub struct ResourceHandle {
    tx: mpsc::UnboundedSender<Msg>,
}

impl ResourceHandle {
    /// Wait until the unit fits. Cancel-safe: dropping the future gives up the place.
    pub async fn admit(&self, req: AdmissionRequest) -> Result<AdmissionPermit, Closed> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Admit(req, reply)).map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Current use of the budgets.
    pub async fn usage(&self) -> Result<Usage, Closed> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Usage(reply)).map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }
}

struct Waiting {
    req: AdmissionRequest,
    reply: oneshot::Sender<AdmissionPermit>,
    since: Instant,
}

/// The budget state: pure bookkeeping, driven by the agent's task.
struct Budgets {
    settings: ResourceSettings,
    queue: VecDeque<Waiting>,
    granted: HashMap<u64, AdmissionRequest>,
    next_id: u64,
    memory_used: u64,
    layer_used: HashMap<String, u64>,
}

impl Budgets {
    fn new(settings: ResourceSettings) -> Self {
        Self {
            settings,
            queue: VecDeque::new(),
            granted: HashMap::new(),
            next_id: 0,
            memory_used: 0,
            layer_used: HashMap::new(),
        }
    }

    fn fits(&self, req: &AdmissionRequest) -> bool {
        if self.granted.len() >= self.settings.slots {
            return false;
        }
        if self.granted.is_empty() {
            return true; // alone, anything runs: nothing may wait forever
        }
        let global_ok = self
            .settings
            .memory_budget_mb
            .is_none_or(|b| self.memory_used + req.memory_mb <= b);
        let layer_used = self.layer_used.get(&req.layer).copied().unwrap_or(0);
        let layer_ok = match self.settings.layer_budgets_mb.get(&req.layer) {
            Some(b) => layer_used == 0 || layer_used + req.memory_mb <= *b,
            None => true,
        };
        global_ok && layer_ok
    }

    /// Grant what fits, in order, with the bounded bypass. Returns (id, request, reply).
    fn grant(&mut self, tx: &mpsc::UnboundedSender<Msg>) {
        self.queue.retain(|w| !w.reply.is_closed());
        let mut i = 0;
        let mut blocked_since: Option<Instant> = None;
        while i < self.queue.len() {
            if self.granted.len() >= self.settings.slots {
                break;
            }
            let fits = self.fits(&self.queue[i].req);
            if !fits {
                let since = self.queue[i].since;
                blocked_since = Some(blocked_since.map_or(since, |b: Instant| b.min(since)));
                i += 1;
                continue;
            }
            if let Some(since) = blocked_since
                && since.elapsed() >= self.settings.bypass_window
            {
                break; // an older request has waited long enough: nobody overtakes it
            }
            let w = self.queue.remove(i).expect("index in range");
            self.next_id += 1;
            let id = self.next_id;
            self.memory_used += w.req.memory_mb;
            *self.layer_used.entry(w.req.layer.clone()).or_default() += w.req.memory_mb;
            self.granted.insert(id, w.req);
            // A closed reply drops the permit, which releases it again.
            let _ = w.reply.send(AdmissionPermit { id, tx: tx.clone() });
        }
    }

    fn release(&mut self, id: u64) {
        if let Some(req) = self.granted.remove(&id) {
            self.memory_used -= req.memory_mb;
            if let Some(used) = self.layer_used.get_mut(&req.layer) {
                *used -= req.memory_mb;
            }
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            slots_used: self.granted.len(),
            slots: self.settings.slots,
            memory_admitted_mb: self.memory_used,
            memory_budget_mb: self.settings.memory_budget_mb,
            waiting: self.queue.len(),
        }
    }
}

/// Start the agent.
pub fn start(settings: ResourceSettings) -> (ResourceHandle, AgentHandle) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let health = Health::new(names::RESOURCES);
    let shutdown = CancellationToken::new();
    let handle = ResourceHandle { tx: tx.clone() };
    let task_health = Arc::clone(&health);
    let task_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let mut budgets = Budgets::new(settings);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        task_health.heartbeat();
        loop {
            tokio::select! {
                _ = task_shutdown.cancelled() => break,
                _ = tick.tick() => {
                    task_health.heartbeat();
                    budgets.grant(&tx); // the bypass window may have closed
                }
                msg = rx.recv() => match msg {
                    Some(Msg::Admit(req, reply)) => {
                        budgets.queue.push_back(Waiting { req, reply, since: Instant::now() });
                        budgets.grant(&tx);
                    }
                    Some(Msg::Release(id)) => {
                        budgets.release(id);
                        budgets.grant(&tx);
                    }
                    Some(Msg::Usage(reply)) => {
                        let _ = reply.send(budgets.usage());
                    }
                    None => break,
                },
            }
        }
    });
    (
        handle,
        AgentHandle {
            health,
            shutdown,
            task,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(slots: usize, memory: Option<u64>) -> ResourceSettings {
        ResourceSettings {
            slots,
            memory_budget_mb: memory,
            layer_budgets_mb: HashMap::new(),
            bypass_window: Duration::from_millis(200),
        }
    }

    fn req(unit: &str, mb: u64) -> AdmissionRequest {
        AdmissionRequest {
            unit: unit.into(),
            layer: "l".into(),
            memory_mb: mb,
        }
    }

    #[tokio::test]
    async fn slots_bound_concurrency_and_release_on_drop() {
        let (rm, agent) = start(settings(2, None));
        let a = rm.admit(req("a", 0)).await.unwrap();
        let _b = rm.admit(req("b", 0)).await.unwrap();
        let c = rm.admit(req("c", 0));
        tokio::pin!(c);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut c)
                .await
                .is_err(),
            "third unit waits for a slot"
        );
        drop(a);
        let _c = c.await.unwrap();
        assert_eq!(rm.usage().await.unwrap().slots_used, 2);
        agent.stop().await;
    }

    #[tokio::test]
    async fn memory_budget_limits_admission() {
        let (rm, agent) = start(settings(8, Some(700)));
        let a = rm.admit(req("a", 300)).await.unwrap();
        let _b = rm.admit(req("b", 300)).await.unwrap();
        let c = rm.admit(req("c", 300));
        tokio::pin!(c);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut c)
                .await
                .is_err()
        );
        drop(a);
        let _c = c.await.unwrap();
        assert_eq!(rm.usage().await.unwrap().memory_admitted_mb, 600);
        agent.stop().await;
    }

    #[tokio::test]
    async fn oversized_unit_runs_alone_and_large_unit_is_not_starved() {
        let (rm, agent) = start(settings(4, Some(1000)));
        let small = rm.admit(req("s0", 100)).await.unwrap();
        let big = tokio::spawn({
            let rm = rm.clone();
            async move { rm.admit(req("big", 5000)).await.map(|_| ()) }
        });
        // Small units keep arriving; after the bypass window they stop overtaking.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let late = rm.admit(req("late", 100));
        tokio::pin!(late);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut late)
                .await
                .is_err(),
            "no overtaking after the window"
        );
        drop(small);
        big.await.unwrap().unwrap();
        late.await.unwrap();
        agent.stop().await;
    }
}
