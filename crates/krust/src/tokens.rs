//! The static token file (`--token-auth-file`), in kube-apiserver's format.
//!
//! Each line is CSV: `token,user,uid[,"group1,group2"]`. The groups column is quoted
//! when it holds more than one group. Blank lines and lines starting with `#` are
//! skipped. Unlike kube-apiserver, which warns and goes on, krust refuses empty or
//! duplicate tokens and a fifth column (usually an unquoted group list), naming the
//! file and the line, so that a typo never silently changes who can log in.
//!
//! The CSV splitting is written here by hand: the format is one line per record with
//! optional double quotes, which does not justify a CSV dependency.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};
use krust_apiserver::StaticToken;

/// Reads and parses a token file.
pub fn read_token_file(path: &Path) -> Result<Vec<StaticToken>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    parse_tokens(&text).map_err(|(line, message)| {
        anyhow::anyhow!("token file {} line {line}: {message}", path.display())
    })
}

/// Parses the text of a token file. Errors carry the 1-based line number.
fn parse_tokens(text: &str) -> Result<Vec<StaticToken>, (usize, String)> {
    let mut tokens = Vec::new();
    let mut seen = HashSet::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv_line(line).map_err(|message| (line_number, message))?;
        let token = parse_record(&fields).map_err(|message| (line_number, message))?;
        if !seen.insert(token.token.clone()) {
            return Err((
                line_number,
                "this token already appears on an earlier line; tokens must be unique".into(),
            ));
        }
        tokens.push(token);
    }
    Ok(tokens)
}

fn parse_record(fields: &[String]) -> Result<StaticToken, String> {
    const FORMAT: &str = r#"expected token,user,uid[,"group1,group2"]"#;
    if fields.len() < 3 {
        return Err(format!("{FORMAT}, found {} column(s)", fields.len()));
    }
    if fields.len() > 4 {
        return Err(format!(
            "{FORMAT}, found {} columns; quote the groups column when it lists several groups",
            fields.len()
        ));
    }
    if fields[0].is_empty() {
        return Err("the token (first column) is empty".into());
    }
    if fields[1].is_empty() {
        return Err("the user name (second column) is empty".into());
    }
    let groups = fields
        .get(3)
        .map(|groups| {
            groups
                .split(',')
                .map(str::trim)
                .filter(|group| !group.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(StaticToken {
        token: fields[0].clone(),
        user: fields[1].clone(),
        uid: fields[2].clone(),
        groups,
    })
}

/// Splits one CSV line into fields. Fields may be double-quoted (`""` is a literal
/// quote inside quotes); whitespace around fields is dropped.
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        // Skip leading whitespace of a field.
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed (missing '\"')".into()),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(format!(
                        "unexpected {c:?} after a closing quote; expected ',' or the end of the line"
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim_end().to_string());
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field.trim_end().to_string());
                        break;
                    }
                    Some('"') => {
                        return Err(
                            "a '\"' inside an unquoted field; quote the whole field instead".into(),
                        );
                    }
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_with_and_without_groups() {
        let text =
            "\n# admins\nt1,alice,1001,\"system:masters,devs\"\nt2, bob ,1002\nt3,carol,1003,ops\n";
        let tokens = parse_tokens(text).unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens[0].token, "t1");
        assert_eq!(tokens[0].user, "alice");
        assert_eq!(tokens[0].uid, "1001");
        assert_eq!(tokens[0].groups, vec!["system:masters", "devs"]);
        assert_eq!(tokens[1].user, "bob");
        assert!(tokens[1].groups.is_empty());
        assert_eq!(tokens[2].groups, vec!["ops"]);
    }

    #[test]
    fn quoted_fields_keep_commas_and_escaped_quotes() {
        let fields = split_csv_line(r#""a,b" , "say ""hi""",c"#).unwrap();
        assert_eq!(fields, vec!["a,b", r#"say "hi""#, "c"]);
        assert_eq!(split_csv_line("a,,c").unwrap(), vec!["a", "", "c"]);
        assert_eq!(split_csv_line("a,b,").unwrap(), vec!["a", "b", ""]);
    }

    #[test]
    fn bad_lines_name_the_line() {
        let cases = [
            ("t1,alice,1\nt2,bob\n", 2, "found 2 column"),
            ("t1,alice,1,g1,g2\n", 1, "quote the groups column"),
            ("t1,alice,1,\"g1,g2\n", 1, "not closed"),
            (",alice,1\n", 1, "token (first column) is empty"),
            ("t1,,1\n", 1, "user name"),
            ("t1,alice,1\n\nt1,bob,2\n", 3, "already appears"),
            ("t1,al\"ice,1\n", 1, "inside an unquoted field"),
        ];
        for (text, line, needle) in cases {
            let (got_line, message) = parse_tokens(text).unwrap_err();
            assert_eq!(got_line, line, "{text:?}: {message}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }

    #[test]
    fn file_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "t1,alice\n").unwrap();
        let message = format!("{:#}", read_token_file(&path).unwrap_err());
        assert!(message.contains("tokens.csv line 1"), "{message}");

        let missing = dir.path().join("missing.csv");
        let message = format!("{:#}", read_token_file(&missing).unwrap_err());
        assert!(message.contains("missing.csv"), "{message}");
    }
}
