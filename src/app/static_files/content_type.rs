//! The `Content-Type` of a file, from its name's extension.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use http::HeaderValue;

/// The media type for a file name's extension, matched without regard to case.
pub(super) fn content_type(path: &Path) -> HeaderValue {
    // Lowercased on the stack: no extension this knows is longer than 5 bytes.
    let mut lower = [0u8; 8];
    let ext = path.extension().map_or(&b""[..], OsStr::as_bytes);
    let ext = match lower.get_mut(..ext.len()) {
        Some(lower) => {
            lower.copy_from_slice(ext);
            lower.make_ascii_lowercase();
            &*lower
        }
        None => b"",
    };
    // A `const` each, so that the values are checked when compiling, not per request.
    macro_rules! ty {
        ($t:literal) => {{
            const T: HeaderValue = HeaderValue::from_static($t);
            T
        }};
    }
    match ext {
        b"html" | b"htm" => ty!("text/html; charset=utf-8"),
        b"css" => ty!("text/css; charset=utf-8"),
        b"js" | b"mjs" => ty!("text/javascript; charset=utf-8"),
        b"json" | b"map" => ty!("application/json"),
        b"txt" | b"text" | b"log" => ty!("text/plain; charset=utf-8"),
        b"md" => ty!("text/markdown; charset=utf-8"),
        b"csv" => ty!("text/csv; charset=utf-8"),
        b"xml" => ty!("application/xml"),
        b"svg" => ty!("image/svg+xml"),
        b"png" => ty!("image/png"),
        b"jpg" | b"jpeg" => ty!("image/jpeg"),
        b"gif" => ty!("image/gif"),
        b"webp" => ty!("image/webp"),
        b"avif" => ty!("image/avif"),
        b"ico" => ty!("image/x-icon"),
        b"woff" => ty!("font/woff"),
        b"woff2" => ty!("font/woff2"),
        b"ttf" => ty!("font/ttf"),
        b"otf" => ty!("font/otf"),
        b"wasm" => ty!("application/wasm"),
        b"pdf" => ty!("application/pdf"),
        b"zip" => ty!("application/zip"),
        b"gz" => ty!("application/gzip"),
        b"tar" => ty!("application/x-tar"),
        b"mp4" => ty!("video/mp4"),
        b"webm" => ty!("video/webm"),
        b"mp3" => ty!("audio/mpeg"),
        b"ogg" => ty!("audio/ogg"),
        b"wav" => ty!("audio/wav"),
        _ => ty!("application/octet-stream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_ignore_case() {
        for (name, ty) in [
            ("a.HTML", "text/html; charset=utf-8"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.Woff2", "font/woff2"),
            ("a.tar.gz", "application/gzip"),
            ("noext", "application/octet-stream"),
            ("a.verylongextension", "application/octet-stream"),
            ("a.", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(name)), ty, "{name}");
        }
    }
}
