//! Many endpoints behind one client (native only): requests go to the endpoint with the fewest
//! outstanding tokens among those with a free slot (`in_flight` each, set or probed); an endpoint that fails
//! (after its client's own retries) is taken out of rotation by a circuit breaker, probed again
//! after a pause (one request: half-open), and dropped from the run after `max_probes` failed
//! probes in a row. The caller re-routes the failed work: requests are at-least-once.

use crate::{RemoteError, RemoteScorer};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When an endpoint leaves the rotation and comes back.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Failed requests in a row (each after the client's retries) that open the breaker.
    pub failures_to_open: u32,
    /// How long an open breaker keeps the endpoint out before one probe request.
    pub open_for: Duration,
    /// Failed probes in a row after which the endpoint is out for the rest of the run.
    pub max_probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self { failures_to_open: 1, open_for: Duration::from_secs(5), max_probes: 3 }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        probes_failed: u32,
    },
    /// One probe request is out.
    HalfOpen {
        probes_failed: u32,
    },
    /// Out of the run.
    Dead,
}

/// One endpoint's load and health.
#[derive(Debug)]
struct Slot {
    /// Requests this endpoint may have out at once.
    in_flight: usize,
    requests: usize,
    tokens: usize,
    breaker: Breaker,
    last_error: Option<String>,
    scored: usize,
    busy: Duration,
}

/// What the run did with each endpoint, for the closing report.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberReport {
    pub name: String,
    pub sequences: usize,
    /// Time with at least one request out would be the exact busy share; this is the sum of
    /// request times, divided by `in_flight` (an upper bound of the share when requests overlap).
    pub busy: Duration,
    pub in_flight: usize,
    /// Out of the run at the end, and the last error it gave.
    pub dead: bool,
    pub last_error: Option<String>,
}

/// What `Fleet::probe_in_flight` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub in_flight: usize,
    /// (requests at once, requests per second).
    pub rates: Vec<(usize, f64)>,
    /// The probe failed (the endpoint gets the fallback).
    pub failed: Option<String>,
}

/// The endpoints of a run.
pub struct Fleet {
    members: Vec<(String, RemoteScorer)>,
    policy: BreakerPolicy,
    slots: Mutex<Vec<Slot>>,
    changed: tokio::sync::Notify,
}

/// An endpoint taken for one request; report how it went with `done` or `failed` (dropping it
/// unreported counts as a failure, so a cancelled request frees its slot).
pub struct Lease {
    fleet: Arc<Fleet>,
    index: usize,
    tokens: usize,
    started: Instant,
    reported: bool,
}

impl Lease {
    pub fn scorer(&self) -> &RemoteScorer {
        &self.fleet.members[self.index].1
    }

    /// The endpoint's name as given (without credentials), for `scored_by`.
    pub fn name(&self) -> &str {
        &self.fleet.members[self.index].0
    }

    pub fn done(mut self, sequences: usize) {
        self.reported = true;
        self.fleet.release(self.index, self.tokens, self.started.elapsed(), Ok(sequences));
    }

    pub fn failed(mut self, e: &RemoteError) {
        self.reported = true;
        self.fleet.release(self.index, self.tokens, self.started.elapsed(), Err(e.to_string()));
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.reported {
            self.fleet.release(self.index, self.tokens, self.started.elapsed(), Err("request abandoned".into()));
        }
    }
}

impl Fleet {
    /// `members`: (name, client); `in_flight`: requests at once per endpoint.
    pub fn new(members: Vec<(String, RemoteScorer)>, in_flight: usize, policy: BreakerPolicy) -> Arc<Self> {
        let slots = members
            .iter()
            .map(|_| Slot {
                in_flight: in_flight.max(1),
                requests: 0,
                tokens: 0,
                breaker: Breaker::Closed { failures: 0 },
                last_error: None,
                scored: 0,
                busy: Duration::ZERO,
            })
            .collect();
        Arc::new(Self { members, policy, slots: Mutex::new(slots), changed: Default::default() })
    }

