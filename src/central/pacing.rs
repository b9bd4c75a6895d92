//! Adaptive pacing: how one client finds its share of an application's request limit.
//!
//! IoT Central limits an application, not a caller: every station, script and user of one
//! application draws on the same 20 requests/s. A client cannot see the others, so it learns
//! its share from the service's answers, the way TCP shares a link (additive increase,
//! multiplicative decrease): it starts at the configured rate, which is also the most it
//! ever sends; each 429 halves the rate, once per round (answers to requests sent before the
//! last cut do not cut again: they report the congestion that cut already answered); and
//! each success adds a small step, about 5 % of the configured rate per second of sending,
//! to probe for capacity the others left. Clients that see the same 429s converge to equal
//! shares whose sum stays near the limit, with no coordinator. `Retry-After` is honoured by
//! the retry loop of the client: the throttled request itself waits that long; the others go
//! on at the new, lower rate, because the service's limit is a rate, not an outage.
//!
//! Requests leave 1/rate apart on average (with jitter), in the order they asked, without
//! bursts, so a client never spends the application's whole bucket at once.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Multiplicative decrease on a 429.
const DECREASE: f64 = 0.5;
/// Additive increase, per second of successful sending, as a share of the configured rate.
const INCREASE_SHARE: f64 = 0.05;
/// The lowest rate, as a share of the configured rate.
const MIN_SHARE: f64 = 0.01;

/// The pacing of one client (shared by its clones).
#[derive(Debug)]
pub(crate) struct Pacer {
    max: f64,
    min: f64,
    state: Mutex<State>,
    /// Whose turn it is to wait for the next slot.
    turn: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct State {
    /// Requests per second now.
    rate: f64,
    /// When the next request may leave.
    next: Instant,
    /// Rounds of decrease so far.
    epoch: u64,
}

/// A request's slot: which round of the rate it was sent in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    epoch: u64,
}

