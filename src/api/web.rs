//! The web dashboard at `/`: static files (HTML, CSS, ES modules) from
//! `web/`, embedded in the binary so installing cairn needs no asset
//! directory nor Node toolchain. The page holds no data and needs no
//! token; its script asks the user for one and sends it to `/api/v1`.
//! Every answer carries a Content-Security-Policy that allows only this
//! origin (no inline script, no other host), and an ETag so browsers
//! revalidate instead of refetching. Only embedded names are served:
//! a request path is looked up, never joined to a directory.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

#[derive(rust_embed::Embed)]
#[folder = "web/"]
struct Assets;

/// Sent with every dashboard file: scripts, styles, images and API calls
/// from this origin only, no plugins, no framing, forms to this origin.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes: `/` (the page) and `/assets/NAME`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    // The page is `/`; its assets are the other embedded files.
    if name == "index.html" {
        return not_found();
    }
    serve(&name, &headers)
}

/// The content type of an embedded file, by its extension; `None` for a
/// file the dashboard does not serve.
fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        _ => return None,
    })
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let (Some(file), Some(ctype)) = (Assets::get(name), content_type(name)) else {
        return not_found();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(ctype))],
            file.data.into_owned(),
        )
            .into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    secure(h);
    resp
}

/// Security headers of every dashboard answer; files are revalidated on
/// each load (`no-cache` with the ETag), so an upgraded binary's files
/// are picked up at once.
fn secure(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn not_found() -> Response {
    let mut resp = (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "not found\n",
    )
        .into_response();
    secure(resp.headers_mut());
    resp
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn call(uri: &str, etag: Option<&str>) -> Response {
        let mut req = Request::get(uri);
        if let Some(t) = etag {
            req = req.header(header::IF_NONE_MATCH, t);
        }
        router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_their_types_and_csp() {
        for (uri, ctype) in [
            ("/", "text/html; charset=utf-8"),
            ("/assets/app.js", "text/javascript; charset=utf-8"),
            ("/assets/style.css", "text/css; charset=utf-8"),
            ("/assets/favicon.svg", "image/svg+xml"),
        ] {
            let r = call(uri, None).await;
            assert_eq!(r.status(), StatusCode::OK, "{uri}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], ctype, "{uri}");
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
            let etag = r.headers()[header::ETAG].to_str().unwrap().to_string();
            let again = call(uri, Some(&etag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{uri}");
        }
    }

    #[tokio::test]
    async fn every_module_the_page_loads_is_embedded() {
        // The page imports modules by relative name; a missing one would
        // only show in a browser.
        for name in Assets::iter() {
            let text = String::from_utf8(Assets::get(&name).unwrap().data.into_owned()).unwrap();
            for import in text
                .split("from \"./")
                .skip(1)
                .chain(text.split("src=\"/assets/").skip(1))
                .chain(text.split("href=\"/assets/").skip(1))
            {
                let target = import.split('"').next().unwrap();
                assert!(
                    Assets::get(target).is_some(),
                    "{name} loads {target}, which is not embedded"
                );
            }
        }
    }

    #[tokio::test]
    async fn names_outside_the_embedded_files_are_not_found() {
        for uri in [
            "/assets/../Cargo.toml",
            "/assets/..%2F..%2Fetc%2Fpasswd",
            "/assets/%2Fetc%2Fpasswd",
            "/assets/index.html",
            "/assets/nope.js",
            "/../../etc/passwd",
            "/etc/passwd",
        ] {
            let r = call(uri, None).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{uri}");
        }
    }
}
