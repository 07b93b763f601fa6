//! (being written)
pub mod balance;
