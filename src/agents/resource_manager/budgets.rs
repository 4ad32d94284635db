//! The admission bookkeeping: which waiting requests fit which budgets, in which order.
//!
//! Pure state, driven by the agent's task (no I/O, no clock but `Instant`s handed in),
//! so the rules are tested here directly.
//!
//! - A request fits when a global slot is free, its layer has a slot free, and its
//!   memory estimate fits the global budget and its layer's budget, counting every
//!   running unit at its *charge*: the larger of its estimate and the most memory its
//!   tree was measured using (a unit that outgrows its estimate takes the budget it
//!   really uses).
//! - A unit alone runs whatever its size (alone in the run for the global budget, alone
//!   in its layer for the layer's), so nothing waits forever.
//! - Exclusions: a unit that must run alone waits until nothing runs, and while it runs
//!   nothing else is admitted (as for the global budget, it holds later requests back
//!   once its bypass window has passed, so it is not starved); a unit whose category or
//!   layer conflicts with a running unit's (or that is heavy in the same way) waits for
//!   it without holding anyone back.
//! - Under memory pressure (`throttled`) nothing is admitted while anything runs.
//! - Foreground first: every waiting foreground request is considered before any
//!   background one; a background request is granted only while no foreground request
//!   waits for a global slot or the global memory budget, and while fewer than
//!   `background_slots` background units run. Background units therefore use only the
//!   slots the foreground leaves idle, and never all of them when the limit is below
//!   the slot count.
//! - Order: first come, first served, with a bounded bypass. A later request may
//!   overtake one that does not fit only while the one it would overtake has waited
//!   less than the bypass window. After that, nothing that competes for the budget it
//!   waits for overtakes it: a request blocked by the global budget holds back every
//!   later request; one blocked only by its layer's budget holds back its own layer,
//!   and other layers go on (they cannot help it, and must not stall behind it).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

#[cfg(test)]
use super::Exclusion;
use super::{AdmissionRequest, LayerBudget, Usage};

/// A request that waits, with what to do once it is granted.
pub(super) struct Waiting<R> {
    pub req: AdmissionRequest,
    pub reply: R,
    pub since: Instant,
}

/// A granted request.
#[derive(Debug, Clone)]
pub(super) struct Grant {
    pub req: AdmissionRequest,
    /// MiB counted against the budgets: max(estimate, peak measured while running).
    pub charge_mb: u64,
}

/// Which budget keeps a request waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Block {
    /// The global slots or memory budget, or memory pressure.
    Global,
    /// Only its layer's slots or memory budget.
    Layer,
    /// Only the background slots (a background request).
    Background,
    /// A running unit it conflicts with.
    Conflict,
}

/// The budgets and who holds them.
pub(super) struct Budgets<R> {
    pub slots: usize,
    pub memory_budget_mb: Option<u64>,
    pub layers: HashMap<String, LayerBudget>,
    pub bypass_window: Duration,
    pub queue: VecDeque<Waiting<R>>,
    pub granted: HashMap<u64, Grant>,
    /// Admission paused by memory pressure.
    pub throttled: bool,
    /// At most this many background units at once.
    pub background_slots: usize,
    next_id: u64,
}

impl<R> Budgets<R> {
    pub fn new(
        slots: usize,
        memory_budget_mb: Option<u64>,
        layers: HashMap<String, LayerBudget>,
        bypass_window: Duration,
    ) -> Self {
        Self {
            slots: slots.max(1),
            memory_budget_mb,
            layers,
            bypass_window,
            queue: VecDeque::new(),
            granted: HashMap::new(),
            throttled: false,
            background_slots: usize::MAX,
            next_id: 0,
        }
    }

    /// Limit background units to `slots` at once (None: no separate limit).
    pub fn with_background_slots(mut self, slots: Option<usize>) -> Self {
        self.background_slots = slots.unwrap_or(usize::MAX).max(1);
        self
    }

    fn background_running(&self) -> usize {
        self.granted.values().filter(|g| g.req.background).count()
    }

