//! What the stage workers of this process did, for `/metrics`: jobs run by outcome, how long
//! they ran, and how long they waited from push to start, per queue; and the relay's and
//! the sweeper's counters; and what the receive stage did per tenant. Counters since the process started, kept in atomics (no lock on
//! a job's path).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::Queue;

/// Upper bounds of the histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 300.0];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The smallest bucket bound below which at least `q` (0..1) of the observations lie;
    /// `None` without observations, infinity when beyond the last bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let wanted = (q * count as f64).ceil() as u64;
        let mut seen = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            seen += self.buckets[i].load(Relaxed);
            if seen >= wanted {
                return Some(*b);
            }
        }
        Some(f64::INFINITY)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// How a job's attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Done,
    /// Failed; it runs again after its backoff.
    Retried,
    /// Failed on its last attempt: dead, waiting for an operator.
    Dead,
    /// Failed for good (a permanent error, a panic).
    Aborted,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Done, Outcome::Retried, Outcome::Dead, Outcome::Aborted];

    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retried => "retried",
            Outcome::Dead => "dead",
            Outcome::Aborted => "aborted",
        }
    }
}

/// One queue's figures.
#[derive(Debug, Default)]
pub struct QueueMetrics {
    outcomes: [AtomicU64; 4],
    /// How long attempts ran.
    pub run_time: Histogram,
    /// From push to the start of the first attempt.
    pub lag: Histogram,
}

impl QueueMetrics {
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize].load(Relaxed)
    }

    pub fn record(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Relaxed);
    }
}

/// Everything the pipeline's machinery counts in this process.
#[derive(Debug, Default)]
pub struct StageMetrics {
    queues: [QueueMetrics; Queue::ALL.len()],
    /// Triggers the relay pushed from the outbox to the queues.
    pub relayed: AtomicU64,
    /// Requests the sweeper found waiting without a job and triggered again. Expected 0:
    /// anything else means a job was lost between ledger and queue.
    pub sweeper_retriggered: AtomicU64,
    /// What the receive stage did, per tenant.
    pub received: ReceiveCounters,
}

/// What became of messages fetched from the XTA message box (`amtsbote_received_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveOutcome {
    /// Fetched and stored in the ledger (once per MessageID).
    Stored,
    /// Written into the tenant's outbox.
    Written,
    /// Written into the outbox's `error/` with its reason.
    Invalid,
    /// Closed at the XTA server.
    Closed,
    /// A message that could not be fetched or handled, left in the box (per attempt).
    Failed,
    /// A pass over a tenant's box that ended early (server, ledger or folder trouble).
    FailedPass,
}

impl ReceiveOutcome {
    pub const ALL: [ReceiveOutcome; 6] =
        [ReceiveOutcome::Stored, ReceiveOutcome::Written, ReceiveOutcome::Invalid, ReceiveOutcome::Closed, ReceiveOutcome::Failed, ReceiveOutcome::FailedPass];

    pub const fn name(self) -> &'static str {
        match self {
            ReceiveOutcome::Stored => "stored",
            ReceiveOutcome::Written => "written",
            ReceiveOutcome::Invalid => "invalid",
            ReceiveOutcome::Closed => "closed",
            ReceiveOutcome::Failed => "failed",
            ReceiveOutcome::FailedPass => "failed_pass",
        }
    }
}

/// The receive stage's counters per tenant. A lock, but only once per message.
#[derive(Debug, Default)]
pub struct ReceiveCounters {
    tenants: std::sync::Mutex<std::collections::BTreeMap<String, [u64; ReceiveOutcome::ALL.len()]>>,
}

impl ReceiveCounters {
    /// Makes a tenant's series appear (at 0) before anything happened.
    pub fn tenant(&self, tenant: &str) {
        if let Ok(mut t) = self.tenants.lock() {
            t.entry(tenant.to_owned()).or_default();
        }
    }

    pub fn count(&self, tenant: &str, outcome: ReceiveOutcome) {
        if let Ok(mut t) = self.tenants.lock() {
            t.entry(tenant.to_owned()).or_default()[outcome as usize] += 1;
        }
    }

    pub fn get(&self, tenant: &str, outcome: ReceiveOutcome) -> u64 {
        self.tenants.lock().ok().and_then(|t| t.get(tenant).map(|c| c[outcome as usize])).unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let Ok(tenants) = self.tenants.lock() else { return };
        if tenants.is_empty() {
            return;
        }
        out.push_str("# HELP amtsbote_received_total Messages of the XTA message box handled by the receive stage of this process, by tenant and outcome.\n");
        out.push_str("# TYPE amtsbote_received_total counter\n");
        for (tenant, counts) in tenants.iter() {
            for o in ReceiveOutcome::ALL {
                let _ = writeln!(out, "amtsbote_received_total{{tenant=\"{tenant}\",outcome=\"{}\"}} {}", o.name(), counts[o as usize]);
            }
        }
    }
}

impl StageMetrics {
    pub fn queue(&self, queue: Queue) -> &QueueMetrics {
        let i = Queue::ALL.iter().position(|q| *q == queue).unwrap_or(0);
        &self.queues[i]
    }

    /// The Prometheus text of these figures.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP amtsbote_jobs_run_total Job attempts this process ran, by queue and outcome.\n");
        out.push_str("# TYPE amtsbote_jobs_run_total counter\n");
        for q in Queue::ALL {
            for o in Outcome::ALL {
                let _ = writeln!(out, "amtsbote_jobs_run_total{{queue=\"{q}\",outcome=\"{}\"}} {}", o.name(), self.queue(q).count(o));
            }
        }
        out.push_str("# HELP amtsbote_job_run_seconds How long job attempts ran, by queue.\n");
        out.push_str("# TYPE amtsbote_job_run_seconds histogram\n");
        for q in Queue::ALL {
            self.queue(q).run_time.render(out, "amtsbote_job_run_seconds", &format!("queue=\"{q}\""));
        }
        out.push_str("# HELP amtsbote_job_lag_seconds From a job's push to the start of its first attempt, by queue.\n");
        out.push_str("# TYPE amtsbote_job_lag_seconds histogram\n");
        for q in Queue::ALL {
            self.queue(q).lag.render(out, "amtsbote_job_lag_seconds", &format!("queue=\"{q}\""));
        }
        out.push_str("# HELP amtsbote_relayed_total Triggers the relay pushed from the ledger's outbox to the queues.\n");
        out.push_str("# TYPE amtsbote_relayed_total counter\n");
        let _ = writeln!(out, "amtsbote_relayed_total {}", self.relayed.load(Relaxed));
        out.push_str("# HELP amtsbote_sweeper_retriggered_total Requests found waiting without a job and triggered again (expected 0).\n");
        out.push_str("# TYPE amtsbote_sweeper_retriggered_total counter\n");
        let _ = writeln!(out, "amtsbote_sweeper_retriggered_total {}", self.sweeper_retriggered.load(Relaxed));
        self.received.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_when_rendered() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(1000));
        let mut out = String::new();
        h.render(&mut out, "x", "queue=\"route\"");
        assert!(out.contains("x_bucket{queue=\"route\",le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{queue=\"route\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{queue=\"route\",le=\"300\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{queue=\"route\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{queue=\"route\"} 3\n"), "{out}");
        assert_eq!(h.quantile(0.5), Some(0.005));
        assert_eq!(h.quantile(1.0), Some(f64::INFINITY));
    }
}
