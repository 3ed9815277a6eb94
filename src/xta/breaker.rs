//! What the XTA server is spared: a limit on calls in flight and a circuit breaker, per
//! server (one [`Destination`] per [`super::XtaClient`], shared by every stage that uses
//! the client).
//!
//! The breaker counts transient failures in a row (no answer, 5xx, a technical fault: the
//! server is in trouble). At [`BreakerConfig::failures`] it opens: no call goes out for
//! `open`. Then it is half-open: one call goes out as a probe while the others wait for its
//! outcome. A probe that succeeds closes the breaker; one that fails opens it again for twice
//! as long (up to `max_open`). A recovering server thus sees one call per pause, not one per
//! waiting request per backoff step. An answer that is a permanent fault (a parameter, a
//! permission) is an answer: the server works, and it counts as a success here.
//!
//! Callers wait for admission up to a limit of their own ([`Destination::admit`]); whoever
//! is still refused then gets [`Refused`] with the time the breaker may let calls through
//! again, and reschedules its work for then.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Limits for one server.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Calls in flight at once.
    pub max_in_flight: usize,
    /// Transient failures in a row that open the breaker.
    pub failures: u32,
    /// The first pause.
    pub open: Duration,
    /// The longest pause.
    pub max_open: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { max_in_flight: 16, failures: 5, open: Duration::from_secs(10), max_open: Duration::from_secs(300) }
    }
}

/// The breaker's state, as `/metrics` shows it (`0`, `1`, `2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl BreakerState {
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant, pause: Duration },
    HalfOpen { probing: bool, pause: Duration },
}

/// No admission within the caller's wait: the breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When calls may go out again (at the earliest).
    pub retry_in: Duration,
}

/// One server's limits and breaker.
#[derive(Debug)]
pub struct Destination {
    config: BreakerConfig,
    permits: Arc<Semaphore>,
    phase: Mutex<Phase>,
    changed: Notify,
    opened: AtomicU64,
    refused: AtomicU64,
}

/// A call's admission: hold it while the call runs, then say how it went
/// ([`Permit::succeeded`], [`Permit::failed`]). Dropped without either (the call was
/// cancelled), it counts for nothing.
#[derive(Debug)]
pub struct Permit<'a> {
    destination: &'a Destination,
    probe: bool,
    _slot: OwnedSemaphorePermit,
    reported: bool,
}