    /// Memory charged against the global budget, MiB.
    pub fn memory_used(&self) -> u64 {
        self.granted.values().map(|g| g.charge_mb).sum()
    }

    /// Units running in `layer` and the memory they are charged, MiB.
    fn layer_use(&self, layer: &str) -> (usize, u64) {
        self.granted
            .values()
            .filter(|g| g.req.layer == layer)
            .fold((0, 0), |(n, mb), g| (n + 1, mb + g.charge_mb))
    }

    /// Whether `req` fits now, and if not, which budget it waits for.
    pub fn fits(&self, req: &AdmissionRequest) -> Result<(), Block> {
        if self.granted.len() >= self.slots {
            return Err(Block::Global);
        }
        if req.background && self.background_running() >= self.background_slots {
            return Err(Block::Background);
        }
        if self.granted.is_empty() {
            return Ok(()); // alone, anything runs: nothing may wait forever
        }
        if req.exclusion.alone || self.granted.values().any(|g| g.req.exclusion.alone) {
            return Err(Block::Global);
        }
        if self.granted.values().any(|g| g.req.conflicts_with(req)) {
            return Err(Block::Conflict);
        }
        if self.throttled {
            return Err(Block::Global);
        }
        if let Some(budget) = self.memory_budget_mb
            && self.memory_used() + req.memory_mb > budget
        {
            return Err(Block::Global);
        }
        let Some(layer) = self.layers.get(&req.layer) else {
            return Ok(());
        };
        let (running, used) = self.layer_use(&req.layer);
        if running == 0 {
            return Ok(()); // alone in its layer
        }
        if layer.slots.is_some_and(|s| running >= s) {
            return Err(Block::Layer);
        }
        if layer.memory_mb.is_some_and(|b| used + req.memory_mb > b) {
            return Err(Block::Layer);
        }
        Ok(())
    }

    /// Grant what fits, in order, with the bounded bypass. `send` hands a grant id to
    /// the waiter; it returns false when the waiter is gone (the grant is then undone).
    pub fn grant(&mut self, now: Instant, mut send: impl FnMut(R, u64) -> bool)
    where
        R: Closable,
    {
        self.queue.retain(|w| !w.reply.is_closed());
        self.grant_pass(now, false, &mut send);
        // Background requests only get what no waiting foreground request can use.
        let foreground_blocked = self
            .queue
            .iter()
            .any(|w| !w.req.background && self.fits(&w.req) == Err(Block::Global));
        if !foreground_blocked {
            self.grant_pass(now, true, &mut send);
        }
    }

    /// One pass over the waiting requests of one kind (foreground or background).
    fn grant_pass(
        &mut self,
        now: Instant,
        background: bool,
        send: &mut impl FnMut(R, u64) -> bool,
    ) {
        let mut hold_all = false;
        let mut held_layers: HashSet<String> = HashSet::new();
        let mut i = 0;
        while i < self.queue.len() && !hold_all && self.granted.len() < self.slots {
            let w = &self.queue[i];
            if w.req.background != background {
                i += 1;
                continue;
            }
            let held = held_layers.contains(&w.req.layer);
            match self.fits(&w.req) {
                Err(block) => {
                    if now.saturating_duration_since(w.since) >= self.bypass_window {
                        match block {
                            Block::Global => hold_all = true,
                            Block::Layer => {
                                held_layers.insert(w.req.layer.clone());
                            }
                            Block::Background | Block::Conflict => {}
                        }
                    }
                    i += 1;
                }
                Ok(()) if held => i += 1,
                Ok(()) => {
                    let w = self.queue.remove(i).expect("index in range");
                    self.next_id += 1;
                    let id = self.next_id;
                    let charge_mb = w.req.memory_mb;
                    self.granted.insert(
                        id,
                        Grant {
                            req: w.req,
                            charge_mb,
                        },
                    );
                    if !send(w.reply, id) {
                        self.granted.remove(&id);
                    }
                }
            }
        }
    }

