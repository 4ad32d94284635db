//! The agent end to end with a scripted probe: admission, limits, pressure, degradation.

use std::sync::Mutex;

use super::sampler::SystemSample;
use super::*;
use crate::event::HealthStatus;

fn settings(slots: usize, memory: Option<u64>) -> ResourceSettings {
    ResourceSettings {
        background_slots: None,
        slots,
        memory_budget_mb: memory,
        layers: HashMap::new(),
        bypass_window: Duration::from_millis(200),
        sample_interval: Duration::from_millis(10),
        memory_pressure_percent: 10.0,
    }
}

fn req(unit: &str, mb: u64) -> AdmissionRequest {
    AdmissionRequest {
        category: unit.to_string(),
        exclusion: Default::default(),
        background: false,
        unit: unit.into(),
        layer: "l".into(),
        memory_mb: mb,
    }
}

/// What the scripted probe reports: system memory and each group's RSS.
#[derive(Default)]
struct Script {
    total_mb: u64,
    available_mb: u64,
    trees: HashMap<u32, u64>,
    fail: Option<String>,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<Script>>);

impl Fake {
    fn new() -> Self {
        Fake(Arc::new(Mutex::new(Script {
            total_mb: 1000,
            available_mb: 900,
            ..Script::default()
        })))
    }
    fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.0.lock().unwrap());
    }
    fn boxed(&self) -> Result<Box<dyn Probe>, String> {
        Ok(Box::new(self.clone()))
    }
}

impl Probe for Fake {
    fn system(&mut self) -> Result<SystemSample, String> {
        let s = self.0.lock().unwrap();
        if let Some(why) = &s.fail {
            return Err(why.clone());
        }
        Ok(SystemSample {
            total_mb: s.total_mb,
            available_mb: s.available_mb,
            cpu_percent: 12.5,
        })
    }
    fn tree_rss_mb(&mut self, pgid: u32, _token: &str) -> Option<u64> {
        self.0.lock().unwrap().trees.get(&pgid).copied()
    }
}

/// Wait (bounded) for the first event of `type_name`.
async fn next_of(rx: &mut crate::bus::Subscription, type_name: &str) -> Arc<crate::event::Event> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = rx.recv().await.expect("bus open");
            if e.kind.type_name() == type_name {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {type_name} event"))
}

async fn pending<F: std::future::Future + Unpin>(f: &mut F) -> bool {
    tokio::time::timeout(Duration::from_millis(60), f)
        .await
        .is_err()
}

#[tokio::test]
async fn slots_bound_concurrency_and_release_on_drop() {
    let bus = EventBus::new("t", None);
    let (rm, agent) = start_with_probe(settings(2, None), &bus, Fake::new().boxed());
    let a = rm.admit(req("a", 0)).await.unwrap();
    let _b = rm.admit(req("b", 0)).await.unwrap();
    let c = rm.admit(req("c", 0));
    tokio::pin!(c);
    assert!(pending(&mut c).await, "third unit waits for a slot");
    drop(a);
    let _c = c.await.unwrap();
    assert_eq!(rm.usage().await.unwrap().slots_used, 2);
    agent.stop().await;
}

#[tokio::test]
async fn memory_budget_limits_admission() {
    let bus = EventBus::new("t", None);
    let (rm, agent) = start_with_probe(settings(8, Some(700)), &bus, Fake::new().boxed());
    let a = rm.admit(req("a", 300)).await.unwrap();
    let _b = rm.admit(req("b", 300)).await.unwrap();
    let c = rm.admit(req("c", 300));
    tokio::pin!(c);
    assert!(pending(&mut c).await);
    drop(a);
    let _c = c.await.unwrap();
    assert_eq!(rm.usage().await.unwrap().memory_admitted_mb, 600);
    agent.stop().await;
}

