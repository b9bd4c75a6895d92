//! The dps module (being built).
