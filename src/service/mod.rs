//! The service an application uses to reach its users: sessions, path filters, the
//! `websockets.enabled` cascade, Engine.IO / Socket.IO sessions (sans-IO).
#![forbid(unsafe_code)]
pub mod cascade;
pub mod engineio;
pub mod listener;
pub mod path_filter;
pub mod placement;
pub mod session;
pub mod webhook;
