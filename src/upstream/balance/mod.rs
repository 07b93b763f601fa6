//! (placeholder until the config branch lands)