    /// Return a grant's slot and memory.
    pub fn release(&mut self, id: u64) {
        self.granted.remove(&id);
    }

    /// A running unit was measured at `mb`: its charge never stays below what it uses.
    pub fn measured(&mut self, unit: &str, mb: u64) {
        if let Some(g) = self.granted.values_mut().find(|g| g.req.unit == unit) {
            g.charge_mb = g.charge_mb.max(mb);
        }
    }

    pub fn usage(&self) -> Usage {
        Usage {
            slots_used: self.granted.len(),
            slots: self.slots,
            memory_admitted_mb: self.memory_used(),
            memory_budget_mb: self.memory_budget_mb,
            waiting: self.queue.len(),
            throttled: self.throttled,
        }
    }
}

/// A waiter that may have given up.
pub(super) trait Closable {
    fn is_closed(&self) -> bool;
}

impl<T> Closable for tokio::sync::oneshot::Sender<T> {
    fn is_closed(&self) -> bool {
        tokio::sync::oneshot::Sender::is_closed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiter in tests: its name, recorded when granted.
    struct Name(&'static str);
    impl Closable for Name {
        fn is_closed(&self) -> bool {
            false
        }
    }

    fn req(unit: &str, layer: &str, mb: u64) -> AdmissionRequest {
        AdmissionRequest {
            category: unit.to_string(),
            exclusion: Exclusion::default(),
            background: false,
            unit: unit.into(),
            layer: layer.into(),
            memory_mb: mb,
        }
    }

    struct Bench {
        b: Budgets<Name>,
        t0: Instant,
        ids: HashMap<&'static str, u64>,
    }

    impl Bench {
        fn new(
            slots: usize,
            memory: Option<u64>,
            layers: &[(&str, Option<usize>, Option<u64>)],
        ) -> Self {
            let layers = layers
                .iter()
                .map(|(n, s, m)| {
                    (
                        n.to_string(),
                        LayerBudget {
                            slots: *s,
                            memory_mb: *m,
                        },
                    )
                })
                .collect();
            Bench {
                b: Budgets::new(slots, memory, layers, Duration::from_millis(1000)),
                t0: Instant::now(),
                ids: HashMap::new(),
            }
        }

        /// Queue `unit` at `at_ms`.
        fn ask(&mut self, at_ms: u64, name: &'static str, layer: &str, mb: u64) {
            self.b.queue.push_back(Waiting {
                req: req(name, layer, mb),
                reply: Name(name),
                since: self.t0 + Duration::from_millis(at_ms),
            });
        }

        /// Run admission at `at_ms`; returns the names granted.
        fn grant(&mut self, at_ms: u64) -> Vec<&'static str> {
            let mut got = Vec::new();
            self.b
                .grant(self.t0 + Duration::from_millis(at_ms), |w, id| {
                    got.push((w.0, id));
                    true
                });
            for (n, id) in &got {
                self.ids.insert(n, *id);
            }
            got.into_iter().map(|(n, _)| n).collect()
        }

        fn done(&mut self, name: &str) {
            let id = self.ids[name];
            self.b.release(id);
        }

        /// Queue a background layer's unit at `at_ms`.
        fn ask_background(&mut self, at_ms: u64, name: &'static str) {
            let mut r = req(name, "e2e", 0);
            r.background = true;
            self.b.queue.push_back(Waiting {
                req: r,
                reply: Name(name),
                since: self.t0 + Duration::from_millis(at_ms),
            });
        }
    }

    #[test]
    fn foreground_goes_first_and_background_keeps_a_slot_free() {
        let mut b = Bench::new(2, None, &[]);
        b.b = std::mem::replace(
            &mut b.b,
            Budgets::new(1, None, HashMap::new(), Duration::ZERO),
        )
        .with_background_slots(Some(1));
        // Four background units ask before the fast layer's unit: one takes a slot, the
        // other slot stays for the foreground.
        for (i, n) in ["bg1", "bg2", "bg3", "bg4"].into_iter().enumerate() {
            b.ask_background(i as u64, n);
        }
        assert_eq!(b.grant(5), vec!["bg1"]);
        b.ask(6, "fast", "fast", 0);
        assert_eq!(b.grant(6), vec!["fast"]);
        // With both slots taken, a freed slot goes to a waiting foreground unit first.
        b.ask(7, "fast2", "fast", 0);
        b.ask_background(7, "bg5");
        b.done("bg1");
        assert_eq!(b.grant(8), vec!["fast2"]);
        b.done("fast");
        b.done("fast2");
        assert_eq!(b.grant(9), vec!["bg2"], "one background unit at a time");
    }

    impl Bench {
        /// Queue a unit of category `cat` with `exclusion` at `at_ms`.
        fn ask_with(&mut self, at_ms: u64, name: &'static str, cat: &str, exclusion: Exclusion) {
            let mut r = req(name, "l", 0);
            r.category = cat.into();
            r.exclusion = exclusion;
            self.b.queue.push_back(Waiting {
                req: r,
                reply: Name(name),
                since: self.t0 + Duration::from_millis(at_ms),
            });
        }
    }

    #[test]
    fn exclusive_units_run_alone_and_conflicting_categories_never_overlap() {
        let alone = Exclusion {
            alone: true,
            ..Exclusion::default()
        };
        let mut t = Bench::new(8, None, &[]);
        t.ask_with(0, "a1", "a", Exclusion::default());
        t.ask_with(0, "solo", "e2e", alone.clone());
        t.ask_with(0, "a2", "a", Exclusion::default());
        assert_eq!(t.grant(0), vec!["a1", "a2"], "the exclusive unit waits");
        t.done("a1");
        t.done("a2");
        t.ask_with(1, "a3", "a", Exclusion::default());
        assert_eq!(t.grant(1), vec!["solo"]);
        assert!(t.grant(2).is_empty(), "nothing runs beside it");
        t.done("solo");
        assert_eq!(t.grant(3), vec!["a3"]);
        t.done("a3");

        // `conflicts` (either side) and the same heavy kind keep two categories apart.
        let conflicts = |c: &[&str]| Exclusion {
            categories: c.iter().map(|s| s.to_string()).collect(),
            ..Exclusion::default()
        };
        let heavy = Exclusion {
            heavy: vec!["memory".into()],
            ..Exclusion::default()
        };
        t.ask_with(10, "db1", "database", conflicts(&["performance"]));
        t.ask_with(10, "db2", "database", conflicts(&["performance"]));
        t.ask_with(10, "perf", "performance", heavy.clone());
        t.ask_with(10, "agent", "agent", heavy.clone());
        t.ask_with(10, "other", "unit", Exclusion::default());
        assert_eq!(
            t.grant(10),
            vec!["db1", "db2", "agent", "other"],
            "a category runs beside itself; performance waits for database and agent"
        );
        t.done("db1");
        t.done("db2");
        assert!(t.grant(11).is_empty(), "agent is heavy in the same way");
        t.done("agent");
        assert_eq!(t.grant(12), vec!["perf"]);
    }

    #[test]
    fn memory_budget_admits_what_fits_and_releases() {
        let mut t = Bench::new(8, Some(700), &[]);
        for n in ["a", "b", "c"] {
            t.ask(0, n, "l", 300);
        }
        assert_eq!(t.grant(0), vec!["a", "b"]);
        assert_eq!(t.b.memory_used(), 600);
        t.done("a");
        assert_eq!(t.grant(10), vec!["c"]);
    }

    #[test]
    fn oversized_unit_runs_alone() {
        let mut t = Bench::new(4, Some(1000), &[("l", None, Some(100))]);
        t.ask(0, "huge", "l", 5000);
        assert_eq!(t.grant(0), vec!["huge"], "alone, anything runs");
        t.ask(0, "small", "l", 1);
        assert!(t.grant(1).is_empty());
    }

    #[test]
    fn measured_use_raises_the_charge() {
        let mut t = Bench::new(8, Some(1000), &[]);
        t.ask(0, "a", "l", 100);
        t.ask(0, "b", "l", 100);
        assert_eq!(t.grant(0), vec!["a", "b"]);
        t.b.measured("a", 850);
        t.b.measured("b", 50); // below its estimate: the estimate stays
        assert_eq!(t.b.memory_used(), 950);
        t.ask(1, "c", "l", 100);
        assert!(t.grant(1).is_empty(), "a uses 850 MiB: c does not fit");
        t.done("a");
        assert_eq!(t.grant(2), vec!["c"]);
    }

    #[test]
    fn layer_slots_and_memory_bound_their_layer_only() {
        let mut t = Bench::new(8, None, &[("bg", Some(1), None), ("mem", None, Some(500))]);
        t.ask(0, "bg1", "bg", 0);
        t.ask(0, "bg2", "bg", 0);
        t.ask(0, "m1", "mem", 300);
        t.ask(0, "m2", "mem", 300);
        t.ask(0, "fg", "fg", 0);
        assert_eq!(t.grant(0), vec!["bg1", "m1", "fg"]);
        t.done("bg1");
        t.done("m1");
        assert_eq!(t.grant(1), vec!["bg2", "m2"]);
    }

    #[test]
    fn throttled_admits_only_when_nothing_runs() {
        let mut t = Bench::new(8, None, &[]);
        t.b.throttled = true;
        t.ask(0, "a", "l", 0);
        t.ask(0, "b", "l", 0);
        assert_eq!(t.grant(0), vec!["a"], "progress: one at a time");
        assert!(t.grant(1).is_empty());
        t.b.throttled = false;
        assert_eq!(t.grant(2), vec!["b"]);
    }

    #[test]
    fn large_request_is_not_starved_after_the_bypass_window() {
        let mut t = Bench::new(4, Some(1000), &[]);
        t.ask(0, "s1", "l", 200);
        t.ask(0, "s2", "l", 200);
        assert_eq!(t.grant(0), vec!["s1", "s2"]);
        t.ask(10, "big", "l", 700);
        t.ask(20, "s3", "l", 200);
        assert_eq!(
            t.grant(20),
            vec!["s3"],
            "inside the window small ones overtake"
        );
        t.done("s1");
        t.ask(1500, "s4", "l", 200);
        assert!(
            t.grant(1500).is_empty(),
            "past the window nobody overtakes big"
        );
        t.done("s2");
        assert_eq!(
            t.grant(1600),
            vec!["big"],
            "s3's 200 + big's 700 fit; s4 does not"
        );
    }

    #[test]
    fn big_starts_once_the_running_units_drain() {
        let mut t = Bench::new(4, Some(1000), &[]);
        for n in ["s1", "s2", "s3"] {
            t.ask(0, n, "l", 200);
        }
        assert_eq!(t.grant(0).len(), 3);
        t.ask(10, "big", "l", 700);
        t.ask(2000, "s4", "l", 200);
        t.done("s1");
        assert!(t.grant(2000).is_empty(), "600 + 700 > 1000, s4 held back");
        t.done("s2");
        assert_eq!(t.grant(2100), vec!["big"], "200 + 700 fits; s4 still waits");
        assert!(t.grant(2200).is_empty());
        t.done("s3");
        assert_eq!(t.grant(2300), vec!["s4"]);
    }

    #[test]
    fn a_layer_blocked_request_does_not_stall_other_layers() {
        let mut t = Bench::new(8, None, &[("bg", Some(1), None)]);
        t.ask(0, "bg1", "bg", 0);
        assert_eq!(t.grant(0), vec!["bg1"]);
        t.ask(0, "bg2", "bg", 0);
        t.ask(5000, "fg1", "fg", 0);
        t.ask(5000, "bg3", "bg", 0);
        assert_eq!(
            t.grant(5000),
            vec!["fg1"],
            "bg2 waits for its layer's slot only: fg goes on, bg3 stays behind bg2"
        );
    }
}
