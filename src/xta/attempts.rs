//! Further attempts of the XTA stages (transmit, report), scheduled in the ledger, and the
//! move on to the next state that both make ([`move_on`]).
//!
//! When a call did not get a request further (a transient failure, a report still open),
//! the stage does not fail its job: it counts the attempt in the ledger, draws the wait
//! (exponential, full jitter: [`Backoff::full_jitter`]) and writes, in one transaction, the
//! count, the next time and a trigger not due before it ([`Ledger::schedule_attempt`]).
//! The queue backend keeps the wait (`run_at`), the ledger keeps the count: a crash or a
//! restart keeps the schedule, and an operator sees it (`amtsbote request show`). A call the
//! breaker refused was not made and does not count; it is scheduled for when the breaker may
//! let calls through again.

use std::time::Duration;

use crate::ledger::{Actor, Ledger, LedgerError, Request, RequestState};
use crate::queue::stage::StageError;
use crate::queue::{Backoff, Queue};
use crate::xta::XtaError;

/// How often and how far apart a stage tries (`max_attempts` and `[backoff]` of its
/// `jobs/<queue>.toml`).
#[derive(Debug, Clone)]
pub struct AttemptPolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
}

/// What became of a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The next attempt is scheduled.
    Scheduled,
    /// Every attempt is used up: `attempts` were made. The caller decides where the request goes.
    Exhausted { attempts: u32 },
}

impl AttemptPolicy {
    /// Schedules the next attempt for `request` (in `state`) after `what` did not get it
    /// further, unless this was the last one. `error` is the failure (`None`: the call
    /// succeeded, but the work is not done yet, e.g. a report still open).
    #[allow(clippy::too_many_arguments)]
    pub async fn next(&self, ledger: &dyn Ledger, queue: Queue, request: &Request, state: RequestState, actor: &Actor, what: &str, error: Option<&XtaError>) -> Result<Next, StageError> {
        let (attempts, wait) = match error {
            // Not sent: the breaker held it back. No attempt made; come back when it may open.
            Some(XtaError::BreakerOpen { retry_in }) => (request.attempts, *retry_in + spread(request, Duration::from_secs(1))),
            _ => {
                let attempts = request.attempts + 1;
                if attempts >= self.max_attempts {
                    return Ok(Next::Exhausted { attempts });
                }
                (attempts, self.backoff.full_jitter(attempts, (request.id.0, request.seq)))
            }
        };
        let next_at = chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        let at = next_at.format("%Y-%m-%d %H:%M:%S UTC");
        let detail = match error {
            Some(e @ XtaError::BreakerOpen { .. }) => format!("{what}: {e}; next attempt at {at}"),
            Some(e) => format!("attempt {attempts} of {}: {what}: {e}; next attempt at {at}", self.max_attempts),
            None => format!("attempt {attempts} of {}: {what}; next attempt at {at}", self.max_attempts),
        };
        match ledger.schedule_attempt(request.id, state, queue, attempts, next_at, actor, Some(&detail)).await {
            // Moved on meanwhile (another attempt finished it): nothing to schedule.
            Ok(()) | Err(LedgerError::Conflict { .. }) => Ok(Next::Scheduled),
            Err(e) => Err(StageError::Retry(e.to_string())),
        }
    }
}

/// `from → to` for a stage: a request that another attempt moved on already is fine (the
/// compare-and-set lost, nothing to do); a ledger failure is tried again.
pub async fn move_on(ledger: &dyn Ledger, id: crate::ledger::RequestId, from: RequestState, to: RequestState, actor: &Actor, detail: &str) -> Result<(), StageError> {
    match ledger.transition(id, from, to, actor, Some(detail)).await {
        Ok(()) | Err(LedgerError::Conflict { .. }) => Ok(()),
        Err(e) => Err(StageError::Retry(e.to_string())),
    }
}

/// Up to `max`, drawn from the request: requests held back together do not return together.
fn spread(request: &Request, max: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (request.id.0, request.seq).hash(&mut h);
    max.mul_f64((h.finish() >> 11) as f64 / (1u64 << 53) as f64)
}
