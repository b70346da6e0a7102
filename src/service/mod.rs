//! The service an application uses to reach its users, with no engine in it: sessions,
//! path filters, the `websockets.enabled` cascade, user placement, and the upgrade decision
//! (`upgrade`: a request's bytes in, a plan or a refusal out).
#![forbid(unsafe_code)]
pub mod cascade;
pub mod listener;
pub mod path_filter;
pub mod placement;
pub mod plan;
pub mod refusal;
pub mod session;
pub mod upgrade;
pub mod webhook;
