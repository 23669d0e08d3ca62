//! Validation of names, labels, annotations and object metadata, reported as field
//! [`Cause`]s with upstream's wording, plus the per-resource checks of the most used
//! kinds.
//!
//! The module has three layers:
//!
//! - string checkers (`is_dns1123_label`, `is_qualified_name`, ...) that return
//!   upstream's messages for one value, empty when valid (`k8s.io/apimachinery`'s
//!   `util/validation`);
//! - [`FieldErrors`], a collector that turns a failed check into a [`Cause`] whose
//!   message is upstream's `field.Error.ErrorBody()` (`Invalid value: "x": ...`,
//!   `Required value`, `Unsupported value: "x": supported values: ...`);
//! - the object checks: [`validate_metadata`] (ObjectMeta) and [`validate_object`]
//!   (the spec rules of the most used kinds, from `pkg/apis/*/validation`).
use serde_json::Value;

use crate::Cause;

// ---------------------------------------------------------------------------
// Cause types and message formatting
// ---------------------------------------------------------------------------

/// `field.ErrorTypeRequired`.
pub const REQUIRED: &str = "FieldValueRequired";
/// `field.ErrorTypeInvalid`.
pub const INVALID: &str = "FieldValueInvalid";
/// `field.ErrorTypeForbidden`.
pub const FORBIDDEN: &str = "FieldValueForbidden";
/// `field.ErrorTypeTooLong`.
pub const TOO_LONG: &str = "FieldValueTooLong";
/// `field.ErrorTypeNotSupported`.
pub const NOT_SUPPORTED: &str = "FieldValueNotSupported";
/// `field.ErrorTypeDuplicate`.
pub const DUPLICATE: &str = "FieldValueDuplicate";

/// A value quoted the way Go's `%q` prints a string.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A list of strings the way Go's `%#v` prints a `[]string`.
pub fn go_string_slice(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", items.join(", "))
}

/// The "bad value" part of an `Invalid value: ...` message, formatted like Go's
/// `field.Error.ErrorBody`: strings quoted, numbers and booleans bare, null as
/// `null`, anything else as given.
#[derive(Clone, Debug, PartialEq)]
pub enum BadValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Null,
    /// Already formatted (e.g. a Go `%#v` rendering of a struct or slice).
    Raw(String),
}

impl BadValue {
    fn render(&self) -> String {
        match self {
            BadValue::Str(s) => go_quote(s),
            BadValue::Int(i) => i.to_string(),
            BadValue::Bool(b) => b.to_string(),
            BadValue::Null => "null".to_string(),
            BadValue::Raw(r) => r.clone(),
        }
    }

    /// The bad value for a JSON value: strings, integers, booleans and null as
    /// themselves, anything else as compact JSON.
    pub fn from_json(value: &Value) -> BadValue {
        match value {
            Value::String(s) => BadValue::Str(s.clone()),
            Value::Bool(b) => BadValue::Bool(*b),
            Value::Null => BadValue::Null,
            Value::Number(n) => match n.as_i64() {
                Some(i) => BadValue::Int(i),
                None => BadValue::Raw(n.to_string()),
            },
            other => BadValue::Raw(other.to_string()),
        }
    }
}

impl From<&str> for BadValue {
    fn from(s: &str) -> Self {
        BadValue::Str(s.to_string())
    }
}
impl From<String> for BadValue {
    fn from(s: String) -> Self {
        BadValue::Str(s)
    }
}
impl From<&String> for BadValue {
    fn from(s: &String) -> Self {
        BadValue::Str(s.clone())
    }
}
impl From<i64> for BadValue {
    fn from(i: i64) -> Self {
        BadValue::Int(i)
    }
}
impl From<bool> for BadValue {
    fn from(b: bool) -> Self {
        BadValue::Bool(b)
    }
}

/// Collects field errors as [`Cause`]s, with upstream's message bodies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldErrors(pub Vec<Cause>);

impl FieldErrors {
    pub fn new() -> Self {
        FieldErrors(Vec::new())
    }

