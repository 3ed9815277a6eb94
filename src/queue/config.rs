//! `jobs/<queue>.toml`: the per-queue settings, typed.

use std::{
    collections::BTreeMap,
    fmt,
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use apalis_cron::CronScheduler;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::Queue;

/// One queue's settings, as in `jobs/<queue>.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Jobs of this queue that one worker runs at the same time.
    pub concurrency: usize,
    /// Longest run of one attempt, in seconds; a longer one fails.
    pub timeout_secs: u64,
    /// Attempts in total (the first included) before the job is dead.
    pub max_attempts: u32,
    /// Jobs a worker claims from the database in one round trip (default 10).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How often an idle worker looks for new or newly due jobs (default 500 ms).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Wait before the next attempt.
    pub backoff: Backoff,
    /// When a scheduled queue (print, receive) gets its job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<JobSchedule>,
}

fn default_batch_size() -> usize {
    10
}

fn default_poll_interval_ms() -> u64 {
    500
}

impl JobConfig {
    /// Parse and check one file's text.
    pub fn parse(text: &str) -> Result<JobConfig, String> {
        let config: JobConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// [`Self::timeout_secs`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// [`Self::poll_interval_ms`] as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if self.timeout_secs == 0 {
            return Err("timeout_secs must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("batch_size must be at least 1".into());
        }
        if self.poll_interval_ms == 0 {
            return Err("poll_interval_ms must be at least 1".into());
        }
        self.backoff.validate().map_err(|e| format!("backoff: {e}"))
    }
}

/// Exponential backoff between attempts: after the n-th failed attempt the job waits
/// `min(max_secs, initial_secs * factor^(n-1))`, spread by up to ± `jitter` (a fraction of
/// the wait) so that jobs that failed together do not all come back together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Wait after the first failure, seconds.
    pub initial_secs: f64,
    /// Longest wait, seconds.
    pub max_secs: f64,
    /// Growth per failure (≥ 1).
    pub factor: f64,
    /// Spread as a fraction of the wait, 0 to 1.
    pub jitter: f64,
}

impl Backoff {
    fn validate(&self) -> Result<(), String> {
        let finite = [self.initial_secs, self.max_secs, self.factor, self.jitter]
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return Err("values must be finite numbers".into());
        }
        if self.initial_secs < 0.0 {
            return Err("initial_secs must not be negative".into());
        }
        if self.max_secs < self.initial_secs {
            return Err("max_secs must not be less than initial_secs".into());
        }
        if self.max_secs > 7.0 * 24.0 * 3600.0 {
            return Err("max_secs must not exceed a week".into());
        }
        if self.factor < 1.0 {
            return Err("factor must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("jitter must be between 0 and 1".into());
        }
        Ok(())
    }

