//! The cert module (being built).
