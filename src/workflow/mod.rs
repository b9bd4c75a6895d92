//! Onboarding and factory batch provisioning: the flows that string [`crate::cert`],
//! [`crate::central`] and [`crate::dps`] together.
//!
//! A batch is planned from a validated [`manifest`] into a durable [`journal`]; each device
//! then moves through the journal's states (key, certificate, IoT Central device, DPS
//! registration, [`bundle`]) with every step committed before the next one starts, so a
//! crash never loses or doubles anything; the run ends with a [`report`]. In a [`csr`] batch
//! the devices keep their own keys: the station signs their CSRs, and [`status`] follows up
//! on which devices have registered since. The rest of a device's life runs on the same
//! [`engine`] and journal: certificate [`renew`]al, the [`revoke`]ation of a lost station's
//! devices (their tables are the [`ledger`]), and the CA [`rollover`] of an enrollment group.

pub mod bundle;
pub mod csr;
pub mod engine;
pub mod journal;
pub mod ledger;
pub mod manifest;
pub mod onboard;
pub mod provision;
pub mod renew;
pub mod report;
pub mod revoke;
pub mod rollover;
pub mod services;
pub mod status;