    pub fn members(&self) -> impl Iterator<Item = (&str, &RemoteScorer)> {
        self.members.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Requests the fleet can have out at once.
    pub fn capacity(&self) -> usize {
        self.slots.lock().expect("fleet lock").iter().map(|s| s.in_flight).sum()
    }

    /// Sets how many requests endpoint `index` may have out at once.
    pub fn set_in_flight(&self, index: usize, n: usize) {
        self.slots.lock().expect("fleet lock")[index].in_flight = n.max(1);
    }

    /// A short probe of how many requests in flight endpoint `index` serves faster than fewer:
    /// `input` sent 1, 2, 4, … `max` at once, while doing twice as many raises throughput by a
    /// quarter or more (a batching server such as vLLM keeps gaining; a server on a few cores
    /// stops). At least 2, so one request's network time overlaps another's computing. The
    /// rates measured (requests per second) come with the answer; an endpoint that fails the
    /// probe gets `fallback`.
    pub async fn probe_in_flight(
        &self,
        index: usize,
        input: &crate::RemoteInput,
        max: usize,
        fallback: usize,
    ) -> Probe {
        let client = &self.members[index].1;
        let (mut best, mut best_rate, mut rates) = (1usize, 0f64, Vec::new());
        let mut n = 1;
        while n <= max {
            let started = Instant::now();
            let sent = futures_util::future::join_all((0..n).map(|_| client.score(std::slice::from_ref(input)))).await;
            if let Some(Err(e)) = sent.into_iter().find(|r| r.is_err()) {
                return Probe { in_flight: fallback, rates, failed: Some(e.to_string()) };
            }
            let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-6);
            rates.push((n, rate));
            if rate < 1.25 * best_rate {
                break;
            }
            (best, best_rate) = (n, rate);
            n *= 2;
        }
        Probe { in_flight: best.max(2), rates, failed: None }
    }