impl Destination {
    pub fn new(config: BreakerConfig) -> Destination {
        let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        Destination { config, permits, phase: Mutex::new(Phase::Closed { failures: 0 }), changed: Notify::new(), opened: AtomicU64::new(0), refused: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        match &*self.lock() {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { until, .. } if Instant::now() < *until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How often the breaker opened.
    pub fn opened_total(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Calls not made because the breaker stayed open for the caller's whole wait.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.config.max_in_flight.max(1) - self.permits.available_permits()
    }

    /// The Prometheus text of the breaker: state, openings, calls refused, calls in flight.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let state = self.state();
        out.push_str("# HELP amtsbote_xta_breaker_state The XTA server's circuit breaker: 0 closed (calls go out), 1 open (none go out), 2 half-open (one probe).\n");
        out.push_str("# TYPE amtsbote_xta_breaker_state gauge\n");
        let _ = writeln!(out, "amtsbote_xta_breaker_state {}", state as u8);
        out.push_str("# HELP amtsbote_xta_breaker_opened_total Times the breaker opened after failures in a row (or a failed probe).\n");
        out.push_str("# TYPE amtsbote_xta_breaker_opened_total counter\n");
        let _ = writeln!(out, "amtsbote_xta_breaker_opened_total {}", self.opened_total());
        out.push_str("# HELP amtsbote_xta_breaker_refused_total Calls not made because the breaker stayed open; their work is scheduled for later.\n");
        out.push_str("# TYPE amtsbote_xta_breaker_refused_total counter\n");
        let _ = writeln!(out, "amtsbote_xta_breaker_refused_total {}", self.refused_total());
        out.push_str("# HELP amtsbote_xta_calls_in_flight Calls to the XTA server under way (limit: xta.max_connections).\n");
        out.push_str("# TYPE amtsbote_xta_calls_in_flight gauge\n");
        let _ = writeln!(out, "amtsbote_xta_calls_in_flight {}", self.in_flight());
    }

    /// Waits until a call may go out (a free slot, the breaker closed or this call its
    /// probe), at most `wait`.
    pub async fn admit(&self, wait: Duration) -> Result<Permit<'_>, Refused> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Some(probe) when admitted; else the time to wait until.
            let admitted: Result<bool, Option<Instant>> = {
                let mut phase = self.lock();
                match &mut *phase {
                    Phase::Closed { .. } => Ok(false),
                    Phase::Open { until, pause } => {
                        if Instant::now() >= *until {
                            *phase = Phase::HalfOpen { probing: true, pause: *pause };
                            Ok(true)
                        } else {
                            Err(Some(*until))
                        }
                    }
                    Phase::HalfOpen { probing, .. } if !*probing => {
                        *probing = true;
                        Ok(true)
                    }
                    Phase::HalfOpen { .. } => Err(None),
                }
            };
            match admitted {
                Ok(probe) => {
                    let slot = match self.permits.clone().acquire_owned().await {
                        Ok(slot) => slot,
                        // The semaphore is never closed.
                        Err(_) => return Err(Refused { retry_in: self.config.open }),
                    };
                    return Ok(Permit { destination: self, probe, _slot: slot, reported: false });
                }
                Err(until) => {
                    let now = Instant::now();
                    if now >= deadline {
                        self.refused.fetch_add(1, Ordering::Relaxed);
                        let retry_in = until.map(|u| u.saturating_duration_since(now)).unwrap_or(self.config.open);
                        return Err(Refused { retry_in: retry_in.max(Duration::from_millis(1)) });
                    }
                    let wake = until.map_or(deadline, |u| u.min(deadline));
                    tokio::select! {
                        _ = tokio::time::sleep_until(wake.into()) => {}
                        _ = &mut notified => {}
                    }
                }
            }
        }
    }

    fn report(&self, probe: bool, ok: Option<bool>) {
        let mut phase = self.lock();
        let next = match (&*phase, ok) {
            // A cancelled probe: let the next caller probe.
            (Phase::HalfOpen { pause, .. }, None) if probe => Some(Phase::HalfOpen { probing: false, pause: *pause }),
            (_, None) => None,
            (Phase::Closed { .. }, Some(true)) => Some(Phase::Closed { failures: 0 }),
            (Phase::HalfOpen { .. }, Some(true)) if probe => Some(Phase::Closed { failures: 0 }),
            (Phase::Closed { failures }, Some(false)) => {
                let failures = failures + 1;
                if failures >= self.config.failures {
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(failures, pause_secs = self.config.open.as_secs_f64(), "XTA server: transient failures in a row; the breaker opens, no calls for now");
                    Some(Phase::Open { until: Instant::now() + self.config.open, pause: self.config.open })
                } else {
                    Some(Phase::Closed { failures })
                }
            }
            (Phase::HalfOpen { pause, .. }, Some(false)) if probe => {
                let pause = (*pause * 2).min(self.config.max_open);
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pause_secs = pause.as_secs_f64(), "XTA server: the probe failed; the breaker stays open");
                Some(Phase::Open { until: Instant::now() + pause, pause })
            }
            // A call admitted before the breaker opened, ending late: changes nothing.
            _ => None,
        };
        if let Some(next) = next {
            let reopened = matches!((&*phase, &next), (Phase::HalfOpen { .. }, Phase::Closed { .. }));
            *phase = next;
            drop(phase);
            if reopened {
                tracing::info!("XTA server answers again; the breaker is closed");
            }
            if probe || reopened {
                self.changed.notify_waiters();
            }
        }
    }
}