    /// The wait after `failures` failed attempts (1 = after the first), without jitter.
    pub fn base_delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(1024) as i32;
        let secs = (self.initial_secs * self.factor.powi(exponent)).min(self.max_secs);
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The wait after `failures` failed attempts, with jitter drawn from `seed` (the
    /// job's id, say): the same job and attempt always get the same wait, different jobs
    /// are spread out. Never more than `max_secs`.
    pub fn delay(&self, failures: u32, seed: impl Hash) -> Duration {
        let base = self.base_delay(failures).as_secs_f64();
        let spread = base * self.jitter * (2.0 * unit(failures, seed) - 1.0);
        Duration::from_secs_f64((base + spread).clamp(0.0, self.max_secs))
    }

    /// "Full jitter": a wait drawn evenly from zero to the wait after `failures` failed
    /// attempts (seeded as in [`Backoff::delay`]). Many requests that failed together (an
    /// outage) come back spread over the whole interval, not in a wave.
    pub fn full_jitter(&self, failures: u32, seed: impl Hash) -> Duration {
        let base = self.base_delay(failures).as_secs_f64();
        Duration::from_secs_f64((base * unit(failures, seed)).clamp(0.0, self.max_secs))
    }
}

/// A number in [0, 1) drawn from `seed` and `failures`.
fn unit(failures: u32, seed: impl Hash) -> f64 {
    let mut hasher = DefaultHasher::new();
    seed.hash(&mut hasher);
    failures.hash(&mut hasher);
    // 53 random bits -> [0, 1)
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A cron schedule read in a time zone: `cron` has seconds first (`sec min hour
/// day-of-month month day-of-week [year]`); `timezone` is an IANA name such as
/// `Europe/Berlin`. There is no default zone: apalis-cron would run in UTC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSchedule", into = "RawSchedule")]
pub struct JobSchedule {
    schedule: cron::Schedule,
    timezone: Tz,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    cron: String,
    timezone: String,
}

impl TryFrom<RawSchedule> for JobSchedule {
    type Error = String;

    fn try_from(raw: RawSchedule) -> Result<Self, Self::Error> {
        let schedule = cron::Schedule::from_str(&raw.cron)
            .map_err(|e| format!("cron expression {:?}: {e}", raw.cron))?;
        let timezone = Tz::from_str(&raw.timezone).map_err(|_| {
            format!(
                "unknown time zone {:?} (an IANA name such as Europe/Berlin)",
                raw.timezone
            )
        })?;
        if schedule.upcoming(timezone).next().is_none() {
            return Err(format!("cron expression {:?} never fires", raw.cron));
        }
        Ok(JobSchedule { schedule, timezone })
    }
}

impl From<JobSchedule> for RawSchedule {
    fn from(s: JobSchedule) -> Self {
        RawSchedule {
            cron: s.schedule.source().to_owned(),
            timezone: s.timezone.name().to_owned(),
        }
    }
}

impl JobSchedule {
    /// The cron expression as written.
    pub fn cron(&self) -> &str {
        self.schedule.source()
    }

    /// The time zone it is read in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The parsed schedule.
    pub fn schedule(&self) -> &cron::Schedule {
        &self.schedule
    }

    /// The first firing strictly after `after`, in the schedule's time zone.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Tz>> {
        self.schedule
            .after(&after.with_timezone(&self.timezone))
            .next()
    }

    /// The next `n` firings from now, in the schedule's time zone (for `amtsbote queues`).
    pub fn upcoming(&self, n: usize) -> Vec<DateTime<Tz>> {
        self.schedule.upcoming(self.timezone).take(n).collect()
    }

    /// An apalis-cron backend that ticks on this schedule in its time zone. Give it to a
    /// `WorkerBuilder` whose handler takes an `apalis_cron::Tick<Tz>`.
    pub fn scheduler(&self) -> CronScheduler<cron::Schedule, Tz> {
        CronScheduler::new(self.schedule.clone()).with_timezone(self.timezone)
    }
}

/// Where a queue's settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The shipped `jobs/<queue>.toml`, compiled in.
    Builtin,
    /// A data directory's `jobs/<queue>.toml`.
    File(PathBuf),
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Builtin => f.write_str("built-in"),
            ConfigSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A jobs/*.toml that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JobConfigError {
    /// The file is not valid.
    #[error("{file}: {message}")]
    Invalid {
        /// The file (or `built-in jobs/<queue>.toml`).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A file in the data directory's jobs/ that names no queue.
    #[error("{}: no queue of that name (known: intake, route, transmit, report, print, notify, receive, reconcile)", .0.display())]
    UnknownQueue(PathBuf),
    /// The data directory's jobs/ could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The settings of every queue.
#[derive(Debug, Clone)]
pub struct JobConfigs {
    entries: BTreeMap<Queue, (JobConfig, ConfigSource)>,
}

impl JobConfigs {
    /// The shipped settings only.
    pub fn builtin() -> Result<JobConfigs, JobConfigError> {
        load_job_configs(None)
    }

    /// The settings of `queue`.
    pub fn get(&self, queue: Queue) -> &JobConfig {
        &self.entries[&queue].0
    }

    /// Where the settings of `queue` came from.
    pub fn source(&self, queue: Queue) -> &ConfigSource {
        &self.entries[&queue].1
    }

    /// Replace one queue's settings (tests, benches).
    pub fn set(&mut self, queue: Queue, config: JobConfig) {
        self.entries.insert(queue, (config, ConfigSource::Builtin));
    }

    /// Every queue with its settings, in data-flow order.
    pub fn iter(&self) -> impl Iterator<Item = (Queue, &JobConfig)> {
        self.entries.iter().map(|(q, (c, _))| (*q, c))
    }
}

/// The settings of every queue: the compiled-in `jobs/<queue>.toml`, each replaced by
/// `<data_dir>/jobs/<queue>.toml` where that file exists. A `.toml` file there that names
/// no queue is an error (a typo would otherwise be ignored silently); other files are
/// ignored.
pub fn load_job_configs(data_dir: Option<&Path>) -> Result<JobConfigs, JobConfigError> {
    let mut entries = BTreeMap::new();
    for queue in Queue::ALL {
        let config = JobConfig::parse(queue.default_config()).map_err(|message| {
            JobConfigError::Invalid {
                file: format!("built-in jobs/{}.toml", queue.name()),
                message,
            }
        })?;
        entries.insert(queue, (config, ConfigSource::Builtin));
    }
    let Some(data_dir) = data_dir else {
        return Ok(JobConfigs { entries });
    };
    let dir = data_dir.join("jobs");
    let listing = match std::fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(JobConfigs { entries }),
        Err(source) => return Err(JobConfigError::Io { path: dir, source }),
    };
    let mut files = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|source| JobConfigError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    for path in files {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let queue =
            Queue::from_str(stem).map_err(|_| JobConfigError::UnknownQueue(path.clone()))?;
        let text = std::fs::read_to_string(&path).map_err(|source| JobConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let config = JobConfig::parse(&text).map_err(|message| JobConfigError::Invalid {
            file: path.display().to_string(),
            message,
        })?;
        entries.insert(queue, (config, ConfigSource::File(path)));
    }
    Ok(JobConfigs { entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    #[test]
    fn every_shipped_file_parses() {
        for queue in Queue::ALL {
            let config = JobConfig::parse(queue.default_config())
                .unwrap_or_else(|e| panic!("jobs/{queue}.toml: {e}"));
            assert!(config.max_attempts >= 1, "{queue}");
        }
        let configs = load_job_configs(None).unwrap();
        assert_eq!(configs.iter().count(), Queue::ALL.len());
        assert!(
            Queue::ALL
                .iter()
                .all(|q| *configs.source(*q) == ConfigSource::Builtin)
        );
    }

    #[test]
    fn every_queue_has_a_shipped_file_and_no_file_lacks_a_queue() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        let mut stems: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        stems.sort();
        let mut names: Vec<String> = Queue::ALL.iter().map(|q| q.name().to_owned()).collect();
        names.sort();
        assert_eq!(stems, names);
    }

    #[test]
    fn the_nightly_print_batch_runs_at_22_german_time_summer_and_winter() {
        let configs = load_job_configs(None).unwrap();
        let schedule = configs
            .get(Queue::Print)
            .schedule
            .as_ref()
            .expect("print is scheduled");
        assert_eq!(schedule.cron(), "0 0 22 * * *");
        assert_eq!(schedule.timezone(), chrono_tz::Europe::Berlin);
        // Winter (CET, UTC+1): 22:00 local is 21:00 UTC.
        let winter = schedule.next_after(Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap());
        assert_eq!(winter.unwrap().with_timezone(&Utc).hour(), 21);
        // Summer (CEST, UTC+2): 20:00 UTC.
        let summer = schedule.next_after(Utc.with_ymd_and_hms(2026, 7, 15, 12, 0, 0).unwrap());
        assert_eq!(summer.unwrap().with_timezone(&Utc).hour(), 20);
        assert_eq!(summer.unwrap().hour(), 22);

        let receive = configs
            .get(Queue::Receive)
            .schedule
            .as_ref()
            .expect("receive polls");
        let first = receive.next_after(Utc.with_ymd_and_hms(2026, 3, 1, 10, 1, 0).unwrap());
        assert_eq!(
            first.unwrap().with_timezone(&Utc),
            Utc.with_ymd_and_hms(2026, 3, 1, 10, 5, 0).unwrap()
        );
        // The others have no schedule.
        assert!(configs.get(Queue::Transmit).schedule.is_none());
    }

    #[test]
    fn unknown_keys_bad_values_and_bad_schedules_are_errors() {
        let good = Queue::Intake.default_config();
        let extra = format!("{good}\nretries = 3\n");
        assert!(JobConfig::parse(&extra).unwrap_err().contains("retries"));
        let nested = good.replace("jitter = 0.2", "jitter = 0.2\nmultiplier = 2");
        assert!(
            JobConfig::parse(&nested)
                .unwrap_err()
                .contains("multiplier")
        );
        let zero = good.replace("concurrency = 16", "concurrency = 0");
        assert_ne!(zero, good, "the test edits the shipped file");
        assert!(JobConfig::parse(&zero).unwrap_err().contains("concurrency"));
        let jitter = good.replace("jitter = 0.2", "jitter = 1.5");
        assert!(JobConfig::parse(&jitter).unwrap_err().contains("jitter"));

        let print = Queue::Print.default_config();
        let cron = print.replace("0 0 22 * * *", "0 0 25 * * *");
        assert!(JobConfig::parse(&cron).unwrap_err().contains("cron"));
        let zone = print.replace("Europe/Berlin", "Europe/Bonn");
        assert!(JobConfig::parse(&zone).unwrap_err().contains("time zone"));
        let no_zone = print.replace("timezone = \"Europe/Berlin\"", "");
        assert!(JobConfig::parse(&no_zone).unwrap_err().contains("timezone"));
    }

    #[test]
    fn a_data_directory_file_replaces_one_queue_and_a_stray_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        let notify = Queue::Notify
            .default_config()
            .replace("max_attempts = 1000", "max_attempts = 2");
        std::fs::write(dir.path().join("jobs/notify.toml"), notify).unwrap();
        std::fs::write(dir.path().join("jobs/README"), "not a queue").unwrap();
        let configs = load_job_configs(Some(dir.path())).unwrap();
        assert_eq!(configs.get(Queue::Notify).max_attempts, 2);
        assert!(matches!(
            configs.source(Queue::Notify),
            ConfigSource::File(_)
        ));
        assert_eq!(configs.get(Queue::Transmit).max_attempts, 8);
        assert_eq!(*configs.source(Queue::Transmit), ConfigSource::Builtin);

        std::fs::write(
            dir.path().join("jobs/notfy.toml"),
            Queue::Notify.default_config(),
        )
        .unwrap();
        let err = load_job_configs(Some(dir.path())).unwrap_err();
        assert!(matches!(err, JobConfigError::UnknownQueue(_)), "{err}");
        std::fs::remove_file(dir.path().join("jobs/notfy.toml")).unwrap();

        std::fs::write(dir.path().join("jobs/route.toml"), "concurrency = 1\n").unwrap();
        let err = load_job_configs(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("route.toml"), "{err}");

        // No jobs/ folder at all: the shipped settings.
        let empty = tempfile::tempdir().unwrap();
        assert!(load_job_configs(Some(empty.path())).is_ok());
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let b = Backoff {
            initial_secs: 30.0,
            max_secs: 1800.0,
            factor: 2.0,
            jitter: 0.2,
        };
        assert_eq!(b.base_delay(1), Duration::from_secs(30));
        assert_eq!(b.base_delay(2), Duration::from_secs(60));
        assert_eq!(b.base_delay(7), Duration::from_secs(1800));
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(1800));
        for failures in 1..10 {
            let base = b.base_delay(failures).as_secs_f64();
            let d = b.delay(failures, "01JDEXAMPLE").as_secs_f64();
            assert!(
                d >= base * 0.8 - 1e-9 && d <= (base * 1.2).min(1800.0) + 1e-9,
                "{failures}: {d}"
            );
            assert_eq!(
                b.delay(failures, "01JDEXAMPLE"),
                b.delay(failures, "01JDEXAMPLE")
            );
        }
        let spread: std::collections::BTreeSet<_> = (0..20)
            .map(|i| b.delay(1, format!("job-{i}")).as_millis())
            .collect();
        assert!(spread.len() > 10, "jitter spreads jobs out: {spread:?}");
        let none = Backoff {
            initial_secs: 0.0,
            max_secs: 0.0,
            factor: 1.0,
            jitter: 0.5,
        };
        assert_eq!(none.delay(3, 1), Duration::ZERO);
    }
}
