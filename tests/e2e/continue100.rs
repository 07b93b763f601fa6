//! continue100
