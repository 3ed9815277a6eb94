//! Supervision: `serve` runs each stage (the inbox watcher, the relay, every queue's
//! workers, the sweeper, the purge, the directory reload) as a task of a [`Supervisor`].
//! A stage that fails — returns an error, panics, or stops by itself — is logged with its
//! cause and started again after a backoff (1 s, doubling, at most 30 s; back to 1 s once
//! it has run for a minute). Meanwhile [`Health`] reports it down: `/healthz` answers 503
//! naming it, and `/metrics` counts its restarts. The crash points of the crash tests
//! ([`crash_point`]) live here too: every stage may call them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The crash tests set `AMTSBOTE_TEST_CRASH` to a point's name (`relay-before-push`,
/// `relay-after-push`, `receive-before-close`); the process then aborts there, as a power
/// cut or SIGKILL would stop it. Unset in production: a no-op.
pub fn crash_point(name: &str) {
    if std::env::var("AMTSBOTE_TEST_CRASH").is_ok_and(|v| v == name) {
        eprintln!("amtsbote: AMTSBOTE_TEST_CRASH={name}: aborting here");
        std::process::abort();
    }
}

/// One stage as `/healthz` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageHealth {
    /// Running now.
    pub up: bool,
    /// Times it failed and was started again since the process started.
    pub restarts: u64,
    /// Why it failed last.
    pub last_error: Option<String>,
    /// Since when it is up, or down.
    pub since: DateTime<Utc>,
}

/// Every supervised stage's health. Cheap to read: no database is asked.
#[derive(Debug, Default)]
pub struct Health {
    stages: Mutex<BTreeMap<&'static str, StageHealth>>,
}

impl Health {
    /// Every stage, by name.
    pub fn stages(&self) -> BTreeMap<&'static str, StageHealth> {
        self.stages.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The stages that are down now.
    pub fn down(&self) -> Vec<(&'static str, StageHealth)> {
        self.stages().into_iter().filter(|(_, s)| !s.up).collect()
    }

    fn set(&self, name: &'static str, up: bool, error: Option<String>) {
        if let Ok(mut stages) = self.stages.lock() {
            let entry = stages.entry(name).or_insert(StageHealth { up, restarts: 0, last_error: None, since: Utc::now() });
            if entry.up != up {
                entry.since = Utc::now();
            }
            if !up {
                entry.restarts += 1;
                entry.last_error = error;
            }
            entry.up = up;
        }
    }
}

/// Starts stages and keeps them running until the stop signal.
pub struct Supervisor {
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// The first wait before a restart.
    pub initial_backoff: Duration,
}

impl Supervisor {
    pub fn new(stop: watch::Receiver<bool>) -> Self {
        Supervisor { health: Arc::default(), stop, tasks: Vec::new(), initial_backoff: Duration::from_secs(1) }
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Runs the stage `name`: `start` makes a fresh run of it (given the stop signal),
    /// again after every failure.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, start: F)
    where
        F: Fn(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let health = self.health.clone();
        let mut stop = self.stop.clone();
        let initial = self.initial_backoff;
        let task = tokio::spawn(async move {
            let mut backoff = initial;
            loop {
                health.set(name, true, None);
                let started = Instant::now();
                // A task of its own, so that a panic ends this run, not the supervisor.
                let result = tokio::spawn(start(stop.clone())).await;
                let stopping = *stop.borrow();
                let error = match result {
                    Ok(Ok(())) if stopping => return,
                    Ok(Ok(())) => "it stopped by itself".to_string(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) if e.is_panic() => format!("it panicked: {}", panic_message(e.into_panic())),
                    Err(e) => format!("{e}"),
                };
                if stopping {
                    tracing::warn!(stage = name, error = %error, "stage failed while stopping");
                    return;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = initial;
                }
                health.set(name, false, Some(error.clone()));
                tracing::error!(stage = name, error = %error, "stage failed; starting it again in {} s", backoff.as_secs_f32());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        self.tasks.push((name, task));
    }

    /// Waits until every stage has stopped (after the stop signal), at most `deadline`;
    /// stages still running then are abandoned with a warning.
    pub async fn join(self, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        for (name, task) in self.tasks {
            if tokio::time::timeout_at(until, task).await.is_err() {
                tracing::warn!(stage = name, "stage did not stop within the deadline");
            }
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_failing_stage_is_reported_down_and_started_again() {
        let (stop_tx, stop) = watch::channel(false);
        let mut supervisor = Supervisor::new(stop);
        supervisor.initial_backoff = Duration::from_millis(20);
        let health = supervisor.health();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        supervisor.spawn("flaky", move |mut stop| {
            let n = r.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => anyhow::bail!("cannot create the folder"),
                    1 => panic!("boom"),
                    _ => {
                        let _ = stop.wait_for(|s| *s).await;
                        Ok(())
                    }
                }
            }
        });
        let start = Instant::now();
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(start.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stage = health.stages()["flaky"].clone();
        assert!(stage.up, "{stage:?}");
        assert_eq!(stage.restarts, 2);
        assert_eq!(stage.last_error.as_deref(), Some("it panicked: boom"));
        stop_tx.send(true).unwrap();
        supervisor.join(Duration::from_secs(5)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "not started again after the stop");
    }
}
