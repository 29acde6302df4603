//! RFC 4028 session timers for one leg, sans-IO: what a request or response negotiates, when we
//! must send a refresh, and when a peer that should have refreshed has let the session expire.
//! It reads and writes header values only; sending the refresh or the BYE is call control's job.

use std::time::{Duration, Instant};

use crate::sip::headers::{header_param, split_header_list, split_header_params};

/// The smallest interval we accept (RFC 4028 section 4: never below 90 s).
pub const MIN_SE_SECS: u32 = 90;

/// Which end of the dialog sends the refreshes, named as in the header (`uac`/`uas`) relative
/// to the transaction that negotiated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// A parsed `Session-Expires` value: `1800;refresher=uac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    pub secs: u32,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    pub fn parse(value: &str) -> Option<Self> {
        let secs = split_header_params(value).0.trim().parse().ok()?;
        let refresher = header_param(value, "refresher").and_then(|v| match v.to_ascii_lowercase().as_str() {
            "uac" => Some(Refresher::Uac),
            "uas" => Some(Refresher::Uas),
            _ => None,
        });
        Some(SessionExpires { secs, refresher })
    }

    pub fn header_value(secs: u32, refresher: Refresher) -> String {
        format!("{secs};refresher={}", refresher.as_str())
    }
}

/// What we answer a session-refreshing request (INVITE, re-INVITE, UPDATE) with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasDecision {
    /// No timer on this leg (the request asked for none).
    NoTimer,
    /// 2xx with `Session-Expires: secs;refresher=...` (and `Require: timer` when the peer refreshes).
    Timer { secs: u32, refresher: Refresher },
    /// 422 Session Interval Too Small with `Min-SE`.
    TooSmall { min_se: u32 },
}

/// RFC 4028 section 9, as UAS. `session_expires` and `supported_timer` come from the request.
/// We never volunteer a timer the peer did not ask for; when it asks without naming the
/// refresher, it refreshes itself if it can (it said `Supported: timer`), otherwise we do.
pub fn as_uas(session_expires: Option<&str>, supported_timer: bool) -> UasDecision {
    let Some(se) = session_expires.and_then(SessionExpires::parse) else { return UasDecision::NoTimer };
    if se.secs < MIN_SE_SECS {
        return UasDecision::TooSmall { min_se: MIN_SE_SECS };
    }
    let refresher = se.refresher.unwrap_or(if supported_timer { Refresher::Uac } else { Refresher::Uas });
    UasDecision::Timer { secs: se.secs, refresher }
}

/// Whose job refreshing is on a leg, from our side of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We send a refresh at half the interval.
    WeRefresh,
    /// The peer does; we end the call if it stops.
    PeerRefreshes,
}

/// The timer running on one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTimer {
    pub secs: u32,
    pub role: Role,
    /// When the session was last refreshed (a 2xx to an INVITE or UPDATE).
    pub refreshed_at: Instant,
    /// Our refresh request in flight, so we do not stack another on it.
    pub refreshing: bool,
    /// After a 491 (glare) or a failed send: when to try our refresh again.
    pub retry_at: Option<Instant>,
}

impl SessionTimer {
    /// A timer negotiated by a transaction in which we were `we_were` (UAC or UAS), with the
    /// refresher the 2xx named.
    pub fn negotiated(secs: u32, refresher: Refresher, we_were: Refresher, now: Instant) -> Self {
        let role = if refresher == we_were { Role::WeRefresh } else { Role::PeerRefreshes };
        SessionTimer { secs, role, refreshed_at: now, refreshing: false, retry_at: None }
    }

    /// A 2xx to a session refresh (either direction) restarts the interval.
    pub fn refreshed(&mut self, now: Instant) {
        self.refreshed_at = now;
        self.refreshing = false;
        self.retry_at = None;
    }

    /// When something must happen on this leg: our refresh is due, or the peer's is overdue.
    pub fn deadline(&self) -> Instant {
        let interval = Duration::from_secs(u64::from(self.secs));
        match self.role {
            // While our refresh is out, the next thing that can happen is giving up on it.
            Role::WeRefresh if self.refreshing => self.refreshed_at + interval,
            Role::WeRefresh => self.retry_at.unwrap_or(self.refreshed_at + interval / 2),
            // RFC 4028 section 10: BYE at the interval minus the lesser of 32 s and a third of it.
            Role::PeerRefreshes => self.refreshed_at + interval - Duration::from_secs(32).min(interval / 3),
        }
    }

    /// What is due at `now`.
    pub fn due(&self, now: Instant) -> Due {
        if now < self.deadline() {
            return Due::Nothing;
        }
        match self.role {
            Role::WeRefresh if self.refreshing => {
                // Our refresh got no answer for a whole interval: the session is gone.
                if now >= self.refreshed_at + Duration::from_secs(u64::from(self.secs)) {
                    Due::Expired
                } else {
                    Due::Nothing
                }
            }
            Role::WeRefresh => Due::Refresh,
            Role::PeerRefreshes => Due::Expired,
        }
    }

