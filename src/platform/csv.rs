//! CSV for the routes that offer it (`Accept: text/csv`): spreadsheet-safe cells, CRLF lines.

use axum::http::{header, HeaderMap};

/// The response's form, from `Accept`: CSV when it asks for `text/csv`, JSON otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    pub fn of(headers: &HeaderMap) -> Self {
        let csv = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|media| {
                media
                    .split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"))
            });
        if csv {
            Self::Csv
        } else {
            Self::Json
        }
    }
}

/// The content type of a CSV body.
pub const CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` (or a tab or carriage
/// return, which some treat the same) as a formula: such a cell gets a leading `'`. Cells with
/// a comma, quote or line break are quoted.
pub fn cell(value: &str) -> String {
    let escaped = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if escaped.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", escaped.replace('"', "\"\""))
    } else {
        escaped
    }
}

/// One line of cells, CRLF-terminated.
pub fn line(cells: &[String]) -> String {
    let mut line = cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(",");
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn cells_a_spreadsheet_would_run_are_escaped_and_others_quoted_only_when_needed() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-50.00"), "'-50.00");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("50.00"), "50.00");
        assert_eq!(cell(""), "");
        assert_eq!(line(&["a".into(), "=b".into()]), "a,'=b\r\n");
    }

    #[test]
    fn csv_is_asked_for_by_accept_and_json_is_the_default() {
        let mut headers = HeaderMap::new();
        assert_eq!(Format::of(&headers), Format::Json);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, TEXT/CSV;q=0.5"),
        );
        assert_eq!(Format::of(&headers), Format::Csv);
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/csvx"));
        assert_eq!(Format::of(&headers), Format::Json);
    }
}
