//! JSON strings written by hand into the slow-query log's buffer (see
//! `logline.rs` for why lines are not built through `serde_json` values).

/// Writes `s` as a JSON string: quotes, and escapes for `"`, `\` and
/// control characters; everything else (UTF-8 included) as it is.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's string escaping; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// Bytes this module wrote from `&str`s and ASCII: valid UTF-8.
pub fn into_text(bytes: Vec<u8>) -> Box<str> {
    String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        .into_boxed_str()
}
