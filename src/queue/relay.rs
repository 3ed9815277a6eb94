//! Between the ledger and the queues: the relay, which pushes the outbox's triggers to the
//! job backend, and the sweeper, which finds work that lost its job.
//!
//! A state change and the trigger of the next stage are written in one ledger transaction
//! (the outbox, see [`crate::ledger::Trigger`]). The relay takes the oldest triggers, pushes
//! them with their idempotency key (`<request>:<seq>`), and only then deletes them: a crash
//! in between pushes them again, and the queue keeps one job per key. A job that still runs
//! twice (its key purged, two queue stores) finds the request moved on and does nothing.
//!
//! The sweeper is the net under all of it: a request that has waited in a stage's input
//! state for longer than `queue.sweep_after_secs` with no trigger in the outbox and no job
//! in the queue (the queue database lost its newest commits in a power cut, an operator
//! deleted a job) gets its trigger again, counted in `amtsbote_sweeper_retriggered_total`.
//! It should stay 0.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;

use super::JobBackend;
use super::metrics::StageMetrics;
use crate::ledger::{Ledger, PushFuture, RequestState, Trigger, trigger_key};
use crate::supervise::crash_point;

/// Triggers pushed in one step (one transaction in each store).
pub const RELAY_BATCH: u32 = 500;

/// Pushes the outbox's triggers to `jobs` until `stop` turns true: at once when this
/// process wrote one, else every `poll` (triggers written by other processes). An error of
/// either store ends it; the supervisor starts it again.
pub async fn run_relay(ledger: Arc<dyn Ledger>, jobs: Arc<dyn JobBackend>, metrics: Arc<StageMetrics>, poll: Duration, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let signal = ledger.outbox_signal();
    let push = pusher(jobs);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let pushed = ledger.relay_outbox(RELAY_BATCH, &push).await?;
        metrics.relayed.fetch_add(pushed as u64, Relaxed);
        if pushed as u32 == RELAY_BATCH {
            continue;
        }
        tokio::select! {
            _ = signal.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
}

/// What the ledger's relay step hands its triggers to: `jobs`, with the crash points of the
/// crash tests on either side of the push.
fn pusher(jobs: Arc<dyn JobBackend>) -> impl for<'t> Fn(&'t [Trigger]) -> PushFuture<'t> + Send + Sync {
    move |triggers| {
        let jobs = jobs.clone();
        Box::pin(async move {
            crash_point("relay-before-push");
            jobs.push_triggers(triggers).await.map_err(|e| e.to_string())?;
            crash_point("relay-after-push");
            Ok(())
        })
    }
}

/// The sweeper's settings (`queue.sweep_after_secs`, `queue.sweep_interval_secs`).
#[derive(Debug, Clone, Copy)]
pub struct SweepConfig {
    /// A request waiting longer than this without a trigger or a job is triggered again.
    pub after: Duration,
    /// How often to look.
    pub every: Duration,
}

/// One pass over every stage's input state; returns how many requests were triggered again.
pub async fn sweep_once(ledger: &dyn Ledger, jobs: &dyn JobBackend, after: Duration, metrics: &StageMetrics) -> anyhow::Result<u64> {
    let before = chrono::Utc::now() - chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    let mut retriggered = 0;
    for (state, queue) in RequestState::stage_inputs() {
        let mut after_id = crate::ledger::RequestId(0);
        loop {
            let page = ledger.waiting_without_trigger(state, before, after_id, RELAY_BATCH).await?;
            let Some(last) = page.last() else { break };
            after_id = last.0;
            let keys: Vec<String> = page.iter().map(|(id, seq)| trigger_key(*id, *seq)).collect();
            let with_jobs = jobs.jobs_exist(queue, &keys).await?;
            for ((id, seq), key) in page.iter().zip(&keys) {
                if with_jobs.contains(key) {
                    continue;
                }
                if ledger.retrigger(*id, *seq, queue).await? {
                    retriggered += 1;
                    metrics.sweeper_retriggered.fetch_add(1, Relaxed);
                    tracing::warn!(request = %id, %queue, %state, "the request waited without a job; triggered it again (a job was lost between ledger and queue)");
                }
            }
            if page.len() < RELAY_BATCH as usize {
                break;
            }
        }
    }
    Ok(retriggered)
}

/// Sweeps every `config.every` until `stop` turns true.
pub async fn run_sweeper(ledger: Arc<dyn Ledger>, jobs: Arc<dyn JobBackend>, metrics: Arc<StageMetrics>, config: SweepConfig, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.every) => {}
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        }
        sweep_once(ledger.as_ref(), jobs.as_ref(), config.after, &metrics).await?;
    }
}