    /// `Required value[: detail]`.
    pub fn required(&mut self, field: &str, detail: &str) {
        self.push(REQUIRED, field, with_detail("Required value", detail));
    }

    /// `Invalid value: <value>[: detail]`.
    pub fn invalid(&mut self, field: &str, value: impl Into<BadValue>, detail: &str) {
        let body = format!("Invalid value: {}", value.into().render());
        self.push(INVALID, field, with_detail(&body, detail));
    }

    /// `Forbidden[: detail]`.
    pub fn forbidden(&mut self, field: &str, detail: &str) {
        self.push(FORBIDDEN, field, with_detail("Forbidden", detail));
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(&mut self, field: &str, max: usize) {
        let unit = if max == 1 { "byte" } else { "bytes" };
        let detail = format!("may not be more than {max} {unit}");
        self.push(TOO_LONG, field, with_detail("Too long", &detail));
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(&mut self, field: &str, value: impl Into<BadValue>, supported: &[&str]) {
        let body = format!("Unsupported value: {}", value.into().render());
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        self.push(NOT_SUPPORTED, field, with_detail(&body, &detail));
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(&mut self, field: &str, value: impl Into<BadValue>) {
        let body = format!("Duplicate value: {}", value.into().render());
        self.push(DUPLICATE, field, body);
    }

    /// One `Invalid` cause per message (the usual shape of a failed string check).
    pub fn invalid_each(&mut self, field: &str, value: &str, messages: Vec<String>) {
        for message in messages {
            self.invalid(field, value, &message);
        }
    }

    pub fn extend(&mut self, other: FieldErrors) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_causes(self) -> Vec<Cause> {
        self.0
    }

    fn push(&mut self, reason: &str, field: &str, message: String) {
        self.0.push(Cause::new(reason, field, message));
    }
}

fn with_detail(body: &str, detail: &str) -> String {
    if detail.is_empty() {
        body.to_string()
    } else {
        format!("{body}: {detail}")
    }
}

/// One cause as upstream's `field.Error.Error()` prints it: `<field>: <message>`.
pub fn cause_to_string(cause: &Cause) -> String {
    format!("{}: {}", cause.field, cause.message)
}

/// The message of upstream's `Invalid` Status (HTTP 422) for these causes, e.g.
/// `Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be
/// greater than or equal to 0`; several causes are listed in brackets, duplicates
/// dropped, as `errors.NewInvalid` does.
pub fn invalid_message(group: &str, kind: &str, name: &str, causes: &[Cause]) -> String {
    let qualified_kind = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut seen = std::collections::HashSet::new();
    let messages: Vec<String> = causes
        .iter()
        .map(cause_to_string)
        .filter(|m| seen.insert(m.clone()))
        .collect();
    match messages.len() {
        0 => format!("{qualified_kind} {} is invalid", go_quote(name)),
        1 => format!("{qualified_kind} {} is invalid: {}", go_quote(name), messages[0]),
        _ => format!(
            "{qualified_kind} {} is invalid: [{}]",
            go_quote(name),
            messages.join(", ")
        ),
    }
}

// ---------------------------------------------------------------------------
// String checkers (k8s.io/apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_KEY_ERR: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";

/// Max length of an RFC 1123 label (and of label values and name parts).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Max length of an RFC 1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Max total size of an object's annotations (keys plus values), in bytes.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// `must be no more than N characters`.
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// A regex failure explained with examples, as upstream's `RegexError`.
pub fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{message} (regex used for validation is '{format}')");
    }
    let mut out = format!("{message} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{example}', "));
    }
    out.push_str(&format!("regex used for validation is '{format}')"));
    out
}

/// `must be between LO and HI, inclusive`.
pub fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn matches_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            is_lower_alnum(first)
                && is_lower_alnum(last)
                && bytes.iter().all(|&b| is_lower_alnum(b) || b == b'-')
        }
        _ => false,
    }
}

/// Matches the RFC 1123 subdomain regex (dot-separated RFC 1123 labels).
fn matches_dns1123_subdomain(value: &str) -> bool {
    value.split('.').all(matches_dns1123_label)
}

