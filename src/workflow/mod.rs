//! Onboarding and factory batch provisioning: the flows that string [`crate::cert`],
//! [`crate::central`] and [`crate::dps`] together.
//!
//! A batch is planned from a validated [`manifest`] into a durable [`journal`]; each device
//! then moves through the journal's states (key, certificate, IoT Central device, DPS
//! registration, [`bundle`]) with every step committed before the next one starts, so a
//! crash never loses or doubles anything; the run ends with a [`report`]. In a [`csr`] batch
//! the devices keep their own keys: the station signs their CSRs, and [`status`] follows up
//! on which devices have registered since.

pub mod bundle;
pub mod csr;
pub mod journal;
pub mod manifest;
pub mod onboard;
pub mod provision;
pub mod report;
pub mod services;
pub mod status;
