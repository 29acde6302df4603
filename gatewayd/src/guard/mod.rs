//! The guard: failure events from every listener feed a sans-IO ban engine (fail2ban-style
//! rules, allowlist, escalation) and per-source rate limits. Bans are carried out by `firewall`.
