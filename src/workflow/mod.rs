//! The workflow module (being built).