/// Matches `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn matches_qualified_name_part(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Checks an RFC 1123 label (`my-name`): at most 63 lower case alphanumerics or
/// '-', starting and ending alphanumeric.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// Checks an RFC 1123 subdomain (`example.com`), at most 253 characters.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Checks an RFC 1035 label (like an RFC 1123 label, but starting with a letter).
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    let starts_with_letter = value.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
    if !(starts_with_letter && matches_dns1123_label(value)) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Checks a qualified name (label keys, annotation keys, finalizers): an optional
/// DNS subdomain prefix and '/', then a name part of at most 63 characters.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for msg in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(DNS1123_LABEL_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Checks a label value: empty, or at most 63 alphanumerics, '-', '_' or '.',
/// starting and ending alphanumeric.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !(value.is_empty() || matches_qualified_name_part(value)) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Checks a ConfigMap or Secret data key.
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let valid_chars = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid_chars {
        errs.push(regex_error(
            CONFIG_KEY_ERR,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    errs.extend(has_chdir_prefix(value));
    errs
}

fn has_chdir_prefix(value: &str) -> Vec<String> {
    if value == "." {
        vec!["must not be '.'".to_string()]
    } else if value == ".." {
        vec!["must not be '..'".to_string()]
    } else if value.starts_with("..") {
        vec!["must not start with '..'".to_string()]
    } else {
        Vec::new()
    }
}

/// Checks a name used as one path segment of a URL: not `.` or `..`, no `/` or `%`.
pub fn is_valid_path_segment_name(value: &str) -> Vec<String> {
    for illegal in [".", ".."] {
        if value == illegal {
            return vec![format!("may not be '{illegal}'")];
        }
    }
    is_valid_path_segment_prefix(value)
}

/// The part of the path segment rule that applies to a `generateName` prefix.
fn is_valid_path_segment_prefix(value: &str) -> Vec<String> {
    ["/", "%"]
        .iter()
        .filter(|illegal| value.contains(*illegal))
        .map(|illegal| format!("may not contain '{illegal}'"))
        .collect()
}

/// Checks a port number is in 1..=65535.
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec![inclusive_range_error(1, 65535)]
    }
}

/// Checks an IANA service name used as a port name (`http`, `metrics-2`).
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if port.is_empty()
        || !port
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !port.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

/// Which rule an object's name must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces, services, ...).
    Label,
    /// Anything that is a valid path segment (RBAC objects, ...).
    PathSegment,
}

/// Error messages for `name` under the rule, empty when valid.
pub fn check_name(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Subdomain => is_dns1123_subdomain(name),
        NameRule::Label => is_dns1123_label(name),
        NameRule::PathSegment => is_valid_path_segment_name(name),
    }
}

/// Error messages for a `generateName` prefix under the rule: the prefix is checked
/// as a name with a trailing '-' masked, since random characters follow it.
pub fn check_name_prefix(rule: NameRule, prefix: &str) -> Vec<String> {
    match rule {
        NameRule::Subdomain => is_dns1123_subdomain(&mask_trailing_dash(prefix)),
        NameRule::Label => is_dns1123_label(&mask_trailing_dash(prefix)),
        NameRule::PathSegment => is_valid_path_segment_prefix(prefix),
    }
}

/// Upstream's `maskTrailingDash`: a prefix ending in '-' is checked with its last
/// two characters replaced by one letter.
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        let mut chars: Vec<char> = name.chars().collect();
        chars.truncate(chars.len().saturating_sub(2));
        chars.push('a');
        chars.into_iter().collect()
    } else {
        name.to_string()
    }
}

/// Checks metadata: name or generateName, namespace presence per scope, labels,
/// annotations (total size), finalizers, ownerReferences.
pub fn validate_metadata(_object: &Value, _namespaced: bool, _rule: NameRule) -> Vec<Cause> {
    todo!()
}

/// Per-resource checks of the spec (required fields, enums, ranges) for the kinds
/// users touch most; empty for kinds without specific rules.
pub fn validate_object(_group: &str, _kind: &str, _object: &Value) -> Vec<Cause> {
    todo!()
}

