//! xe's output format (cli_printer.ml): padded keys with their tags, two
//! blank lines after each record, `--minimal` comma lists with escaping.

/// One record: (key with tag, value) pairs in record order.
pub fn record(fields: &[(String, String)]) -> String {
    let width = 4 + fields
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (n, (k, v)) in fields.iter().enumerate() {
        if n == 0 {
            out.push_str(&format!("{k:<width$}: {v}\n"));
        } else {
            out.push_str(&format!("{k:>width$}: {v}\n"));
        }
    }
    // The server ends a record with a newline and xe's print_endline adds one.
    out.push_str("\n\n");
    out
}

pub fn key(name: &str, tag: &str) -> String {
    format!("{name} ({tag:>3})")
}

/// `--minimal`: values joined with `,`; commas and backslashes escaped.
pub fn minimal(values: &[String]) -> String {
    values
        .iter()
        .map(|v| v.replace('\\', "\\\\").replace(',', "\\,"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_like_xe() {
        let f = vec![
            (key("uuid", "RO"), "0f6".to_string()),
            (key("device", "RO"), "eth0".to_string()),
            (key("currently-attached", "RO"), "true".to_string()),
            (key("other-config", "MRW"), "a: b; c: d".to_string()),
        ];
        assert_eq!(
            record(&f),
            "uuid ( RO)                  : 0f6\n                device ( RO): eth0\n    currently-attached ( RO): true\n          other-config (MRW): a: b; c: d\n\n\n"
        );
    }

    #[test]
    fn minimal_escapes() {
        assert_eq!(
            minimal(&["a,b".into(), "c\\d".into(), "e".into()]),
            "a\\,b,c\\\\d,e"
        );
    }
}
