//! Call control's deadlines: the crate's one deadline structure (`crate::deadlines`), shared
//! with the media workers.

pub(crate) use crate::deadlines::Deadlines;