impl Pacer {
    /// A pacer that starts at, and never exceeds, `per_second`.
    pub(crate) fn new(per_second: NonZeroU32) -> Pacer {
        let max = f64::from(per_second.get());
        Pacer {
            max,
            min: max * MIN_SHARE,
            state: Mutex::new(State {
                rate: max,
                next: Instant::now(),
                epoch: 0,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for this request's slot. Requests take their turns in the order they ask
    /// (FIFO), and each slot is computed when its turn comes, from the rate in force then:
    /// a cut slows the requests already waiting, not only the ones that come after it.
    pub(crate) async fn ready(&self) -> Ticket {
        let _turn = self.turn.lock().await;
        let at = self.lock().next;
        tokio::time::sleep_until(at).await;
        let mut s = self.lock();
        let now = Instant::now();
        // Jitter (±25 %, the mean kept): clients whose slots fell into step would otherwise
        // keep meeting the application's empty bucket in the same order, and the same one
        // would take every 429.
        let interval = Duration::from_secs_f64(rand::random_range(0.75..1.25) / s.rate);
        // While busy the slots follow each other exactly (a timer that fires late does not
        // slow the rate); after an idle spell the next slot counts from now (no burst).
        let base = if now.saturating_duration_since(s.next) < interval {
            s.next
        } else {
            now
        };
        s.next = base + interval;
        Ticket { epoch: s.epoch }
    }

    /// The service accepted a request: probe up a step (a rate of r succeeds r times a
    /// second, so the rate grows by `INCREASE_SHARE` of the maximum per second).
    pub(crate) fn succeeded(&self) {
        let mut s = self.lock();
        let step = self.max * INCREASE_SHARE / s.rate.max(1.0);
        s.rate = (s.rate + step).min(self.max);
    }

    /// The service answered 429 to the request of `ticket`.
    pub(crate) fn throttled(&self, ticket: Ticket) {
        let mut s = self.lock();
        if ticket.epoch == s.epoch {
            s.rate = (s.rate * DECREASE).max(self.min);
            s.epoch += 1;
        }
    }

    /// Requests per second now.
    pub(crate) fn rate(&self) -> f64 {
        self.lock().rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The emulator's limiter: a bucket of `rate` tokens refilled at `rate` per second.
    struct Bucket {
        rate: f64,
        tokens: f64,
        last: Instant,
    }

    impl Bucket {
        fn take(&mut self) -> bool {
            let now = Instant::now();
            self.tokens =
                (self.tokens + (now - self.last).as_secs_f64() * self.rate).min(self.rate);
            self.last = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn requests_leave_at_the_rate_and_the_rate_adapts() {
        let p = Pacer::new(n(20));
        let start = Instant::now();
        for _ in 0..21 {
            p.ready().await;
        }
        // 21 requests, 50 ms apart on average: about one second, no burst.
        let took = (Instant::now() - start).as_secs_f64();
        assert!((0.8..1.2).contains(&took), "{took}");
        // A 429 halves the rate once per round: the answers to requests sent before the cut
        // do not cut again.
        let (a, b) = (p.ready().await, p.ready().await);
        p.throttled(a);
        assert_eq!(p.rate(), 10.0);
        p.throttled(b);
        assert_eq!(
            p.rate(),
            10.0,
            "a request of the same round does not cut twice"
        );
        let c = p.ready().await;
        p.throttled(c);
        assert_eq!(p.rate(), 5.0);
        // Successes probe back up, by about 1 request/s per second of sending, to the maximum.
        for _ in 0..5 {
            p.succeeded();
        }
        assert!((p.rate() - 6.0).abs() < 0.1, "{}", p.rate());
        for _ in 0..10_000 {
            p.succeeded();
        }
        assert_eq!(p.rate(), 20.0, "never above the configured rate");
        // Never below the floor.
        for _ in 0..100 {
            let t = p.ready().await;
            p.throttled(t);
        }
        assert_eq!(p.rate(), 0.2);
    }

    /// Four clients, each wanting more than the limit, against one application bucket of 20
    /// requests/s: together they stay near the limit and each gets about a fair share.
    #[tokio::test(start_paused = true)]
    async fn clients_sharing_a_limit_converge_to_fair_shares_near_it() {
        let bucket = Arc::new(Mutex::new(Bucket {
            rate: 20.0,
            tokens: 20.0,
            last: Instant::now(),
        }));
        let warm_up = Duration::from_secs(10);
        // Ten virtual minutes (the clock is paused: about 25 ms of real time). The pacers'
        // jitter is random, and over 120 s one run in 40 had a client 26 % off the mean;
        // over 600 s none of 500 runs did.
        let measured = Duration::from_secs(600);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let bucket = bucket.clone();
            tasks.push(tokio::spawn(async move {
                let p = Pacer::new(n(20));
                let (mut served, mut throttled) = (0u32, 0u32);
                while Instant::now() - start < warm_up + measured {
                    let t = p.ready().await;
                    let counted = Instant::now() - start >= warm_up;
                    if bucket.lock().unwrap().take() {
                        p.succeeded();
                        served += u32::from(counted);
                    } else {
                        p.throttled(t);
                        throttled += u32::from(counted);
                    }
                }
                (served, throttled)
            }));
        }
        let (mut served, mut throttled) = (Vec::new(), 0u32);
        for t in tasks {
            let (s, th) = t.await.unwrap();
            served.push(f64::from(s) / measured.as_secs_f64());
            throttled += th;
        }
        // Few requests are wasted on 429s: each costs its device a Retry-After.
        let sent = served.iter().sum::<f64>() * measured.as_secs_f64() + f64::from(throttled);
        assert!(
            f64::from(throttled) / sent < 0.1,
            "{throttled} of {sent} requests throttled"
        );
        let total: f64 = served.iter().sum();
        let mean = total / 4.0;
        assert!(total >= 0.9 * 20.0, "together {total:.2}/s: {served:?}");
        for s in &served {
            assert!(
                (s - mean).abs() <= 0.25 * mean,
                "unfair: {served:?} (mean {mean:.2})"
            );
        }
    }
}