impl Permit<'_> {
    /// The server answered (also with a permanent fault).
    pub fn succeeded(mut self) {
        self.reported = true;
        self.destination.report(self.probe, Some(true));
    }

    /// The server did not answer usefully (a transient failure).
    pub fn failed(mut self) {
        self.reported = true;
        self.destination.report(self.probe, Some(false));
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.destination.report(self.probe, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(failures: u32, open_ms: u64) -> BreakerConfig {
        BreakerConfig { max_in_flight: 4, failures, open: Duration::from_millis(open_ms), max_open: Duration::from_millis(open_ms * 4) }
    }

    #[tokio::test]
    async fn opens_after_failures_in_a_row_and_refuses_meanwhile() {
        let d = Destination::new(config(3, 10_000));
        for _ in 0..2 {
            d.admit(Duration::ZERO).await.unwrap().failed();
        }
        // A success in between starts the count again.
        d.admit(Duration::ZERO).await.unwrap().succeeded();
        for _ in 0..3 {
            d.admit(Duration::ZERO).await.unwrap().failed();
        }
        assert_eq!(d.state(), BreakerState::Open);
        assert_eq!(d.opened_total(), 1);
        let refused = d.admit(Duration::from_millis(20)).await.unwrap_err();
        assert!(refused.retry_in > Duration::from_secs(9), "{refused:?}");
        assert_eq!(d.refused_total(), 1);
    }

    #[tokio::test]
    async fn half_open_lets_one_probe_through_and_the_others_wait_for_it() {
        let d = Arc::new(Destination::new(config(1, 50)));
        d.admit(Duration::ZERO).await.unwrap().failed();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let probe = d.admit(Duration::ZERO).await.unwrap();
        assert!(probe.probe);
        // A second caller is not admitted while the probe runs…
        assert!(d.admit(Duration::from_millis(20)).await.is_err());
        // …but is, as soon as the probe succeeds.
        let waiter = {
            let d = d.clone();
            tokio::spawn(async move { d.admit(Duration::from_secs(5)).await.map(|p| p.probe) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        probe.succeeded();
        assert_eq!(waiter.await.unwrap(), Ok(false));
        assert_eq!(d.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_failed_probe_doubles_the_pause_up_to_the_limit() {
        let d = Destination::new(config(1, 40));
        d.admit(Duration::ZERO).await.unwrap().failed();
        for expected_ms in [80u64, 160, 160] {
            let probe = d.admit(Duration::from_secs(5)).await.unwrap();
            assert!(probe.probe);
            probe.failed();
            let refused = d.admit(Duration::ZERO).await.unwrap_err();
            assert!(refused.retry_in > Duration::from_millis(expected_ms - 20) && refused.retry_in <= Duration::from_millis(expected_ms), "{refused:?} vs {expected_ms} ms");
        }
    }

    #[tokio::test]
    async fn a_cancelled_probe_lets_the_next_caller_probe() {
        let d = Destination::new(config(1, 10));
        d.admit(Duration::ZERO).await.unwrap().failed();
        tokio::time::sleep(Duration::from_millis(15)).await;
        drop(d.admit(Duration::ZERO).await.unwrap());
        assert!(d.admit(Duration::ZERO).await.unwrap().probe);
    }

    #[tokio::test]
    async fn calls_in_flight_are_limited() {
        let d = Destination::new(config(5, 10));
        let held: Vec<_> = futures_join(&d, 4).await;
        assert_eq!(d.in_flight(), 4);
        let fifth = tokio::time::timeout(Duration::from_millis(30), d.admit(Duration::from_secs(1))).await;
        assert!(fifth.is_err(), "a fifth call waits for a slot");
        drop(held);
        assert_eq!(d.in_flight(), 0);
    }

    async fn futures_join(d: &Destination, n: usize) -> Vec<Permit<'_>> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(d.admit(Duration::ZERO).await.unwrap());
        }
        out
    }
}
