//! nftables ruleset generation from the profile and its atomic application, plus the ban sets.
//! It touches only the table gatewayd owns.
