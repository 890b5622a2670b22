//! Escaping for the server-rendered pages: HTML text and attributes, and query values.

use std::fmt::Write as _;

/// Escapes text for HTML (text and quoted attributes) and SVG.
#[must_use]
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value; `keep` lists bytes left as they are besides the
/// unreserved ones (`A-Z a-z 0-9 - _ . ~`), e.g. `b"/"` for a local path.
#[must_use]
pub fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_query_characters_are_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(percent_encode("/a b?c=长", b"/"), "/a%20b%3Fc%3D%E9%95%BF");
        assert_eq!(percent_encode("/a", b""), "%2Fa");
    }
}
