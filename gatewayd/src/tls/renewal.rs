//! When to ask the ACME CA for a certificate: a pure function of the certificate in service,
//! the failures since the last success, the current time and a random draw. It never touches
//! the CA, the clock or the files (the driver in `acme` does); it reads a certificate's
//! validity from PEM it is given.
//!
//! A certificate is renewed once two thirds of its lifetime have passed (a 90-day certificate
//! at day 60, as Let's Encrypt advises), which leaves a month of retries before it expires.
//! Failures back off exponentially from [`FIRST_RETRY`] to [`LAST_RETRY`], each wait drawn
//! between half and all of its step so a fleet of gateways never retries in step against the CA.

use std::time::Duration;

/// The first wait after a failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// The longest wait between attempts while failing.
pub const LAST_RETRY: Duration = Duration::from_secs(6 * 3600);

/// The validity of the certificate in service, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// The validity of the first certificate in a PEM chain.
    pub fn of_leaf(chain_pem: &[u8]) -> Option<Validity> {
        let der = rustls_pemfile::certs(&mut &chain_pem[..]).next()?.ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        Some(Validity { not_before: cert.validity().not_before.timestamp(), not_after: cert.validity().not_after.timestamp() })
    }

    /// When renewal is due: two thirds into the lifetime.
    pub fn renew_at(&self) -> i64 {
        let lifetime = (self.not_after - self.not_before).max(0);
        self.not_before + lifetime * 2 / 3
    }
}

/// The Unix time of the next attempt. `jitter` is a random draw in [0, 1).
pub fn next_attempt(now: i64, current: Option<Validity>, failures: u32, last_attempt: Option<i64>, jitter: f64) -> i64 {
    let due = current.map_or(now, |v| v.renew_at());
    if failures == 0 {
        return due;
    }
    let step = FIRST_RETRY.as_secs_f64() * 2f64.powi(failures.saturating_sub(1).min(20) as i32);
    let step = step.min(LAST_RETRY.as_secs_f64());
    let wait = (step * (0.5 + jitter.clamp(0.0, 1.0) / 2.0)) as i64;
    let retry = last_attempt.unwrap_or(now) + wait.max(1);
    retry.max(due)
}

/// Whole days left before `not_after` (negative once expired), for the expiry gauge.
pub fn days_left(now: i64, not_after: i64) -> f64 {
    (not_after - now) as f64 / 86_400.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn a_first_certificate_is_asked_for_at_once() {
        assert_eq!(next_attempt(1_000, None, 0, None, 0.3), 1_000);
    }

    #[test]
    fn a_certificate_is_renewed_two_thirds_into_its_life() {
        let v = Validity { not_before: 0, not_after: 90 * DAY };
        assert_eq!(v.renew_at(), 60 * DAY);
        assert_eq!(next_attempt(10 * DAY, Some(v), 0, None, 0.9), 60 * DAY, "not before it is due");
        assert_eq!(next_attempt(70 * DAY, Some(v), 0, None, 0.9), 60 * DAY, "overdue: now (the past means at once)");
    }

    #[test]
    fn failures_back_off_with_jitter_and_a_ceiling() {
        let v = Validity { not_before: 0, not_after: 90 * DAY };
        let now = 61 * DAY;
        let first = next_attempt(now, Some(v), 1, Some(now), 0.0) - now;
        assert_eq!(first, 15, "half of the first step at the lowest draw");
        let first_high = next_attempt(now, Some(v), 1, Some(now), 0.999) - now;
        assert!((29..=30).contains(&first_high), "{first_high}");
        let third = next_attempt(now, Some(v), 3, Some(now), 0.0) - now;
        assert_eq!(third, 60, "30 s doubled twice, halved by the draw");
        let many = next_attempt(now, Some(v), 40, Some(now), 0.999) - now;
        assert!(many <= LAST_RETRY.as_secs() as i64 && many > LAST_RETRY.as_secs() as i64 / 2, "{many}");
        // Never a tight loop: even with no certificate at all.
        assert!(next_attempt(now, None, 1, Some(now), 0.0) > now);
    }

    #[test]
    fn a_retry_never_comes_before_renewal_is_due() {
        let v = Validity { not_before: 0, not_after: 90 * DAY };
        // A failure long before the due date (say a forced attempt) waits for the due date.
        assert_eq!(next_attempt(DAY, Some(v), 1, Some(DAY), 0.5), 60 * DAY);
    }

    #[test]
    fn days_left_counts_down_through_zero() {
        assert_eq!(days_left(0, 30 * DAY), 30.0);
        assert!(days_left(31 * DAY, 30 * DAY) < 0.0);
    }
}
