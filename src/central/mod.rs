//! The IoT Central data-plane client (api-version 2022-07-31).
//!
//! One client handles auth, api-version, retries, pacing and paging; each resource has its
//! own file. The wire models in [`models`] are shared with the emulator.

pub mod models;
