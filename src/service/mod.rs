//! The service an application uses to reach its users, with no engine in it: sessions,
//! path filters, the `websockets.enabled` cascade, user placement, the upgrade decision
//! (`upgrade`: a request's bytes in, a plan or a refusal out) and Engine.IO / Socket.IO
//! sessions (`engineio`: packets, requests and the time in, actions out), JSON Web Tokens
//! (`jwt`: where a request carries one, and its pure verification), the connect proxy of
//! `auth = "proxy"` endpoints (`proxy_auth`: request, answer, cache; `proxy_client`: the calls).
#![forbid(unsafe_code)]
pub mod cascade;
pub mod engineio;
pub mod history;
pub mod jwks;
pub mod jwt;
pub mod listener;
pub mod path_filter;
pub mod placement;
pub mod plan;
pub mod prometheus;
pub mod proxy_auth;
pub mod proxy_client;
pub mod refusal;
pub mod session;
pub mod upgrade;
pub mod user_id;
pub mod webhook;
