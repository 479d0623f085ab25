//! Swagger UI at `/docs`, from assets vendored in `api/assets/swagger-ui/`
//! (swagger-ui-dist, see the README there) and compiled into the binary:
//! nothing is fetched at build time or at run time, so the docs work on an
//! air-gapped host.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// How long browsers may cache the assets: they change only with the binary.
const ASSET_CACHE_CONTROL: &str = "public, max-age=3600";

/// A file served under `/docs/`.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// The vendored assets, and the initializer that points the UI at
/// `/openapi.json` (ours: kept out of the HTML so that the page has no
/// inline script).
pub const ASSETS: [Asset; 4] = [
    Asset {
        name: "swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    },
    Asset {
        name: "swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    },
    Asset {
        name: "swagger-ui-standalone-preset.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/swagger-ui/swagger-ui-standalone-preset.js"),
    },
    Asset {
        name: "swagger-initializer.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: INITIALIZER.as_bytes(),
    },
];

const INITIALIZER: &str = r##"window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  });
};
"##;

/// Absolute asset URLs: `/docs/` and `/docs` are the same route (trailing
/// slashes are trimmed), so relative ones would resolve differently.
const INDEX: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>ledger-server API</title>
    <link rel="stylesheet" type="text/css" href="/docs/swagger-ui.css">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js" charset="utf-8"></script>
    <script src="/docs/swagger-ui-standalone-preset.js" charset="utf-8"></script>
    <script src="/docs/swagger-initializer.js" charset="utf-8"></script>
  </body>
</html>
"#;

/// `GET /docs`.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    summary = "Swagger UI for this API",
    responses((status = 200, description = "The Swagger UI page", content_type = "text/html", body = String)),
)]
pub async fn index() -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        INDEX,
    )
        .into_response()
}

/// `GET /docs/{file}`.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "operations",
    summary = "A Swagger UI asset",
    params(("file" = String, Path, description = "swagger-ui.css, swagger-ui-bundle.js, swagger-ui-standalone-preset.js or swagger-initializer.js")),
    responses(
        (status = 200, description = "The asset", content_type = "text/javascript", body = String),
        (status = 404, description = "`not_found`: no such asset", body = super::schemas::ErrorBody),
    ),
)]
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == file)
        .ok_or_else(|| ApiError::NotFound("no such asset".into()))?;
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE_CONTROL)),
        ],
        asset.bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_references_every_asset() {
        for asset in &ASSETS {
            assert!(
                INDEX.contains(&format!("/docs/{}", asset.name)),
                "{}",
                asset.name
            );
        }
        assert!(INITIALIZER.contains("\"/openapi.json\""));
    }

    #[test]
    fn the_vendored_assets_are_the_real_files() {
        for asset in &ASSETS[..3] {
            assert!(
                asset.bytes.len() > 100_000,
                "{} looks truncated",
                asset.name
            );
        }
    }
}
