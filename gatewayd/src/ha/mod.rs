//! High availability at run time: the ban push between the two nodes of a pair (`sync`, the
//! sans-IO format; `driver`, its UDP task on the management side) and the standby hand-over
//! that keepalived's notify script triggers (`gatewayd ha standby`, `POST /ha/standby`). VRRP
//! itself is keepalived's; this module never moves an address.

pub mod driver;
pub mod sync;

pub use driver::{start, Started};

/// The call-record cause of calls ended because this node lost the virtual addresses.
pub const FAILOVER_CAUSE: &str = "ha-failover";