    /// After a 491 to our refresh (or a refresh we could not send): RFC 3261 section 14.1's
    /// back-off, 2.1-4 s when we own the Call-ID (we sent the leg's first INVITE), 0-2 s otherwise.
    pub fn back_off(&mut self, now: Instant, call_id_owner: bool, random_ms: u32) -> Instant {
        let wait_ms = if call_id_owner { 2100 + random_ms % 1901 } else { random_ms % 2001 };
        let at = now + Duration::from_millis(u64::from(wait_ms));
        self.refreshing = false;
        self.retry_at = Some(at);
        at
    }
}

/// What a leg's session timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Nothing,
    /// Send a session refresh now.
    Refresh,
    /// The session expired: end the call.
    Expired,
}

/// The interval a 422's `Min-SE` asks for.
pub fn min_se(response: &rsip::Response) -> Option<u32> {
    let value = super::build::header(&response.headers, "Min-SE")?;
    split_header_params(&value).0.trim().parse().ok()
}

/// Whether a comma-separated header value (`Supported`, `Require`, `Allow`) lists `token`.
pub fn lists(value: &str, token: &str) -> bool {
    split_header_list(value).any(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_session_expires_with_and_without_refresher() {
        assert_eq!(SessionExpires::parse("1800;refresher=uac"), Some(SessionExpires { secs: 1800, refresher: Some(Refresher::Uac) }));
        assert_eq!(SessionExpires::parse(" 90 ; Refresher = UAS "), Some(SessionExpires { secs: 90, refresher: Some(Refresher::Uas) }));
        assert_eq!(SessionExpires::parse("600"), Some(SessionExpires { secs: 600, refresher: None }));
        assert_eq!(SessionExpires::parse("x;refresher=uac"), None);
        assert_eq!(SessionExpires::header_value(90, Refresher::Uac), "90;refresher=uac");
    }

    #[test]
    fn uas_keeps_the_asked_refresher_and_refuses_short_intervals() {
        assert_eq!(as_uas(None, true), UasDecision::NoTimer);
        assert_eq!(as_uas(Some("1800;refresher=uas"), true), UasDecision::Timer { secs: 1800, refresher: Refresher::Uas });
        assert_eq!(as_uas(Some("1800"), true), UasDecision::Timer { secs: 1800, refresher: Refresher::Uac });
        assert_eq!(as_uas(Some("1800"), false), UasDecision::Timer { secs: 1800, refresher: Refresher::Uas });
        assert_eq!(as_uas(Some("30;refresher=uac"), true), UasDecision::TooSmall { min_se: 90 });
        assert!(lists("100rel, Timer", "timer"));
        assert!(!lists("replaces", "timer"));
    }

    #[test]
    fn refresher_sends_at_half_the_interval_and_gives_up_after_a_whole_one() {
        let t0 = Instant::now();
        let mut t = SessionTimer::negotiated(120, Refresher::Uac, Refresher::Uac, t0);
        assert_eq!(t.role, Role::WeRefresh);
        assert_eq!(t.due(t0 + Duration::from_secs(59)), Due::Nothing);
        assert_eq!(t.due(t0 + Duration::from_secs(60)), Due::Refresh);
        t.refreshing = true;
        assert_eq!(t.deadline(), t0 + Duration::from_secs(120), "no busy wake-ups while our refresh is out");
        assert_eq!(t.due(t0 + Duration::from_secs(100)), Due::Nothing);
        assert_eq!(t.due(t0 + Duration::from_secs(120)), Due::Expired);
        t.refreshed(t0 + Duration::from_secs(61));
        assert_eq!(t.deadline(), t0 + Duration::from_secs(121));
    }

    #[test]
    fn peer_refresher_expires_early_by_a_third_or_32_seconds() {
        let t0 = Instant::now();
        let short = SessionTimer::negotiated(90, Refresher::Uac, Refresher::Uas, t0);
        assert_eq!(short.role, Role::PeerRefreshes);
        assert_eq!(short.deadline(), t0 + Duration::from_secs(60));
        let long = SessionTimer::negotiated(1800, Refresher::Uas, Refresher::Uac, t0);
        assert_eq!(long.deadline(), t0 + Duration::from_secs(1768));
        assert_eq!(long.due(t0 + Duration::from_secs(1767)), Due::Nothing);
        assert_eq!(long.due(t0 + Duration::from_secs(1768)), Due::Expired);
    }

    #[test]
    fn glare_backs_off_by_call_id_ownership() {
        let t0 = Instant::now();
        let mut t = SessionTimer::negotiated(90, Refresher::Uac, Refresher::Uac, t0);
        t.refreshing = true;
        let owner = t.back_off(t0, true, 5000);
        assert!(owner >= t0 + Duration::from_millis(2100) && owner <= t0 + Duration::from_millis(4000));
        assert_eq!(t.deadline(), owner);
        assert!(!t.refreshing);
        let other = t.back_off(t0, false, 5000);
        assert!(other <= t0 + Duration::from_millis(2000));
    }
}