#[tokio::test]
async fn large_unit_is_not_starved_by_small_ones() {
    let bus = EventBus::new("t", None);
    let (rm, agent) = start_with_probe(settings(4, Some(1000)), &bus, Fake::new().boxed());
    let small = rm.admit(req("s0", 100)).await.unwrap();
    let big = tokio::spawn({
        let rm = rm.clone();
        async move { rm.admit(req("big", 5000)).await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = rm.admit(req("late", 100));
    tokio::pin!(late);
    assert!(pending(&mut late).await, "no overtaking after the window");
    drop(small);
    big.await.unwrap().unwrap();
    late.await.unwrap();
    agent.stop().await;
}

#[tokio::test]
async fn unit_over_its_limit_is_stopped_and_its_peak_reported() {
    let bus = EventBus::new("t", None);
    let mut rx = bus.subscribe();
    let fake = Fake::new();
    let (rm, agent) = start_with_probe(settings(4, Some(1000)), &bus, fake.boxed());
    let _permit = rm.admit(req("u", 100)).await.unwrap();
    let stop = StopHandle::new();
    let tracker = rm.tracker("u", Some(200), &stop);
    fake.set(|s| {
        s.trees.insert(42, 150);
    });
    tracker.spawned(42, "tok");
    let sample = next_of(&mut rx, "resource_sample").await;
    let EventKind::ResourceSample {
        running,
        used_memory_mb,
        available_memory_mb,
        ..
    } = sample.kind
    else {
        unreachable!()
    };
    assert_eq!(
        (running, used_memory_mb, available_memory_mb),
        (1, 150, 900)
    );
    assert_eq!(stop.reason(), None, "under the limit");
    assert_eq!(
        rm.usage().await.unwrap().memory_admitted_mb,
        150,
        "charged what it uses"
    );
    fake.set(|s| {
        s.trees.insert(42, 450);
    });
    let reason = tokio::time::timeout(Duration::from_secs(5), stop.stopped())
        .await
        .expect("stopped");
    assert_eq!(
        reason,
        StopReason::MemoryLimit {
            limit_mb: 200,
            observed_mb: 450
        }
    );
    fake.set(|s| {
        s.trees.insert(42, 100);
    });
    next_of(&mut rx, "resource_sample").await;
    assert_eq!(
        tracker.finish().await,
        Some(450),
        "the peak, not the last sample"
    );
    agent.stop().await;
}

#[tokio::test]
async fn memory_pressure_pauses_and_resumes_admission() {
    let bus = EventBus::new("t", None);
    let mut rx = bus.subscribe();
    let fake = Fake::new();
    let (rm, agent) = start_with_probe(settings(4, None), &bus, fake.boxed());
    let first = rm.admit(req("a", 0)).await.unwrap();
    fake.set(|s| s.available_mb = 50); // 5% < 10%
    let e = next_of(&mut rx, "resource_throttled").await;
    assert!(format!("{:?}", e.kind).contains("5.0%"), "{:?}", e.kind);
    assert!(rm.usage().await.unwrap().throttled);
    let b = rm.admit(req("b", 0));
    tokio::pin!(b);
    assert!(pending(&mut b).await, "paused while a unit runs");
    fake.set(|s| s.available_mb = 500);
    next_of(&mut rx, "resource_resumed").await;
    let _b = b.await.unwrap();
    drop(first);
    agent.stop().await;
}

#[tokio::test]
async fn unavailable_sampling_degrades_to_slot_and_estimate_limits() {
    let bus = EventBus::new("t", None);
    let (rm, agent) = start_with_probe(settings(2, Some(500)), &bus, Err("no /proc".into()));
    let a = rm.admit(req("a", 300)).await.unwrap();
    let b = rm.admit(req("b", 300));
    tokio::pin!(b);
    assert!(pending(&mut b).await, "declared estimates still count");
    drop(a);
    let _b = b.await.unwrap();
    let report = agent.health.check(Duration::from_secs(5));
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.last_error.as_deref(), Some("no /proc"));
    let stop = StopHandle::new();
    let t = rm.tracker("b", Some(1), &stop);
    t.spawned(7, "tok");
    assert_eq!(t.finish().await, None, "nothing measured");
    assert_eq!(stop.reason(), None, "nothing stopped");
    agent.stop().await;
}

#[tokio::test]
async fn a_failing_sample_degrades_and_lifts_a_pause() {
    let bus = EventBus::new("t", None);
    let mut rx = bus.subscribe();
    let fake = Fake::new();
    let (rm, agent) = start_with_probe(settings(4, None), &bus, fake.boxed());
    let _a = rm.admit(req("a", 0)).await.unwrap();
    fake.set(|s| s.available_mb = 10);
    next_of(&mut rx, "resource_throttled").await;
    fake.set(|s| s.fail = Some("meminfo vanished".into()));
    next_of(&mut rx, "resource_resumed").await;
    let _b = rm.admit(req("b", 0)).await.unwrap();
    assert_eq!(
        agent.health.check(Duration::from_secs(5)).status,
        HealthStatus::Degraded
    );
    agent.stop().await;
}

#[tokio::test]
async fn layer_budgets_apply_to_their_layer() {
    let bus = EventBus::new("t", None);
    let mut s = settings(8, None);
    s.layers.insert(
        "bg".into(),
        LayerBudget {
            slots: Some(1),
            memory_mb: None,
        },
    );
    let (rm, agent) = start_with_probe(s, &bus, Fake::new().boxed());
    let layer_req = |unit: &str, layer: &str| AdmissionRequest {
        category: unit.to_string(),
        exclusion: Default::default(),
        background: false,
        unit: unit.into(),
        layer: layer.into(),
        memory_mb: 0,
    };
    let _bg1 = rm.admit(layer_req("bg1", "bg")).await.unwrap();
    let bg2 = rm.admit(layer_req("bg2", "bg"));
    tokio::pin!(bg2);
    assert!(pending(&mut bg2).await, "one slot for layer bg");
    let _fg = rm.admit(layer_req("fg", "fg")).await.unwrap();
    agent.stop().await;
}

#[test]
fn publish_rate_is_bounded() {
    assert_eq!(publish_every(Duration::from_millis(250)), 1);
    assert_eq!(publish_every(Duration::from_millis(1000)), 1);
    assert_eq!(publish_every(Duration::from_millis(50)), 5);
    assert_eq!(publish_every(Duration::from_millis(100)), 3);
}
