//! Process integration: systemd notification (READY, RELOADING, STOPPING, WATCHDOG), signals,
//! the state directory. It must not know about SIP or media.
