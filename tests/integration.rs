//! The one integration test binary: the real `jobhost` binary driven through its
//! folders, as users drive it. See `support` for the rules every test keeps (no
//! sleeping as synchronisation, nothing left running).

#![allow(clippy::unwrap_used)]

mod support;

#[path = "integration/bad_input.rs"]
mod bad_input;
#[path = "integration/check.rs"]
mod check;
#[path = "integration/continuous.rs"]
mod continuous;
#[path = "integration/singleton.rs"]
mod singleton;
