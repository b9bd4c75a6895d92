//! The emulator module (being built).
