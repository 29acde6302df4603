//! The softphone bundle (`web/dist/`), embedded at build time. A build without the bundle still
//! succeeds and serves a short page saying so at `/`.

use std::borrow::Cow;

#[derive(rust_embed::Embed)]
#[folder = "$CARGO_MANIFEST_DIR/../web/dist"]
#[allow_missing = true]
struct Dist;

/// One file to serve.
pub(crate) struct Asset {
    pub body: Cow<'static, [u8]>,
    pub content_type: String,
    /// Strong validator: the file's SHA-256, quoted.
    pub etag: String,
}

/// The file at `path` (without the leading `/`; empty for the page itself).
pub(crate) fn get(path: &str) -> Option<Asset> {
    let name = if path.is_empty() { "index.html" } else { path };
    match Dist::get(name) {
        Some(file) => {
            let hash = file.metadata.sha256_hash();
            Some(Asset {
                content_type: content_type(name, file.metadata.mimetype()),
                etag: format!("\"{}\"", hex::encode(&hash[..16])),
                body: file.data,
            })
        }
        None if name == "index.html" => Some(Asset {
            body: Cow::Borrowed(MISSING_PAGE.as_bytes()),
            content_type: "text/html; charset=utf-8".into(),
            etag: "\"bundle-missing\"".into(),
        }),
        None => None,
    }
}

/// Text types get an explicit charset; the rest keep what the extension says.
fn content_type(name: &str, guessed: &str) -> String {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" => "text/html; charset=utf-8".into(),
        "js" | "mjs" => "text/javascript; charset=utf-8".into(),
        "css" => "text/css; charset=utf-8".into(),
        "map" | "json" => "application/json".into(),
        "txt" => "text/plain; charset=utf-8".into(),
        _ => guessed.into(),
    }
}

const MISSING_PAGE: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gatewayd</title></head>
<body><h1>Softphone not installed</h1>
<p>This gatewayd was built without the softphone bundle (web/dist). Build it with
<code>npm ci &amp;&amp; npm run build</code> in <code>web/</code>, then rebuild gatewayd.</p>
<p>SIP over WebSocket is available at <code>/ws</code>.</p></body></html>
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_always_there_and_types_carry_charsets() {
        let page = get("").expect("index.html or the missing-bundle page");
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        assert!(page.etag.starts_with('"') && page.etag.ends_with('"'));
        assert_eq!(content_type("app.js", "application/javascript"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.svg", "image/svg+xml"), "image/svg+xml");
        assert!(get("no-such-file.txt").is_none());
    }
}
