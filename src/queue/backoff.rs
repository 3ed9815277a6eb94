//! Backoff between attempts, kept in the queue database.
//!
//! apalis-sqlite fetches a failed job again (until `max_attempts`) as soon as its `run_at`
//! has passed, and nothing moves `run_at` after a failure: without this layer a failing
//! job is retried at once, over and over. apalis' in-process retry with backoff
//! (`RetryPolicy::with_backoff`) sleeps inside the worker instead, which a crash or restart
//! forgets and which holds up a worker's shutdown. This layer moves the job's `run_at` by
//! the queue's backoff when an attempt fails, before apalis records the failure, so the
//! wait is in the database: every worker of the queue, in any process, honours it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use std::sync::Arc;

use apalis::prelude::{AbortError, BoxDynError, Layer, Service, Task};

use super::{Backoff, JobBackend};

/// A tower layer for a worker of one queue: when an attempt fails (and attempts are left,
/// and the failure is not an `AbortError`), the job's `run_at` becomes now + the backoff
/// for that attempt. Add it with `WorkerBuilder::layer` (see [`crate::queue`]); get one
/// from [`super::QueueStore::backoff_layer`].
#[derive(Debug, Clone)]
pub struct DurableBackoffLayer {
    jobs: Arc<dyn JobBackend>,
    backoff: Backoff,
}

impl DurableBackoffLayer {
    /// The layer for jobs in `jobs`, waiting per `backoff`.
    pub fn new(jobs: Arc<dyn JobBackend>, backoff: Backoff) -> Self {
        DurableBackoffLayer { jobs, backoff }
    }
}

impl<S> Layer<S> for DurableBackoffLayer {
    type Service = DurableBackoff<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DurableBackoff {
            inner,
            jobs: self.jobs.clone(),
            backoff: self.backoff.clone(),
        }
    }
}

/// The service of [`DurableBackoffLayer`].
#[derive(Debug, Clone)]
pub struct DurableBackoff<S> {
    inner: S,
    jobs: Arc<dyn JobBackend>,
    backoff: Backoff,
}

impl<S, Args> Service<Task<Args>> for DurableBackoff<S>
where
    S: Service<Task<Args>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let id = task.task_id().map(|id| id.to_string());
        let attempt = task.raw_attempt().clone();
        let max_attempts = task.max_attempts();
        let jobs = self.jobs.clone();
        let backoff = self.backoff.clone();
        let attempt_future = self.inner.call(task);
        Box::pin(async move {
            let result: Result<S::Response, BoxDynError> = attempt_future.await.map_err(Into::into);
            // The attempt that just failed, counted from 1 over the job's life.
            let failures = attempt.current();
            let retried = match &result {
                Err(error) => {
                    error.downcast_ref::<AbortError>().is_none()
                        && max_attempts.is_none_or(|max| failures < max)
                }
                Ok(_) => false,
            };
            if let (true, Some(id)) = (retried, id) {
                let delay = backoff.delay(failures as u32, &id);
                if let Err(e) = jobs.postpone(&id, delay).await {
                    // The job is retried without the wait; nothing else is lost.
                    tracing::warn!(job = %id, error = %e, "could not store the backoff of a failed job");
                }
            }
            result
        })
    }
}
