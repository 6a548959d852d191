//! The Settings → API page: one HTML file, a style sheet and a script, compiled into the crate
//! and served under a strict Content-Security-Policy. Nothing is fetched from elsewhere.

use axum::extract::OriginalUri;
use axum::http::{header, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::openapi::mount_prefix;

const INDEX: &str = include_str!("page/index.html");
const STYLE: &str = include_str!("page/app.css");
const SCRIPT: &str = include_str!("page/app.js");

/// The `Content-Security-Policy` of the page and its assets: its own script, style and API,
/// nothing else; no framing, no forms posted elsewhere. A login page of the application may
/// reuse it.
///
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The page's routes: `/`, `/assets/app.css`, `/assets/app.js`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.css", get(style))
        .route("/assets/app.js", get(script))
}

fn secured(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    // Revalidated on every load, so that an upgrade of the crate is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index(OriginalUri(original): OriginalUri, uri: Uri) -> Response {
    let base = escape_html(&mount_prefix(&original, &uri));
    let mut response = secured(
        INDEX.replace("__BASE__", &base).into_response(),
        "text/html; charset=utf-8",
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn style() -> Response {
    secured(STYLE.into_response(), "text/css; charset=utf-8")
}

async fn script() -> Response {
    secured(SCRIPT.into_response(), "text/javascript; charset=utf-8")
}

/// `text` with `&`, `<`, `>`, `"` and `'` written as character references.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            escape_html(r#"/a"><script>&'"#),
            "/a&quot;&gt;&lt;script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let lower = INDEX.to_ascii_lowercase();
        assert!(!lower.contains("<style"), "no inline style element");
        assert!(!lower.contains(" style="), "no style attributes");
        assert!(!lower.contains(" onclick=") && !lower.contains(" onload="));
        for script in lower.split("<script").skip(1) {
            let tag_end = script.find('>').expect("a script tag is closed");
            assert!(script[..tag_end].contains("src="), "no inline script");
        }
        assert!(
            !SCRIPT.contains("innerHTML"),
            "the script builds the DOM, never parses HTML"
        );
        assert!(!SCRIPT.contains("eval("));
    }
}
