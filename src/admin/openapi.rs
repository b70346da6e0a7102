//! `GET /v1/openapi.json`: the admin API's OpenAPI 3 document, `docs/openapi.json` of the
//! source tree built into the binary (so the node serves the contract it was built with).
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as in the repository.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

pub async fn openapi() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DOCUMENT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;

    #[test]
    fn the_document_is_json_for_this_version() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("docs/openapi.json");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        // Bump docs/openapi.json's info.version with Cargo.toml's.
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        for path in [
            "/v1/sessions",
            "/v1/sessions/{id}",
            "/v1/push",
            "/v1/push/batch",
            "/v1/sockets",
            "/v1/stats",
            "/v1/config/reload",
            "/metrics",
            "/healthz",
            "/readyz",
            "/",
            "/v1/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} not documented");
        }
    }
}
