//! Behaviour settings of a running emulator: the rate limit, seeded fault injection, and the
//! number of "assigning" polls DPS answers before a registration completes.
//!
//! One [`SettingsHandle`] is shared by the API and DPS listeners. It is set from the command
//! line at start and changed at run time by `PUT /emulator/settings` (a JSON merge patch of
//! [`Settings`]); it is not persisted. Fault decisions come from a seeded generator, so a test
//! that sets a seed sees the same sequence of faults on every run.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Fault injection: shares are probabilities in 0..=1 drawn per request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultSettings {
    /// Seed of the fault generator (re-seeded whenever the settings change).
    pub seed: u64,
    /// Share of requests answered 503 `ServiceUnavailable` (with Retry-After 1).
    pub error_rate: f64,
    /// Share of requests that start a burst of 429 answers.
    pub throttle_rate: f64,
    /// Length of a 429 burst, in requests (at least 1).
    pub throttle_burst: u32,
    /// Share of requests whose connection is dropped without an answer.
    pub drop_rate: f64,
    /// Latency added to every request, in milliseconds.
    pub latency_ms: u64,
}

/// The settings, as `GET /emulator/settings` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Requests per second per application; `null` = no limit.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// Fault injection.
    #[serde(default)]
    pub faults: FaultSettings,
    /// How many times DPS answers `assigning` before `assigned`.
    #[serde(default)]
    pub dps_assigning_polls: u32,
    /// Seconds DPS sends in `Retry-After` while a registration is assigning (the real
    /// service sends about 3; 0 makes tests and benchmarks poll at once).
    #[serde(default = "default_dps_retry_after")]
    pub dps_retry_after_seconds: u32,
}

fn default_dps_retry_after() -> u32 {
    1
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rate_limit: Some(20),
            faults: FaultSettings::default(),
            dps_assigning_polls: 1,
            dps_retry_after_seconds: default_dps_retry_after(),
        }
    }
}

impl Settings {
    /// Checks ranges; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let f = &self.faults;
        for (name, v) in [
            ("faults.errorRate", f.error_rate),
            ("faults.throttleRate", f.throttle_rate),
            ("faults.dropRate", f.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        if self.rate_limit == Some(0) {
            return Err("rateLimit must be at least 1 (or null for no limit)".into());
        }
        if f.latency_ms > 60_000 {
            return Err("faults.latencyMs must be at most 60000".into());
        }
        if self.dps_retry_after_seconds > 60 {
            return Err("dpsRetryAfterSeconds must be at most 60".into());
        }
        if self.dps_assigning_polls > 100 {
            return Err("dpsAssigningPolls must be at most 100".into());
        }
        Ok(())
    }
}

/// What fault injection decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Serve normally.
    None,
    /// Answer 503.
    ServerError,
    /// Answer 429.
    Throttle,
    /// Drop the connection.
    Drop,
}

struct Inner {
    settings: Settings,
    rng: rand::rngs::StdRng,
    burst_left: u32,
    tokens: f64,
    last: Instant,
}

/// The shared, mutable settings with the rate limiter and the fault generator.
pub struct SettingsHandle {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SettingsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SettingsHandle").field(&self.get()).finish()
    }
}

impl SettingsHandle {
    /// Wraps initial settings.
    pub fn new(settings: Settings) -> Self {
        let tokens = settings.rate_limit.unwrap_or(1) as f64;
        SettingsHandle {
            inner: Mutex::new(Inner {
                rng: rand::rngs::StdRng::seed_from_u64(settings.faults.seed),
                settings,
                burst_left: 0,
                tokens,
                last: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current settings.
    pub fn get(&self) -> Settings {
        self.lock().settings.clone()
    }

    /// Replaces the settings (validated), re-seeding the fault generator and refilling the
    /// rate limiter.
    pub fn set(&self, settings: Settings) -> Result<(), String> {
        settings.validate()?;
        let mut g = self.lock();
        g.rng = rand::rngs::StdRng::seed_from_u64(settings.faults.seed);
        g.burst_left = 0;
        g.tokens = settings.rate_limit.unwrap_or(1) as f64;
        g.last = Instant::now();
        g.settings = settings;
        Ok(())
    }

    /// Applies a JSON merge patch to the settings.
    pub fn merge(&self, patch: &serde_json::Value) -> Result<Settings, String> {
        let mut current = serde_json::to_value(self.get()).map_err(|e| e.to_string())?;
        if !patch.is_object() {
            return Err("the settings patch must be a JSON object".into());
        }
        super::api::merge_patch(&mut current, patch);
        let next: Settings = serde_json::from_value(current).map_err(|e| e.to_string())?;
        self.set(next.clone())?;
        Ok(next)
    }

    /// The added latency of the current settings.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.lock().settings.faults.latency_ms)
    }

    /// Draws the fault of one request.
    pub fn draw_fault(&self) -> Fault {
        let mut g = self.lock();
        if g.burst_left > 0 {
            g.burst_left -= 1;
            return Fault::Throttle;
        }
        let f = g.settings.faults.clone();
        if f.error_rate == 0.0 && f.throttle_rate == 0.0 && f.drop_rate == 0.0 {
            return Fault::None;
        }
        let x: f64 = g.rng.random();
        if x < f.drop_rate {
            Fault::Drop
        } else if x < f.drop_rate + f.error_rate {
            Fault::ServerError
        } else if x < f.drop_rate + f.error_rate + f.throttle_rate {
            g.burst_left = f.throttle_burst.max(1) - 1;
            Fault::Throttle
        } else {
            Fault::None
        }
    }

    /// Takes one request from the token bucket (capacity and refill = the rate limit).
    /// `Err(seconds)` when the caller must wait.
    pub fn take_token(&self) -> Result<(), u64> {
        let mut g = self.lock();
        let Some(rate) = g.settings.rate_limit else {
            return Ok(());
        };
        let rate = rate as f64;
        let now = Instant::now();
        let elapsed = now.duration_since(g.last).as_secs_f64();
        g.last = now;
        g.tokens = (g.tokens + elapsed * rate).min(rate);
        if g.tokens >= 1.0 {
            g.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - g.tokens) / rate;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_admits_the_rate_then_refuses() {
        let h = SettingsHandle::new(Settings {
            rate_limit: Some(5),
            ..Settings::default()
        });
        for _ in 0..5 {
            assert!(h.take_token().is_ok());
        }
        assert_eq!(h.take_token(), Err(1));
    }

    #[test]
    fn faults_are_reproducible_from_the_seed() {
        let s = Settings {
            faults: FaultSettings {
                seed: 7,
                error_rate: 0.3,
                drop_rate: 0.1,
                ..FaultSettings::default()
            },
            ..Settings::default()
        };
        let a = SettingsHandle::new(s.clone());
        let b = SettingsHandle::new(s);
        let sa: Vec<Fault> = (0..50).map(|_| a.draw_fault()).collect();
        let sb: Vec<Fault> = (0..50).map(|_| b.draw_fault()).collect();
        assert_eq!(sa, sb);
        assert!(sa.contains(&Fault::ServerError) && sa.contains(&Fault::None));
    }

    #[test]
    fn merge_rejects_bad_values_and_unknown_fields() {
        let h = SettingsHandle::new(Settings::default());
        assert!(h
            .merge(&serde_json::json!({"faults": {"errorRate": 2.0}}))
            .is_err());
        assert!(h.merge(&serde_json::json!({"bogus": 1})).is_err());
        let s = h.merge(&serde_json::json!({"rateLimit": null})).unwrap();
        assert_eq!(s.rate_limit, None);
    }
}
