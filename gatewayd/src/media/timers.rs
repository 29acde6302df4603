//! A media worker's deadlines, one per call: the crate's one deadline structure
//! (`crate::deadlines`), shared with call control.

pub(crate) type Timers = crate::deadlines::Deadlines<u64>;