    /// Takes an endpoint for a request of about `tokens` tokens: the one with the fewest
    /// outstanding tokens among those with a free slot and a closed breaker (or an open one
    /// whose pause is over: its probe). Waits while all are busy or paused; None once every
    /// endpoint is out of the run.
    pub async fn acquire(self: &Arc<Self>, tokens: usize) -> Option<Lease> {
        loop {
            // Registered before looking, so a release in between is not missed.
            let notified = self.changed.notified();
            let mut next_wake: Option<Instant> = None;
            {
                let mut slots = self.slots.lock().expect("fleet lock");
                if slots.iter().all(|s| s.breaker == Breaker::Dead) {
                    return None;
                }
                let now = Instant::now();
                let mut best: Option<usize> = None;
                for (i, s) in slots.iter().enumerate() {
                    let free = match &s.breaker {
                        Breaker::Closed { .. } => s.requests < s.in_flight,
                        Breaker::Open { until, .. } if *until <= now => s.requests == 0,
                        Breaker::Open { until, .. } => {
                            next_wake = Some(next_wake.map_or(*until, |w: Instant| w.min(*until)));
                            false
                        }
                        Breaker::HalfOpen { .. } | Breaker::Dead => false,
                    };
                    if free && best.is_none_or(|b| s.tokens < slots[b].tokens) {
                        best = Some(i);
                    }
                }
                if let Some(i) = best {
                    let s = &mut slots[i];
                    if let Breaker::Open { probes_failed, .. } = s.breaker {
                        s.breaker = Breaker::HalfOpen { probes_failed };
                    }
                    s.requests += 1;
                    s.tokens += tokens;
                    return Some(Lease {
                        fleet: self.clone(),
                        index: i,
                        tokens,
                        started: Instant::now(),
                        reported: false,
                    });
                }
            }
            match next_wake {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    let _ = tokio::time::timeout(wait, notified).await;
                }
                None => notified.await,
            }
        }
    }

    fn release(&self, i: usize, tokens: usize, took: Duration, outcome: std::result::Result<usize, String>) {
        let mut slots = self.slots.lock().expect("fleet lock");
        let s = &mut slots[i];
        s.requests -= 1;
        s.tokens -= tokens;
        s.busy += took;
        match outcome {
            Ok(n) => {
                s.scored += n;
                s.breaker = Breaker::Closed { failures: 0 };
            }
            Err(e) => {
                s.last_error = Some(e);
                let p = self.policy;
                s.breaker = match s.breaker.clone() {
                    Breaker::Closed { failures } if failures + 1 < p.failures_to_open => {
                        Breaker::Closed { failures: failures + 1 }
                    }
                    Breaker::Closed { .. } => Breaker::Open { until: Instant::now() + p.open_for, probes_failed: 0 },
                    Breaker::HalfOpen { probes_failed } if probes_failed + 1 >= p.max_probes => Breaker::Dead,
                    Breaker::HalfOpen { probes_failed } => {
                        Breaker::Open { until: Instant::now() + p.open_for, probes_failed: probes_failed + 1 }
                    }
                    // A request that was already out when the breaker opened.
                    other => other,
                };
            }
        }
        drop(slots);
        self.changed.notify_waiters();
    }

    /// Each endpoint's share of the run.
    pub fn report(&self) -> Vec<MemberReport> {
        let slots = self.slots.lock().expect("fleet lock");
        self.members
            .iter()
            .zip(slots.iter())
            .map(|((name, _), s)| MemberReport {
                name: name.clone(),
                sequences: s.scored,
                busy: s.busy / s.in_flight as u32,
                in_flight: s.in_flight,
                dead: s.breaker == Breaker::Dead,
                last_error: s.last_error.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Protocol, RemoteConfig};

    fn fleet(n: usize, in_flight: usize, policy: BreakerPolicy) -> Arc<Fleet> {
        let members = (0..n)
            .map(|i| {
                let url = format!("http://127.0.0.1:{}", 9 + i);
                (url.clone(), RemoteScorer::new(RemoteConfig::new(url, Protocol::VllmPooling)).unwrap())
            })
            .collect();
        Fleet::new(members, in_flight, policy)
    }

    fn err() -> RemoteError {
        RemoteError::Network { url: "u".into(), message: "refused".into(), tries: 1 }
    }

    #[tokio::test]
    async fn least_outstanding_tokens_with_free_slots() {
        let f = fleet(2, 2, BreakerPolicy::default());
        let a = f.acquire(100).await.unwrap();
        let b = f.acquire(10).await.unwrap();
        assert_ne!(a.index, b.index, "the idle endpoint first");
        let c = f.acquire(10).await.unwrap();
        assert_eq!(c.index, b.index, "then the one with fewer tokens out");
        let d = f.acquire(10).await.unwrap();
        assert_eq!(d.index, a.index, "a full endpoint is skipped");
        // Both full: the next waits for a release.
        let waiting = tokio::spawn({
            let f = f.clone();
            async move { f.acquire(1).await.unwrap().index }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        let freed = c.index;
        c.done(1);
        assert_eq!(waiting.await.unwrap(), freed);
        drop((a, b, d));
    }

    #[tokio::test]
    async fn a_failing_endpoint_is_probed_then_dropped() {
        let policy = BreakerPolicy { failures_to_open: 1, open_for: Duration::from_millis(30), max_probes: 2 };
        let f = fleet(2, 1, policy);
        let a = f.acquire(1).await.unwrap();
        let bad = a.index;
        a.failed(&err());
        // Open: the other endpoint takes the work meanwhile.
        let b = f.acquire(1).await.unwrap();
        assert_ne!(b.index, bad);
        b.done(1);
        let b = f.acquire(1).await.unwrap();
        assert_ne!(b.index, bad, "open: not before its pause is over");
        // The good one is busy: after the pause the bad one gets one probe.
        let probe = f.acquire(1).await.unwrap();
        assert_eq!(probe.index, bad);
        probe.failed(&err());
        b.done(1);
        // The good one busy again: after the pause, the bad one's second probe.
        let held = f.acquire(1).await.unwrap();
        assert_ne!(held.index, bad);
        let probe = f.acquire(1).await.unwrap();
        assert_eq!(probe.index, bad);
        probe.failed(&err());
        held.done(1);
        let r = f.report();
        assert!(r[bad].dead, "{r:?}");
        assert_eq!(r[bad].last_error.as_deref(), Some(err().to_string().as_str()));
        // Every endpoint out: acquire says so instead of waiting forever.
        let l = f.acquire(1).await.unwrap();
        let other = l.index;
        l.failed(&err());
        for _ in 0..2 {
            if let Some(l) = f.acquire(1).await {
                assert_eq!(l.index, other);
                l.failed(&err());
            }
        }
        assert!(f.acquire(1).await.is_none());
    }
}
