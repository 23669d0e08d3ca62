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
use serde_json::{Map, Value};

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
/// `field.ErrorTypeNotFound`.
pub const NOT_FOUND: &str = "FieldValueNotFound";

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

    /// `Not found: <value>`.
    pub fn not_found(&mut self, field: &str, value: impl Into<BadValue>) {
        let body = format!("Not found: {}", value.into().render());
        self.push(NOT_FOUND, field, body);
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
        1 => format!(
            "{qualified_kind} {} is invalid: {}",
            go_quote(name),
            messages[0]
        ),
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
const CONFIG_KEY_ERR: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";

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
///
/// Mirrors `ValidateObjectMeta` of `k8s.io/apimachinery/pkg/api/validation`; a name
/// may be absent when `generateName` is set (the name is generated later).
pub fn validate_metadata(object: &Value, namespaced: bool, rule: NameRule) -> Vec<Cause> {
    let empty = Map::new();
    let meta = object
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut errs = FieldErrors::new();
    let name = str_field(meta, "name");
    let generate_name = str_field(meta, "generateName");
    if !generate_name.is_empty() {
        let messages = check_name_prefix(rule, generate_name);
        errs.invalid_each("metadata.generateName", generate_name, messages);
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.required("metadata.name", "name or generateName is required");
        }
    } else {
        errs.invalid_each("metadata.name", name, check_name(rule, name));
    }

    let namespace = str_field(meta, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.required("metadata.namespace", "");
        } else {
            errs.invalid_each("metadata.namespace", namespace, is_dns1123_label(namespace));
        }
    } else if !namespace.is_empty() {
        errs.forbidden("metadata.namespace", "not allowed on this type");
    }

    if let Some(generation) = meta.get("generation").and_then(Value::as_i64)
        && generation < 0
    {
        errs.invalid("metadata.generation", generation, MIN_ZERO);
    }
    validate_labels(meta.get("labels"), "metadata.labels", &mut errs);
    validate_annotations(meta.get("annotations"), "metadata.annotations", &mut errs);
    validate_owner_references(meta.get("ownerReferences"), &mut errs);
    validate_finalizers(meta.get("finalizers"), "metadata.finalizers", &mut errs);
    errs.into_causes()
}

const MIN_ZERO: &str = "must be greater than or equal to 0";

/// Upstream's `ValidateLabels`: qualified-name keys and valid values, reported at
/// the map's path.
fn validate_labels(labels: Option<&Value>, path: &str, errs: &mut FieldErrors) {
    let Some(Value::Object(labels)) = labels else {
        return;
    };
    for (key, value) in labels {
        errs.invalid_each(path, key, is_qualified_name(key));
        if let Some(value) = value.as_str() {
            errs.invalid_each(path, value, is_valid_label_value(value));
        }
    }
}

/// Upstream's `ValidateAnnotations`: keys are qualified names (case-insensitive) and
/// keys plus values total at most 256 KiB.
fn validate_annotations(annotations: Option<&Value>, path: &str, errs: &mut FieldErrors) {
    let Some(Value::Object(annotations)) = annotations else {
        return;
    };
    let mut total = 0;
    for (key, value) in annotations {
        errs.invalid_each(path, key, is_qualified_name(&key.to_lowercase()));
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT);
    }
}

/// Upstream's `ValidateOwnerReferences` (the field paths carry no index there).
fn validate_owner_references(references: Option<&Value>, errs: &mut FieldErrors) {
    let Some(Value::Array(references)) = references else {
        return;
    };
    const PATH: &str = "metadata.ownerReferences";
    let mut controller: Option<String> = None;
    for reference in references {
        let api_version = reference
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = reference.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = reference.get("name").and_then(Value::as_str).unwrap_or("");
        let uid = reference.get("uid").and_then(Value::as_str).unwrap_or("");
        let (group, version) = split_api_version(api_version);
        if version.is_empty() {
            errs.invalid(
                &format!("{PATH}.apiVersion"),
                api_version,
                "version must not be empty",
            );
        }
        if kind.is_empty() {
            errs.invalid(&format!("{PATH}.kind"), kind, "must not be empty");
        }
        if name.is_empty() {
            errs.invalid(&format!("{PATH}.name"), name, "must not be empty");
        }
        if uid.is_empty() {
            errs.invalid(&format!("{PATH}.uid"), uid, "must not be empty");
        }
        if group.is_empty() && version == "v1" && kind == "Event" {
            errs.invalid(
                PATH,
                BadValue::from_json(reference),
                "/v1, Kind=Event is disallowed from being an owner",
            );
        }
        if reference.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{kind}/{name}");
            match &controller {
                Some(first) => errs.invalid(
                    PATH,
                    BadValue::Raw(Value::Array(references.clone()).to_string()),
                    &format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    ),
                ),
                None => controller = Some(current),
            }
        }
    }
}

/// Splits `group/version` (or a bare core `version`); anything else is invalid and
/// yields empty parts, as upstream's `ParseGroupVersion`.
fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.matches('/').count() {
        0 => ("", api_version),
        1 if api_version != "/" => api_version.split_once('/').unwrap_or(("", "")),
        _ => ("", ""),
    }
}

/// Upstream's `ValidateFinalizers`: qualified names, and not both `orphan` and
/// `foregroundDeletion`.
fn validate_finalizers(finalizers: Option<&Value>, path: &str, errs: &mut FieldErrors) {
    let Some(Value::Array(finalizers)) = finalizers else {
        return;
    };
    let names: Vec<String> = finalizers
        .iter()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    for name in &names {
        errs.invalid_each(path, name, is_qualified_name(name));
    }
    if names.iter().any(|n| n == "orphan") && names.iter().any(|n| n == "foregroundDeletion") {
        errs.invalid(
            path,
            BadValue::Raw(go_string_slice(&names)),
            "finalizer orphan and foregroundDeletion cannot be both set",
        );
    }
}

/// The extra finalizer rule of the built-in API groups: a name without a '/' must
/// be one of the standard finalizers.
fn validate_kube_finalizer_names(object: &Value, errs: &mut FieldErrors) {
    let Some(Value::Array(finalizers)) = object.pointer("/metadata/finalizers") else {
        return;
    };
    for (i, finalizer) in finalizers.iter().enumerate() {
        let Some(name) = finalizer.as_str() else {
            continue;
        };
        if !name.contains('/') && !["kubernetes", "orphan", "foregroundDeletion"].contains(&name) {
            errs.invalid(
                &format!("metadata.finalizers[{i}]"),
                name,
                "name is neither a standard finalizer name nor is it fully qualified",
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Per-kind validation
// ---------------------------------------------------------------------------

/// A kind's spec validator.
type KindValidator = fn(&Value, &mut FieldErrors);

/// The kinds with specific rules: (group, kind, validator).
const KIND_VALIDATORS: &[(&str, &str, KindValidator)] = &[
    ("", "Pod", validate_pod),
    ("", "PodTemplate", validate_pod_template),
    ("", "ReplicationController", validate_replication_controller),
    ("", "Service", validate_service),
    ("", "ConfigMap", validate_config_map),
    ("", "Secret", validate_secret),
    ("", "Namespace", validate_namespace),
    (
        "",
        "PersistentVolumeClaim",
        validate_persistent_volume_claim,
    ),
    ("", "PersistentVolume", validate_persistent_volume),
    ("apps", "Deployment", validate_deployment),
    ("apps", "ReplicaSet", validate_replica_set),
    ("apps", "StatefulSet", validate_stateful_set),
    ("apps", "DaemonSet", validate_daemon_set),
    ("batch", "Job", validate_job),
    ("batch", "CronJob", validate_cron_job),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        validate_horizontal_pod_autoscaler,
    ),
];

/// Per-resource checks of the spec (required fields, enums, ranges) for the kinds
/// users touch most; empty for kinds without specific rules.
///
/// Fields that upstream defaults before validating (a port's protocol, a pod's
/// restartPolicy, ...) are only checked when present, except where the default
/// itself is invalid (a Job's pod template must say `OnFailure` or `Never`).
/// Objects of the built-in groups also get the finalizer-name rule of
/// `pkg/apis/core/validation`.
pub fn validate_object(group: &str, kind: &str, object: &Value) -> Vec<Cause> {
    let mut errs = FieldErrors::new();
    if crate::BUILT_IN_GROUPS.contains(&group) {
        validate_kube_finalizer_names(object, &mut errs);
    }
    if let Some((_, _, validator)) = KIND_VALIDATORS
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
    {
        validator(object, &mut errs);
    }
    errs.into_causes()
}

// ----- small JSON helpers -----

fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

fn array_at<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn null() -> &'static Value {
    static NULL: Value = Value::Null;
    &NULL
}

fn child<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(null())
}

/// An integer field, if present.
fn int_at(value: &Value, key: &str) -> Option<i64> {
    value.get(key).and_then(Value::as_i64)
}

fn check_nonnegative(value: &Value, key: &str, path: &str, errs: &mut FieldErrors) {
    if let Some(n) = int_at(value, key)
        && n < 0
    {
        errs.invalid(&format!("{path}.{key}"), n, MIN_ZERO);
    }
}

/// A label map as Go's `%#v` prints a `map[string]string`.
fn go_string_map(value: &Value) -> String {
    let Some(map) = value.as_object() else {
        return "map[string]string(nil)".to_string();
    };
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let parts: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v.as_str().unwrap_or(""))))
        .collect();
    format!("map[string]string{{{}}}", parts.join(", "))
}

// ----- pods -----

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
/// The volume source fields of a Volume; exactly one may be set.
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn validate_pod(pod: &Value, errs: &mut FieldErrors) {
    validate_pod_spec(child(pod, "spec"), "spec", errs);
}

/// Upstream's `ValidatePodTemplateSpec` (note: its label path has no `metadata`).
fn validate_pod_template_spec(template: &Value, path: &str, errs: &mut FieldErrors) {
    let metadata = child(template, "metadata");
    validate_labels(metadata.get("labels"), &format!("{path}.labels"), errs);
    validate_annotations(
        metadata.get("annotations"),
        &format!("{path}.annotations"),
        errs,
    );
    validate_pod_spec(child(template, "spec"), &format!("{path}.spec"), errs);
}

fn validate_pod_template(pod_template: &Value, errs: &mut FieldErrors) {
    validate_pod_template_spec(child(pod_template, "template"), "template", errs);
}

/// The key rules of `ValidatePodSpec`: volumes, containers, restart and DNS
/// policies, names of the node and service account, activeDeadlineSeconds.
fn validate_pod_spec(spec: &Value, path: &str, errs: &mut FieldErrors) {
    let volume_names =
        validate_volumes(array_at(spec, "volumes"), &format!("{path}.volumes"), errs);

    let containers = array_at(spec, "containers");
    let containers_path = format!("{path}.containers");
    if containers.is_empty() {
        errs.required(&containers_path, "");
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, container) in containers.iter().enumerate() {
        let item = format!("{containers_path}[{i}]");
        validate_container(container, &item, &volume_names, errs);
        let name = str_at(container, "name");
        if names.contains(&name) {
            errs.duplicate(&format!("{item}.name"), name);
        } else {
            names.push(name);
        }
    }
    let init_path = format!("{path}.initContainers");
    for (i, container) in array_at(spec, "initContainers").iter().enumerate() {
        let item = format!("{init_path}[{i}]");
        validate_container(container, &item, &volume_names, errs);
        let name = str_at(container, "name");
        if names.contains(&name) {
            errs.duplicate(&format!("{item}.name"), name);
        } else {
            names.push(name);
        }
        if let Some(policy) = container.get("restartPolicy").and_then(Value::as_str)
            && policy != "Always"
        {
            errs.not_supported(&format!("{item}.restartPolicy"), policy, &["Always"]);
        }
    }

    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str) {
        if policy.is_empty() {
            errs.required(&format!("{path}.restartPolicy"), "");
        } else if !RESTART_POLICIES.contains(&policy) {
            errs.not_supported(&format!("{path}.restartPolicy"), policy, RESTART_POLICIES);
        }
    }
    if let Some(policy) = spec.get("dnsPolicy").and_then(Value::as_str)
        && !policy.is_empty()
        && !DNS_POLICIES.contains(&policy)
    {
        errs.not_supported(&format!("{path}.dnsPolicy"), policy, DNS_POLICIES);
    }
    for key in ["nodeName", "serviceAccountName"] {
        let value = str_at(spec, key);
        if !value.is_empty() {
            errs.invalid_each(&format!("{path}.{key}"), value, is_dns1123_subdomain(value));
        }
    }
    if let Some(seconds) = int_at(spec, "activeDeadlineSeconds")
        && !(1..=i64::from(i32::MAX)).contains(&seconds)
    {
        errs.invalid(
            &format!("{path}.activeDeadlineSeconds"),
            seconds,
            &inclusive_range_error(1, i64::from(i32::MAX)),
        );
    }
    check_nonnegative(spec, "terminationGracePeriodSeconds", path, errs);
}

/// Volumes: names required, RFC 1123 labels and unique; at most one source.
/// Returns the valid names (what volume mounts may refer to).
fn validate_volumes(volumes: &[Value], path: &str, errs: &mut FieldErrors) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (i, volume) in volumes.iter().enumerate() {
        let item = format!("{path}[{i}]");
        let name_path = format!("{item}.name");
        let name = str_at(volume, "name");
        let before = errs.0.len();
        let sources: Vec<&str> = VOLUME_SOURCES
            .iter()
            .copied()
            .filter(|source| volume.get(*source).is_some_and(|v| !v.is_null()))
            .collect();
        for source in sources.iter().skip(1) {
            errs.forbidden(
                &format!("{item}.{source}"),
                "may not specify more than 1 volume type",
            );
        }
        if name.is_empty() {
            errs.required(&name_path, "");
        } else {
            errs.invalid_each(&name_path, name, is_dns1123_label(name));
        }
        if names.iter().any(|n| n == name) {
            errs.duplicate(&name_path, name);
        }
        if errs.0.len() == before {
            names.push(name.to_string());
        }
    }
    names
}

/// The common container rules: name, image, ports, env, volume mounts.
fn validate_container(container: &Value, path: &str, volumes: &[String], errs: &mut FieldErrors) {
    let name = str_at(container, "name");
    let name_path = format!("{path}.name");
    if name.is_empty() {
        errs.required(&name_path, "");
    } else {
        errs.invalid_each(&name_path, name, is_dns1123_label(name));
    }
    if str_at(container, "image").is_empty() {
        errs.required(&format!("{path}.image"), "");
    }
    validate_container_ports(array_at(container, "ports"), &format!("{path}.ports"), errs);
    validate_env(array_at(container, "env"), &format!("{path}.env"), errs);
    validate_volume_mounts(
        array_at(container, "volumeMounts"),
        &format!("{path}.volumeMounts"),
        volumes,
        errs,
    );
}

fn validate_container_ports(ports: &[Value], path: &str, errs: &mut FieldErrors) {
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let item = format!("{path}[{i}]");
        let name = str_at(port, "name");
        if !name.is_empty() {
            let messages = is_valid_port_name(name);
            if !messages.is_empty() {
                errs.invalid_each(&format!("{item}.name"), name, messages);
            } else if names.contains(&name) {
                errs.duplicate(&format!("{item}.name"), name);
            } else {
                names.push(name);
            }
        }
        match int_at(port, "containerPort") {
            None | Some(0) => errs.required(&format!("{item}.containerPort"), ""),
            Some(number) => {
                for message in is_valid_port_num(number) {
                    errs.invalid(&format!("{item}.containerPort"), number, &message);
                }
            }
        }
        if let Some(number) = int_at(port, "hostPort")
            && number != 0
        {
            for message in is_valid_port_num(number) {
                errs.invalid(&format!("{item}.hostPort"), number, &message);
            }
        }
        check_protocol(port, &item, errs);
    }
}

/// A port's protocol, when given, must be TCP, UDP or SCTP (it defaults to TCP).
fn check_protocol(port: &Value, path: &str, errs: &mut FieldErrors) {
    if let Some(protocol) = port.get("protocol").and_then(Value::as_str) {
        if protocol.is_empty() {
            errs.required(&format!("{path}.protocol"), "");
        } else if !PROTOCOLS.contains(&protocol) {
            errs.not_supported(&format!("{path}.protocol"), protocol, PROTOCOLS);
        }
    }
}

/// Environment variables: a name of printable ASCII other than '=' (the relaxed
/// rule, on by default since 1.32), and not both `value` and `valueFrom`.
fn validate_env(env: &[Value], path: &str, errs: &mut FieldErrors) {
    for (i, var) in env.iter().enumerate() {
        let item = format!("{path}[{i}]");
        let name = str_at(var, "name");
        if name.is_empty() {
            errs.required(&format!("{item}.name"), "");
        } else if name.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
            errs.invalid(
                &format!("{item}.name"),
                name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            );
        }
        if var.get("valueFrom").is_some_and(|v| !v.is_null()) && !str_at(var, "value").is_empty() {
            errs.invalid(
                &format!("{item}.valueFrom"),
                "",
                "may not be specified when `value` is not empty",
            );
        }
    }
}

fn validate_volume_mounts(
    mounts: &[Value],
    path: &str,
    volumes: &[String],
    errs: &mut FieldErrors,
) {
    let mut mount_points: Vec<&str> = Vec::new();
    for (i, mount) in mounts.iter().enumerate() {
        let item = format!("{path}[{i}]");
        let name = str_at(mount, "name");
        if name.is_empty() {
            errs.required(&format!("{item}.name"), "");
        } else if !volumes.iter().any(|v| v == name) {
            errs.not_found(&format!("{item}.name"), name);
        }
        let mount_path = str_at(mount, "mountPath");
        if mount_path.is_empty() {
            errs.required(&format!("{item}.mountPath"), "");
        } else if mount_points.contains(&mount_path) {
            errs.invalid(&format!("{item}.mountPath"), mount_path, "must be unique");
        } else {
            mount_points.push(mount_path);
        }
    }
}

// ----- workloads -----

/// The selector rules shared by Deployments, ReplicaSets and StatefulSets: a
/// selector is required, valid and non-empty, and must match the template labels.
fn validate_workload_selector(spec: &Value, kind_word: &str, errs: &mut FieldErrors) {
    let selector = child(spec, "selector");
    if selector.is_null() {
        errs.required("spec.selector", "");
        return;
    }
    validate_label_selector(selector, "spec.selector", errs);
    let expression_count = array_at(selector, "matchExpressions").len()
        + selector
            .get("matchLabels")
            .and_then(Value::as_object)
            .map_or(0, Map::len);
    if expression_count == 0 {
        errs.invalid(
            "spec.selector",
            BadValue::Raw(selector.to_string()),
            &format!("empty selector is invalid for {kind_word}"),
        );
    }
    check_selector_matches_template(selector, spec, errs);
}

/// `selector` must match the pod template's labels.
fn check_selector_matches_template(selector: &Value, spec: &Value, errs: &mut FieldErrors) {
    let Ok(parsed) = crate::selector::LabelSelector::from_json(selector) else {
        return;
    };
    let labels = spec.pointer("/template/metadata/labels");
    if !parsed.is_empty() && !parsed.matches(labels.and_then(Value::as_object)) {
        errs.invalid(
            "spec.template.metadata.labels",
            BadValue::Raw(go_string_map(labels.unwrap_or(null()))),
            "`selector` does not match template `labels`",
        );
    }
}

/// Upstream's `ValidateLabelSelector` (metav1).
fn validate_label_selector(selector: &Value, path: &str, errs: &mut FieldErrors) {
    validate_labels(
        selector.get("matchLabels"),
        &format!("{path}.matchLabels"),
        errs,
    );
    for (i, expression) in array_at(selector, "matchExpressions").iter().enumerate() {
        let item = format!("{path}.matchExpressions[{i}]");
        let values = array_at(expression, "values");
        match str_at(expression, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.required(
                        &format!("{item}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.forbidden(
                        &format!("{item}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
            }
            other => errs.invalid(
                &format!("{item}.operator"),
                other,
                "not a valid selector operator",
            ),
        }
        let key = str_at(expression, "key");
        errs.invalid_each(&format!("{item}.key"), key, is_qualified_name(key));
        for (j, value) in values.iter().enumerate() {
            let value = value.as_str().unwrap_or("");
            errs.invalid_each(
                &format!("{item}.values[{j}]"),
                value,
                is_valid_label_value(value),
            );
        }
    }
}

/// The pod template of a controller whose pods must restart `Always`.
fn validate_always_restarting_template(spec: &Value, errs: &mut FieldErrors) {
    let template = child(spec, "template");
    validate_pod_template_spec(template, "spec.template", errs);
    if let Some(policy) = template
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        && policy != "Always"
        && RESTART_POLICIES.contains(&policy)
    {
        errs.not_supported("spec.template.spec.restartPolicy", policy, &["Always"]);
    }
}

fn validate_deployment(deployment: &Value, errs: &mut FieldErrors) {
    let spec = child(deployment, "spec");
    for key in [
        "replicas",
        "minReadySeconds",
        "revisionHistoryLimit",
        "progressDeadlineSeconds",
    ] {
        check_nonnegative(spec, key, "spec", errs);
    }
    validate_workload_selector(spec, "deployment", errs);
    validate_always_restarting_template(spec, errs);
    let strategy = child(spec, "strategy");
    if str_at(strategy, "type") == "Recreate"
        && strategy.get("rollingUpdate").is_some_and(|v| !v.is_null())
    {
        errs.forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        );
    }
}

fn validate_replica_set(replica_set: &Value, errs: &mut FieldErrors) {
    let spec = child(replica_set, "spec");
    check_nonnegative(spec, "replicas", "spec", errs);
    check_nonnegative(spec, "minReadySeconds", "spec", errs);
    // Upstream's ReplicaSet message says "deployment" too.
    validate_workload_selector(spec, "deployment", errs);
    validate_always_restarting_template(spec, errs);
}

fn validate_stateful_set(stateful_set: &Value, errs: &mut FieldErrors) {
    let spec = child(stateful_set, "spec");
    check_nonnegative(spec, "replicas", "spec", errs);
    check_nonnegative(spec, "minReadySeconds", "spec", errs);
    validate_workload_selector(spec, "statefulset", errs);
    // Containers may mount the claims of volumeClaimTemplates, which the controller
    // adds to each pod as persistentVolumeClaim volumes: they count as volumes here,
    // but (as upstream) the templates themselves are not validated.
    let own_volumes = array_at(
        child(spec, "template").get("spec").unwrap_or(null()),
        "volumes",
    )
    .len();
    let mut with_claims = spec.clone();
    let claims: Vec<Value> = array_at(spec, "volumeClaimTemplates")
        .iter()
        .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
        .map(|name| serde_json::json!({"name": name, "persistentVolumeClaim": {"claimName": name}}))
        .collect();
    if !claims.is_empty()
        && let Some(pod_spec) = with_claims
            .pointer_mut("/template/spec")
            .and_then(Value::as_object_mut)
    {
        let volumes = pod_spec
            .entry("volumes")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.extend(claims);
        }
    }
    let mut template_errors = FieldErrors::new();
    validate_always_restarting_template(&with_claims, &mut template_errors);
    let added = |field: &str| {
        field
            .strip_prefix("spec.template.spec.volumes[")
            .and_then(|rest| rest.split(']').next())
            .and_then(|index| index.parse::<usize>().ok())
            .is_some_and(|index| index >= own_volumes)
    };
    template_errors.0.retain(|cause| !added(&cause.field));
    errs.extend(template_errors);
    if let Some(policy) = spec.get("podManagementPolicy").and_then(Value::as_str)
        && !["OrderedReady", "Parallel"].contains(&policy)
    {
        errs.not_supported(
            "spec.podManagementPolicy",
            policy,
            &["OrderedReady", "Parallel"],
        );
    }
}

fn validate_daemon_set(daemon_set: &Value, errs: &mut FieldErrors) {
    let spec = child(daemon_set, "spec");
    let selector = child(spec, "selector");
    validate_label_selector(selector, "spec.selector", errs);
    // A missing selector selects nothing, so it cannot match the template either.
    match crate::selector::LabelSelector::from_json(selector) {
        Ok(parsed) if parsed.is_empty() => errs.invalid(
            "spec.selector",
            BadValue::Raw(selector.to_string()),
            "empty selector is invalid for daemonset",
        ),
        Ok(parsed) => {
            let labels = spec.pointer("/template/metadata/labels");
            if !parsed.matches(labels.and_then(Value::as_object)) {
                errs.invalid(
                    "spec.template.metadata.labels",
                    BadValue::Raw(go_string_map(labels.unwrap_or(null()))),
                    "`selector` does not match template `labels`",
                );
            }
        }
        Err(_) => {}
    }
    check_nonnegative(spec, "minReadySeconds", "spec", errs);
    validate_always_restarting_template(spec, errs);
}

fn validate_replication_controller(controller: &Value, errs: &mut FieldErrors) {
    let spec = child(controller, "spec");
    check_nonnegative(spec, "replicas", "spec", errs);
    check_nonnegative(spec, "minReadySeconds", "spec", errs);
    let selector = spec.get("selector").and_then(Value::as_object);
    match selector {
        Some(selector) if !selector.is_empty() => {
            validate_labels(spec.get("selector"), "spec.selector", errs);
            let template = child(spec, "template");
            if !template.is_null() {
                let parsed = crate::selector::LabelSelector::from_labels(selector);
                let labels = template.pointer("/metadata/labels");
                if !parsed.matches(labels.and_then(Value::as_object)) {
                    errs.invalid(
                        "spec.template.metadata.labels",
                        BadValue::Raw(go_string_map(labels.unwrap_or(null()))),
                        "`selector` does not match template `labels`",
                    );
                }
            }
        }
        _ => errs.required("spec.selector", ""),
    }
    if spec.get("template").is_some_and(|t| !t.is_null()) {
        validate_always_restarting_template(spec, errs);
    } else {
        errs.required("spec.template", "");
    }
}

/// A Job's pod template restart policy must be OnFailure or Never; it defaults to
/// Always, which is rejected.
fn check_job_restart_policy(template: &Value, path: &str, errs: &mut FieldErrors) {
    let policy = template
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or("Always");
    if policy != "OnFailure" && policy != "Never" {
        errs.not_supported(
            &format!("{path}.spec.restartPolicy"),
            policy,
            &["OnFailure", "Never"],
        );
    }
}

fn validate_job_spec(spec: &Value, path: &str, errs: &mut FieldErrors) {
    for key in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        check_nonnegative(spec, key, path, errs);
    }
    if let Some(seconds) = int_at(spec, "activeDeadlineSeconds")
        && seconds <= 0
    {
        errs.invalid(
            &format!("{path}.activeDeadlineSeconds"),
            seconds,
            "must be greater than 0",
        );
    }
    let template = child(spec, "template");
    let template_path = format!("{path}.template");
    validate_pod_template_spec(template, &template_path, errs);
    check_job_restart_policy(template, &template_path, errs);
}

fn validate_job(job: &Value, errs: &mut FieldErrors) {
    let spec = child(job, "spec");
    validate_job_spec(spec, "spec", errs);
    // The selector is usually generated by the server; when given, it must match.
    let selector = child(spec, "selector");
    if !selector.is_null() {
        validate_label_selector(selector, "spec.selector", errs);
        check_selector_matches_template(selector, spec, errs);
    }
}

fn validate_cron_job(cron_job: &Value, errs: &mut FieldErrors) {
    let name = cron_job
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > 52 {
        errs.invalid("metadata.name", name, "must be no more than 52 characters");
    }
    let spec = child(cron_job, "spec");
    if str_at(spec, "schedule").is_empty() {
        errs.required("spec.schedule", "");
    }
    if let Some(policy) = spec.get("concurrencyPolicy").and_then(Value::as_str)
        && !["Allow", "Forbid", "Replace"].contains(&policy)
    {
        errs.not_supported(
            "spec.concurrencyPolicy",
            policy,
            &["Allow", "Forbid", "Replace"],
        );
    }
    for key in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        check_nonnegative(spec, key, "spec", errs);
    }
    validate_job_spec(
        child(child(spec, "jobTemplate"), "spec"),
        "spec.jobTemplate.spec",
        errs,
    );
}

// ----- autoscaling -----

/// The metric source types of autoscaling/v2, and the field each one fills.
const METRIC_SOURCES: &[(&str, &str)] = &[
    ("ContainerResource", "containerResource"),
    ("External", "external"),
    ("Object", "object"),
    ("Pods", "pods"),
    ("Resource", "resource"),
];
const METRIC_TARGET_TYPES: &[&str] = &["AverageValue", "Utilization", "Value"];
const SCALING_POLICY_TYPES: &[&str] = &["Percent", "Pods"];
const SELECT_POLICIES: &[&str] = &["Disabled", "Max", "Min"];
/// The longest stabilization window and policy period upstream accepts.
const MAX_STABILIZATION_WINDOW_SECONDS: i64 = 3600;
const MAX_SCALING_POLICY_PERIOD_SECONDS: i64 = 1800;

/// Upstream's `ValidateHorizontalPodAutoscaler` for autoscaling/v2 and /v1 (whose
/// `targetCPUUtilizationPercentage` is the one metric v1 can say).
fn validate_horizontal_pod_autoscaler(autoscaler: &Value, errs: &mut FieldErrors) {
    let spec = child(autoscaler, "spec");
    let min_replicas = int_at(spec, "minReplicas");
    let max_replicas = int_at(spec, "maxReplicas").unwrap_or(0);
    if let Some(min) = min_replicas
        && min < 1
    {
        errs.invalid("spec.minReplicas", min, "must be greater than 0");
    }
    if max_replicas < 1 {
        errs.invalid("spec.maxReplicas", max_replicas, "must be greater than 0");
    }
    if let Some(min) = min_replicas
        && max_replicas < min
    {
        errs.invalid(
            "spec.maxReplicas",
            max_replicas,
            "must be greater than or equal to `minReplicas`",
        );
    }
    validate_cross_version_reference(child(spec, "scaleTargetRef"), "spec.scaleTargetRef", errs);
    if str_at(autoscaler, "apiVersion") == "autoscaling/v1" {
        if let Some(target) = int_at(spec, "targetCPUUtilizationPercentage")
            && target < 1
        {
            errs.invalid(
                "spec.targetCPUUtilizationPercentage",
                target,
                "must be greater than 0",
            );
        }
        return;
    }
    for (index, metric) in array_at(spec, "metrics").iter().enumerate() {
        validate_metric_spec(metric, &format!("spec.metrics[{index}]"), errs);
    }
    let behavior = child(spec, "behavior");
    for direction in ["scaleUp", "scaleDown"] {
        let rules = child(behavior, direction);
        if !rules.is_null() {
            validate_scaling_rules(rules, &format!("spec.behavior.{direction}"), errs);
        }
    }
}

fn validate_cross_version_reference(reference: &Value, path: &str, errs: &mut FieldErrors) {
    for key in ["kind", "name"] {
        let value = str_at(reference, key);
        if value.is_empty() {
            errs.required(&format!("{path}.{key}"), "");
        } else {
            errs.invalid_each(
                &format!("{path}.{key}"),
                value,
                is_valid_path_segment_name(value),
            );
        }
    }
}

fn validate_metric_spec(metric: &Value, path: &str, errs: &mut FieldErrors) {
    let type_ = str_at(metric, "type");
    if type_.is_empty() {
        errs.required(&format!("{path}.type"), "must specify a metric source type");
    }
    let Some((_, expected)) = METRIC_SOURCES.iter().find(|(name, _)| *name == type_) else {
        let supported: Vec<&str> = METRIC_SOURCES.iter().map(|(name, _)| *name).collect();
        errs.not_supported(&format!("{path}.type"), type_, &supported);
        return;
    };
    let present: Vec<&str> = METRIC_SOURCES
        .iter()
        .map(|(_, field)| *field)
        .filter(|field| metric.get(*field).is_some_and(|v| !v.is_null()))
        .collect();
    if !present.contains(expected) {
        errs.required(
            &format!("{path}.{expected}"),
            "must populate information for the given metric source",
        );
    }
    for other in present.iter().filter(|field| *field != expected) {
        errs.forbidden(
            &format!("{path}.{other}"),
            "must populate the given metric source only",
        );
    }
    let source = child(metric, expected);
    if source.is_null() {
        return;
    }
    let source_path = format!("{path}.{expected}");
    match *expected {
        "resource" | "containerResource" => {
            if str_at(source, "name").is_empty() {
                errs.required(
                    &format!("{source_path}.name"),
                    "must specify a resource name",
                );
            }
            if *expected == "containerResource" && str_at(source, "container").is_empty() {
                errs.required(
                    &format!("{source_path}.container"),
                    "must specify a container",
                );
            }
            let target = child(source, "target");
            validate_metric_target(target, &format!("{source_path}.target"), errs);
            let target_type = str_at(target, "type");
            if !target_type.is_empty() && !matches!(target_type, "Utilization" | "AverageValue") {
                errs.invalid(
                    &format!("{source_path}.target.type"),
                    target_type,
                    "must be either Utilization or AverageValue",
                );
            }
        }
        _ => {
            if str_at(child(source, "metric"), "name").is_empty() {
                errs.required(
                    &format!("{source_path}.metric.name"),
                    "must specify a metric name",
                );
            }
            validate_metric_target(
                child(source, "target"),
                &format!("{source_path}.target"),
                errs,
            );
        }
    }
}

fn validate_metric_target(target: &Value, path: &str, errs: &mut FieldErrors) {
    let type_ = str_at(target, "type");
    if type_.is_empty() {
        errs.required(&format!("{path}.type"), "must specify a metric target type");
    } else if !METRIC_TARGET_TYPES.contains(&type_) {
        errs.invalid(
            &format!("{path}.type"),
            type_,
            "must be either Utilization, Value, or AverageValue",
        );
    }
    for key in ["value", "averageValue"] {
        let Some(quantity) = target.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let text = match quantity {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        if crate::table::quantity_nanos(&text).is_none_or(|nanos| nanos <= 0) {
            errs.invalid(&format!("{path}.{key}"), text, "must be positive");
        }
    }
    if let Some(utilization) = int_at(target, "averageUtilization")
        && utilization < 1
    {
        errs.invalid(
            &format!("{path}.averageUtilization"),
            utilization,
            "must be greater than 0",
        );
    }
    let required = match type_ {
        "Utilization" => Some("averageUtilization"),
        "Value" => Some("value"),
        "AverageValue" => Some("averageValue"),
        _ => None,
    };
    if let Some(key) = required
        && target.get(key).is_none_or(Value::is_null)
    {
        errs.required(
            &format!("{path}.{key}"),
            &format!("must set {key} when the target type is {type_}"),
        );
    }
}

fn validate_scaling_rules(rules: &Value, path: &str, errs: &mut FieldErrors) {
    if let Some(window) = int_at(rules, "stabilizationWindowSeconds") {
        let field = format!("{path}.stabilizationWindowSeconds");
        if window < 0 {
            errs.invalid(&field, window, "must be greater than or equal to zero");
        } else if window > MAX_STABILIZATION_WINDOW_SECONDS {
            errs.invalid(
                &field,
                window,
                &format!("must be less than or equal to {MAX_STABILIZATION_WINDOW_SECONDS}"),
            );
        }
    }
    let select_policy = str_at(rules, "selectPolicy");
    if !select_policy.is_empty() && !SELECT_POLICIES.contains(&select_policy) {
        errs.not_supported(
            &format!("{path}.selectPolicy"),
            select_policy,
            SELECT_POLICIES,
        );
    }
    let policies = array_at(rules, "policies");
    if policies.is_empty() && rules.get("policies").is_some() {
        errs.required(
            &format!("{path}.policies"),
            "must specify at least one Policy",
        );
    }
    for (index, policy) in policies.iter().enumerate() {
        let policy_path = format!("{path}.policies[{index}]");
        let type_ = str_at(policy, "type");
        if !SCALING_POLICY_TYPES.contains(&type_) {
            errs.not_supported(&format!("{policy_path}.type"), type_, SCALING_POLICY_TYPES);
        }
        let value = int_at(policy, "value").unwrap_or(0);
        if value <= 0 {
            errs.invalid(
                &format!("{policy_path}.value"),
                value,
                "must be greater than zero",
            );
        }
        let period = int_at(policy, "periodSeconds").unwrap_or(0);
        if period <= 0 {
            errs.invalid(
                &format!("{policy_path}.periodSeconds"),
                period,
                "must be greater than zero",
            );
        } else if period > MAX_SCALING_POLICY_PERIOD_SECONDS {
            errs.invalid(
                &format!("{policy_path}.periodSeconds"),
                period,
                &format!("must be less than or equal to {MAX_SCALING_POLICY_PERIOD_SECONDS}"),
            );
        }
    }
}

// ----- services -----

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn validate_service(service: &Value, errs: &mut FieldErrors) {
    // Service names are RFC 1035 labels (they become DNS names and env vars).
    let name = service
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !name.is_empty() && is_dns1123_label(name).is_empty() {
        errs.invalid_each("metadata.name", name, is_dns1035_label(name));
    }

    let spec = child(service, "spec");
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let headless = service_type == "ClusterIP"
        && (str_at(spec, "clusterIP") == "None"
            || array_at(spec, "clusterIPs").first().and_then(Value::as_str) == Some("None"));
    let ports = array_at(spec, "ports");
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        errs.required("spec.ports", "");
    }
    if !SERVICE_TYPES.contains(&service_type) {
        errs.not_supported("spec.type", service_type, SERVICE_TYPES);
    }
    if service_type == "ExternalName" {
        let external = str_at(spec, "externalName");
        if external.is_empty() {
            errs.required("spec.externalName", "");
        } else {
            let trimmed = external.strip_suffix('.').unwrap_or(external);
            errs.invalid_each("spec.externalName", trimmed, is_dns1123_subdomain(trimmed));
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let item = format!("spec.ports[{i}]");
        let name = str_at(port, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.required(&format!("{item}.name"), "");
        } else if !name.is_empty() {
            errs.invalid_each(&format!("{item}.name"), name, is_dns1123_label(name));
            if names.contains(&name) {
                errs.duplicate(&format!("{item}.name"), name);
            } else {
                names.push(name);
            }
        }
        let number = int_at(port, "port").unwrap_or(0);
        for message in is_valid_port_num(number) {
            errs.invalid(&format!("{item}.port"), number, &message);
        }
        check_protocol(port, &item, errs);
        match port.get("targetPort") {
            Some(Value::Number(n)) => {
                let n = n.as_i64().unwrap_or(0);
                for message in is_valid_port_num(n) {
                    errs.invalid(&format!("{item}.targetPort"), n, &message);
                }
            }
            Some(Value::String(s)) => {
                errs.invalid_each(&format!("{item}.targetPort"), s, is_valid_port_name(s));
            }
            _ => {}
        }
        if let Some(node_port) = int_at(port, "nodePort")
            && node_port != 0
        {
            if service_type == "ClusterIP" || service_type == "ExternalName" {
                errs.forbidden(
                    &format!("{item}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                );
            } else {
                for message in is_valid_port_num(node_port) {
                    errs.invalid(&format!("{item}.nodePort"), node_port, &message);
                }
            }
        }
    }
    validate_load_balancer_source_ranges(service, service_type, errs);
}

/// The annotation that named a LoadBalancer's admitted sources before
/// `spec.loadBalancerSourceRanges` existed: CIDRs separated by commas.
pub const LOAD_BALANCER_SOURCE_RANGES_ANNOTATION: &str =
    "service.beta.kubernetes.io/load-balancer-source-ranges";

/// `spec.loadBalancerSourceRanges`, or when that is empty the older annotation, as
/// upstream's ValidateService: only for LoadBalancer Services, and each a CIDR
/// (surrounding spaces allowed, as upstream accepts them for compatibility with the
/// annotation). Upstream names the field `spec.LoadBalancerSourceRanges` in its errors;
/// so does this.
fn validate_load_balancer_source_ranges(
    service: &Value,
    service_type: &str,
    errs: &mut FieldErrors,
) {
    let ranges = array_at(child(service, "spec"), "loadBalancerSourceRanges");
    let annotation = service
        .pointer("/metadata/annotations")
        .and_then(|annotations| annotations.get(LOAD_BALANCER_SOURCE_RANGES_ANNOTATION))
        .and_then(Value::as_str);
    let (field, values): (String, Vec<(String, &str)>) = if !ranges.is_empty() {
        let field = "spec.LoadBalancerSourceRanges".to_string();
        let values = ranges
            .iter()
            .enumerate()
            .map(|(i, range)| (format!("{field}[{i}]"), range.as_str().unwrap_or("")))
            .collect();
        (field, values)
    } else if let Some(annotation) = annotation {
        let field = format!("metadata.annotations[{LOAD_BALANCER_SOURCE_RANGES_ANNOTATION}]");
        let values = annotation
            .split(',')
            .filter(|_| !annotation.trim().is_empty())
            .map(|range| (field.clone(), range))
            .collect();
        (field, values)
    } else {
        return;
    };
    if service_type != "LoadBalancer" {
        errs.forbidden(&field, "may only be used when `type` is 'LoadBalancer'");
    }
    for (item, range) in values {
        let text = range.trim();
        if !is_valid_cidr(text) {
            errs.invalid(
                &item,
                text,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            );
        }
    }
}

/// Whether `text` is `ADDRESS/PREFIX` for an IPv4 or IPv6 address (host bits may be
/// set, as upstream's IsValidCIDR allows).
fn is_valid_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

// ----- config and secrets -----

/// Max total size of a ConfigMap's or Secret's data, in bytes.
const MAX_DATA_SIZE: usize = 1024 * 1024;

/// The decoded size of base64 text.
fn base64_decoded_len(text: &str) -> usize {
    let padding = text.bytes().rev().take_while(|&b| b == b'=').count();
    (text.len() / 4 * 3).saturating_sub(padding)
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// Access modes as upstream's ValidatePersistentVolumeClaimSpec checks them.
fn validate_access_modes(spec: &Value, errs: &mut FieldErrors) {
    let modes = array_at(spec, "accessModes");
    if modes.is_empty() {
        errs.required("spec.accessModes", "at least 1 access mode is required");
    }
    for mode in modes {
        let mode = mode.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&mode) {
            errs.not_supported("spec.accessModes", mode, ACCESS_MODES);
        }
    }
    if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
        errs.forbidden(
            "spec.accessModes",
            "may not use ReadWriteOncePod with other access modes",
        );
    }
}

fn validate_persistent_volume_claim(claim: &Value, errs: &mut FieldErrors) {
    let spec = child(claim, "spec");
    validate_access_modes(spec, errs);
    if spec.pointer("/resources/requests/storage").is_none() {
        errs.required("spec.resources[storage]", "");
    }
}

fn validate_persistent_volume(volume: &Value, errs: &mut FieldErrors) {
    let spec = child(volume, "spec");
    validate_access_modes(spec, errs);
    if spec.pointer("/capacity/storage").is_none() {
        errs.required("spec.capacity", "");
    }
    const SOURCES: &[&str] = &[
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cephfs",
        "cinder",
        "csi",
        "fc",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "glusterfs",
        "hostPath",
        "iscsi",
        "local",
        "nfs",
        "photonPersistentDisk",
        "portworxVolume",
        "quobyte",
        "rbd",
        "scaleIO",
        "storageos",
        "vsphereVolume",
    ];
    if !SOURCES.iter().any(|source| spec.get(*source).is_some()) {
        errs.required("spec", "must specify a volume type");
    }
    const POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
    if let Some(policy) = spec
        .get("persistentVolumeReclaimPolicy")
        .and_then(Value::as_str)
        && !POLICIES.contains(&policy)
    {
        errs.not_supported("spec.persistentVolumeReclaimPolicy", policy, POLICIES);
    }
    if spec.get("local").is_some() && spec.pointer("/nodeAffinity/required").is_none() {
        errs.required("spec.nodeAffinity", "Local volume requires node affinity");
    }
}

fn validate_config_map(config_map: &Value, errs: &mut FieldErrors) {
    let mut total = 0;
    let binary = config_map.get("binaryData").and_then(Value::as_object);
    if let Some(Value::Object(data)) = config_map.get("data") {
        for (key, value) in data {
            let path = format!("data[{key}]");
            errs.invalid_each(&path, key, is_config_map_key(key));
            if binary.is_some_and(|b| b.contains_key(key)) {
                errs.invalid(&path, key, "duplicate of key present in binaryData");
            }
            total += value.as_str().map_or(0, str::len);
        }
    }
    if let Some(binary) = binary {
        for (key, value) in binary {
            errs.invalid_each(&format!("binaryData[{key}]"), key, is_config_map_key(key));
            total += value.as_str().map_or(0, base64_decoded_len);
        }
    }
    if total > MAX_DATA_SIZE {
        errs.too_long("", MAX_DATA_SIZE);
    }
}

fn validate_secret(secret: &Value, errs: &mut FieldErrors) {
    let data = secret.get("data").and_then(Value::as_object);
    let string_data = secret.get("stringData").and_then(Value::as_object);
    let mut total = 0;
    let mut keys: Vec<&String> = Vec::new();
    for (key, value) in data.into_iter().flatten() {
        total += value.as_str().map_or(0, base64_decoded_len);
        keys.push(key);
    }
    for (key, value) in string_data.into_iter().flatten() {
        total += value.as_str().map_or(0, str::len);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for key in &keys {
        errs.invalid_each(&format!("data[{key}]"), key, is_config_map_key(key));
    }
    if total > MAX_DATA_SIZE {
        errs.too_long("data", MAX_DATA_SIZE);
    }
    let has = |key: &str| keys.iter().any(|k| k.as_str() == key);
    let required_keys: &[&str] = match str_at(secret, "type") {
        "kubernetes.io/service-account-token" => {
            let annotation = secret
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if annotation.is_empty() {
                errs.required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                );
            }
            &[]
        }
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/basic-auth" => {
            if !has("username") && !has("password") {
                &["username", "password"]
            } else {
                &[]
            }
        }
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    };
    for key in required_keys {
        if !has(key) {
            errs.required(&format!("data[{key}]"), "");
        }
    }
}

// ----- namespaces -----

fn validate_namespace(namespace: &Value, errs: &mut FieldErrors) {
    let finalizers = namespace.pointer("/spec/finalizers");
    validate_finalizers(finalizers, "spec.finalizers", errs);
    for name in finalizers
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !name.contains('/') && !["kubernetes", "orphan", "foregroundDeletion"].contains(&name) {
            errs.invalid(
                "spec.finalizers",
                name,
                "name is neither a standard finalizer name nor is it fully qualified",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(causes: &[Cause]) -> Vec<String> {
        causes.iter().map(cause_to_string).collect()
    }

    fn has(causes: &[Cause], reason: &str, field: &str, message_start: &str) -> bool {
        causes
            .iter()
            .any(|c| c.reason == reason && c.field == field && c.message.starts_with(message_start))
    }

    #[test]
    fn name_rules_with_upstream_messages() {
        assert!(check_name(NameRule::Subdomain, "web.example-1").is_empty());
        assert_eq!(
            check_name(NameRule::Subdomain, "Foo_Bar"),
            [
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
        assert_eq!(
            check_name(NameRule::Subdomain, &"a".repeat(254))[0],
            "must be no more than 253 characters"
        );
        assert!(check_name(NameRule::Label, "my-name").is_empty());
        assert_eq!(
            check_name(NameRule::Label, "a.b"),
            ["must not contain dots"]
        );
        assert_eq!(
            check_name(NameRule::Label, "-a"),
            [
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(
            check_name(NameRule::Label, &"a".repeat(64))[0],
            "must be no more than 63 characters"
        );
        assert!(check_name(NameRule::PathSegment, "system:node:Foo").is_empty());
        assert_eq!(check_name(NameRule::PathSegment, ".."), ["may not be '..'"]);
        assert_eq!(
            check_name(NameRule::PathSegment, "a/b%c"),
            ["may not contain '/'", "may not contain '%'"]
        );
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert!(is_qualified_name("Name_1.x").is_empty());
        assert_eq!(is_qualified_name("/a"), ["prefix part must be non-empty"]);
        assert!(is_qualified_name("a/b/c")[0].starts_with("a qualified name must consist of"));
        assert!(
            is_qualified_name("Example.com/a")[0]
                .starts_with("prefix part a lowercase RFC 1123 subdomain")
        );
        assert_eq!(is_qualified_name("").len(), 2);
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("v1.2_x-Y").is_empty());
        assert_eq!(
            is_valid_label_value("-x"),
            [
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            ]
        );
        assert!(is_config_map_key("a.b-c_D").is_empty());
        assert_eq!(is_config_map_key("..x"), ["must not start with '..'"]);
        assert!(is_config_map_key("a b")[0].starts_with(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
        ));
        assert_eq!(is_dns1035_label("1abc").len(), 1);
        assert!(is_valid_port_name("http").is_empty());
        assert_eq!(
            is_valid_port_name("123"),
            ["must contain at least one letter (a-z)"]
        );
    }

    #[test]
    fn metadata_name_rules() {
        let causes = validate_metadata(
            &json!({"metadata": {"name": "Foo_Bar", "namespace": "default"}}),
            true,
            NameRule::Subdomain,
        );
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].reason, INVALID);
        assert_eq!(causes[0].field, "metadata.name");
        assert!(
            causes[0]
                .message
                .starts_with("Invalid value: \"Foo_Bar\": a lowercase RFC 1123 subdomain")
        );

        let causes = validate_metadata(
            &json!({"metadata": {"namespace": "default"}}),
            true,
            NameRule::Subdomain,
        );
        assert_eq!(
            messages(&causes),
            ["metadata.name: Required value: name or generateName is required"]
        );
        // generateName stands in for the name, and is checked as a prefix.
        let causes = validate_metadata(
            &json!({"metadata": {"generateName": "web-", "namespace": "ns"}}),
            true,
            NameRule::Subdomain,
        );
        assert!(causes.is_empty(), "{causes:?}");
        let causes = validate_metadata(
            &json!({"metadata": {"generateName": "Web-", "namespace": "ns"}}),
            true,
            NameRule::Subdomain,
        );
        assert!(has(
            &causes,
            INVALID,
            "metadata.generateName",
            "Invalid value: \"Web-\""
        ));
        assert!(validate_metadata(&json!({}), false, NameRule::Subdomain).len() == 1);
    }

    #[test]
    fn metadata_namespace_per_scope() {
        let causes = validate_metadata(
            &json!({"metadata": {"name": "a"}}),
            true,
            NameRule::Subdomain,
        );
        assert_eq!(messages(&causes), ["metadata.namespace: Required value"]);
        let causes = validate_metadata(
            &json!({"metadata": {"name": "a", "namespace": "x"}}),
            false,
            NameRule::Subdomain,
        );
        assert_eq!(
            messages(&causes),
            ["metadata.namespace: Forbidden: not allowed on this type"]
        );
        assert_eq!(causes[0].reason, FORBIDDEN);
        let causes = validate_metadata(
            &json!({"metadata": {"name": "a", "namespace": "Bad_NS"}}),
            true,
            NameRule::Subdomain,
        );
        assert!(has(
            &causes,
            INVALID,
            "metadata.namespace",
            "Invalid value: \"Bad_NS\": a lowercase RFC 1123 label"
        ));
    }

    #[test]
    fn metadata_labels_annotations_finalizers_owners() {
        let object = json!({"metadata": {
            "name": "a",
            "labels": {"good": "v", "bad key": "v", "k": "-bad-"},
            "annotations": {"Example.com/Key": "ok", "no good": "x"},
            "finalizers": ["example.com/f", "bad/finalizer/x", "orphan", "foregroundDeletion"],
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "1", "controller": true},
                {"apiVersion": "", "kind": "", "name": "", "uid": "", "controller": true}
            ],
            "generation": -1
        }});
        let causes = validate_metadata(&object, false, NameRule::Subdomain);
        assert!(has(
            &causes,
            INVALID,
            "metadata.labels",
            "Invalid value: \"bad key\": name part must consist of"
        ));
        assert!(has(
            &causes,
            INVALID,
            "metadata.labels",
            "Invalid value: \"-bad-\": a valid label must be"
        ));
        assert!(has(
            &causes,
            INVALID,
            "metadata.annotations",
            "Invalid value: \"no good\""
        ));
        assert!(!causes.iter().any(|c| c.message.contains("Example.com/Key")));
        assert!(has(
            &causes,
            INVALID,
            "metadata.finalizers",
            "Invalid value: \"bad/finalizer/x\": a qualified name must consist of"
        ));
        assert!(has(
            &causes,
            INVALID,
            "metadata.finalizers",
            "Invalid value: []string{\"example.com/f\", \"bad/finalizer/x\", \"orphan\", \"foregroundDeletion\"}: finalizer orphan and foregroundDeletion cannot be both set"
        ));
        assert!(has(
            &causes,
            INVALID,
            "metadata.ownerReferences.apiVersion",
            "Invalid value: \"\": version must not be empty"
        ));
        assert!(has(
            &causes,
            INVALID,
            "metadata.ownerReferences.uid",
            "Invalid value: \"\": must not be empty"
        ));
        assert!(causes.iter().any(|c| c.message.contains("Only one reference can have Controller set to true. Found \"true\" in references for ReplicaSet/rs and /")));
        assert!(has(
            &causes,
            INVALID,
            "metadata.generation",
            "Invalid value: -1: must be greater than or equal to 0"
        ));
    }

    #[test]
    fn annotation_total_size() {
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let object = json!({"metadata": {"name": "a", "annotations": {"k": big}}});
        let causes = validate_metadata(&object, false, NameRule::Subdomain);
        assert_eq!(
            messages(&causes),
            ["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
        assert_eq!(causes[0].reason, TOO_LONG);
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d"}, "spec": spec})
    }

    #[test]
    fn pod_rules() {
        let ok = pod(
            json!({"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}]}]}),
        );
        assert!(validate_object("", "Pod", &ok).is_empty());

        let causes = validate_object("", "Pod", &pod(json!({"containers": []})));
        assert_eq!(messages(&causes), ["spec.containers: Required value"]);

        let causes = validate_object(
            "",
            "Pod",
            &pod(json!({
                "restartPolicy": "Sometimes",
                "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}, "hostPath": {"path": "/"}}],
                "containers": [
                    {"name": "Web", "ports": [{"containerPort": 70000, "protocol": "HTTP"}],
                     "volumeMounts": [{"name": "nope", "mountPath": "/a"}]},
                    {"name": "dup", "image": "x"},
                    {"name": "dup", "image": "x", "env": [{"name": "A=B"}]}
                ]
            })),
        );
        assert!(has(
            &causes,
            NOT_SUPPORTED,
            "spec.restartPolicy",
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        ));
        assert!(has(
            &causes,
            DUPLICATE,
            "spec.volumes[1].name",
            "Duplicate value: \"v\""
        ));
        assert!(has(
            &causes,
            FORBIDDEN,
            "spec.volumes[2].emptyDir",
            "Forbidden: may not specify more than 1 volume type"
        ));
        assert!(has(
            &causes,
            INVALID,
            "spec.containers[0].name",
            "Invalid value: \"Web\": a lowercase RFC 1123 label"
        ));
        assert!(has(
            &causes,
            REQUIRED,
            "spec.containers[0].image",
            "Required value"
        ));
        assert!(has(
            &causes,
            INVALID,
            "spec.containers[0].ports[0].containerPort",
            "Invalid value: 70000: must be between 1 and 65535, inclusive"
        ));
        assert!(has(
            &causes,
            NOT_SUPPORTED,
            "spec.containers[0].ports[0].protocol",
            "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        ));
        assert!(has(
            &causes,
            NOT_FOUND,
            "spec.containers[0].volumeMounts[0].name",
            "Not found: \"nope\""
        ));
        assert!(has(
            &causes,
            DUPLICATE,
            "spec.containers[2].name",
            "Duplicate value: \"dup\""
        ));
        assert!(has(
            &causes,
            INVALID,
            "spec.containers[2].env[0].name",
            "Invalid value: \"A=B\""
        ));
    }

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"},
               "spec": {"replicas": 1, "selector": selector, "template": {
                   "metadata": {"labels": labels},
                   "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})
    }

    #[test]
    fn workload_selector_rules() {
        let ok = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web", "x": "y"}),
        );
        assert!(validate_object("apps", "Deployment", &ok).is_empty());

        let causes = validate_object(
            "apps",
            "Deployment",
            &deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "db"})),
        );
        assert_eq!(
            messages(&causes),
            [
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"
            ]
        );

        let mut missing = ok.clone();
        missing["spec"].as_object_mut().unwrap().remove("selector");
        assert_eq!(
            messages(&validate_object("apps", "Deployment", &missing)),
            ["spec.selector: Required value"]
        );

        let causes = validate_object(
            "apps",
            "Deployment",
            &deployment(json!({}), json!({"app": "web"})),
        );
        assert!(has(
            &causes,
            INVALID,
            "spec.selector",
            "Invalid value: {}: empty selector is invalid for deployment"
        ));

        let causes = validate_object(
            "apps",
            "StatefulSet",
            &deployment(
                json!({"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["a"]}]}),
                json!({"app": "a"}),
            ),
        );
        assert!(has(
            &causes,
            INVALID,
            "spec.selector.matchExpressions[0].operator",
            "Invalid value: \"Equals\": not a valid selector operator"
        ));

        let mut negative = ok.clone();
        negative["spec"]["replicas"] = json!(-1);
        negative["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let causes = validate_object("apps", "Deployment", &negative);
        assert!(has(
            &causes,
            INVALID,
            "spec.replicas",
            "Invalid value: -1: must be greater than or equal to 0"
        ));
        assert!(has(
            &causes,
            NOT_SUPPORTED,
            "spec.template.spec.restartPolicy",
            "Unsupported value: \"Never\": supported values: \"Always\""
        ));

        let causes = validate_object(
            "apps",
            "DaemonSet",
            &deployment(json!({"matchLabels": {"a": "b"}}), json!({})),
        );
        assert!(has(
            &causes,
            INVALID,
            "spec.template.metadata.labels",
            "Invalid value: map[string]string{}"
        ));
    }

    #[test]
    fn job_restart_policy() {
        let job = |policy: Option<&str>| {
            let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
            if let Some(p) = policy {
                spec["restartPolicy"] = json!(p);
            }
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "n"},
                   "spec": {"template": {"spec": spec}}})
        };
        assert!(validate_object("batch", "Job", &job(Some("Never"))).is_empty());
        assert!(validate_object("batch", "Job", &job(Some("OnFailure"))).is_empty());
        assert_eq!(
            messages(&validate_object("batch", "Job", &job(None))),
            [
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
            ]
        );
        let cron = json!({"metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}}});
        assert_eq!(
            messages(&validate_object("batch", "CronJob", &cron)),
            ["spec.schedule: Required value"]
        );
    }

    #[test]
    fn service_rules() {
        let service =
            |spec: Value| json!({"metadata": {"name": "web", "namespace": "n"}, "spec": spec});
        assert!(
            validate_object(
                "",
                "Service",
                &service(json!({"ports": [{"port": 80, "targetPort": 8080}]}))
            )
            .is_empty()
        );
        assert_eq!(
            messages(&validate_object("", "Service", &service(json!({})))),
            ["spec.ports: Required value"]
        );
        assert!(validate_object("", "Service", &service(json!({"clusterIP": "None"}))).is_empty());
        assert!(
            validate_object(
                "",
                "Service",
                &service(json!({"type": "ExternalName", "externalName": "example.com"}))
            )
            .is_empty()
        );
        let causes = validate_object(
            "",
            "Service",
            &service(json!({
                "type": "Magic",
                "ports": [{"port": 0, "protocol": "HTTP"}, {"port": 443, "name": "https", "targetPort": "Bad_Name"}]
            })),
        );
        assert!(has(
            &causes,
            NOT_SUPPORTED,
            "spec.type",
            "Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        ));
        assert!(has(
            &causes,
            REQUIRED,
            "spec.ports[0].name",
            "Required value"
        ));
        assert!(has(
            &causes,
            INVALID,
            "spec.ports[0].port",
            "Invalid value: 0: must be between 1 and 65535, inclusive"
        ));
        assert!(has(
            &causes,
            NOT_SUPPORTED,
            "spec.ports[0].protocol",
            "Unsupported value: \"HTTP\""
        ));
        assert!(has(
            &causes,
            INVALID,
            "spec.ports[1].targetPort",
            "Invalid value: \"Bad_Name\""
        ));
        let numeric_name = json!({"metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}});
        assert!(has(
            &validate_object("", "Service", &numeric_name),
            INVALID,
            "metadata.name",
            "Invalid value: \"1web\": a DNS-1035 label must consist"
        ));
    }

    #[test]
    fn load_balancer_source_ranges_are_cidrs_of_load_balancers() {
        let service = |fields: Value| {
            let mut service = json!({"metadata": {"name": "web", "namespace": "n"},
                                     "spec": {"ports": [{"port": 80}], "type": "LoadBalancer"}});
            for (key, value) in fields.as_object().unwrap() {
                service["spec"][key] = value.clone();
            }
            service
        };
        let good = service(
            json!({"loadBalancerSourceRanges": ["10.0.0.0/8", " 192.0.2.1/32 ", "2001:db8::/64"]}),
        );
        assert!(validate_object("", "Service", &good).is_empty());
        let bad = service(
            json!({"loadBalancerSourceRanges": ["10.0.0.0/8", "10.0.0.0", "10.0.0.0/33", "nonsense/8"]}),
        );
        assert_eq!(
            messages(&validate_object("", "Service", &bad)),
            [
                "spec.LoadBalancerSourceRanges[1]: Invalid value: \"10.0.0.0\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.LoadBalancerSourceRanges[2]: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.LoadBalancerSourceRanges[3]: Invalid value: \"nonsense/8\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ]
        );
        let cluster_ip =
            service(json!({"type": "ClusterIP", "loadBalancerSourceRanges": ["10.0.0.0/8"]}));
        assert_eq!(
            messages(&validate_object("", "Service", &cluster_ip)),
            [
                "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'"
            ]
        );
    }

    #[test]
    fn the_older_source_ranges_annotation_is_checked_when_the_field_is_empty() {
        let service = |service_type: &str, annotation: &str| {
            json!({"metadata": {"name": "web", "namespace": "n",
                                "annotations": {LOAD_BALANCER_SOURCE_RANGES_ANNOTATION: annotation}},
                   "spec": {"ports": [{"port": 80}], "type": service_type}})
        };
        for good in ["10.0.0.0/8, 192.0.2.1/32", " ", ""] {
            assert!(
                validate_object("", "Service", &service("LoadBalancer", good)).is_empty(),
                "{good:?}"
            );
        }
        let field = "metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]";
        assert_eq!(
            messages(&validate_object(
                "",
                "Service",
                &service("LoadBalancer", "10.0.0.0/8,10.1.0.0")
            )),
            [format!(
                "{field}: Invalid value: \"10.1.0.0\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
            )]
        );
        assert_eq!(
            messages(&validate_object(
                "",
                "Service",
                &service("ClusterIP", "10.0.0.0/8")
            )),
            [format!(
                "{field}: Forbidden: may only be used when `type` is 'LoadBalancer'"
            )]
        );
        // The field wins: the annotation is not looked at when the field is set.
        let mut both = service("LoadBalancer", "nonsense");
        both["spec"]["loadBalancerSourceRanges"] = json!(["10.0.0.0/8"]);
        assert!(validate_object("", "Service", &both).is_empty());
    }

    #[test]
    fn config_map_and_secret_keys() {
        let cm = json!({"metadata": {"name": "c"}, "data": {"good.key": "v", "bad key": "v"}});
        assert_eq!(
            messages(&validate_object("", "ConfigMap", &cm)),
            [
                "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
            ]
        );
        let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "x", "..": "y"}});
        let causes = validate_object("", "Secret", &secret);
        assert!(has(&causes, REQUIRED, "data[tls.key]", "Required value"));
        assert!(has(&causes, INVALID, "data[..]", "Invalid value: \"..\""));
        assert!(!causes.iter().any(|c| c.field == "data[tls.crt]"));
        let big = json!({"metadata": {"name": "c"}, "data": {"k": "x".repeat(MAX_DATA_SIZE + 1)}});
        assert_eq!(
            messages(&validate_object("", "ConfigMap", &big)),
            [": Too long: may not be more than 1048576 bytes"]
        );
    }

    #[test]
    fn namespaces_and_kube_finalizers() {
        let ns =
            json!({"metadata": {"name": "n"}, "spec": {"finalizers": ["kubernetes", "custom"]}});
        assert_eq!(
            messages(&validate_object("", "Namespace", &ns)),
            [
                "spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
            ]
        );
        let cm = json!({"metadata": {"name": "c", "finalizers": ["example.com/x", "mine"]}});
        assert_eq!(
            messages(&validate_object("", "ConfigMap", &cm)),
            [
                "metadata.finalizers[1]: Invalid value: \"mine\": name is neither a standard finalizer name nor is it fully qualified"
            ]
        );
        // Custom resources may use any qualified name.
        assert!(validate_object("example.com", "Widget", &cm).is_empty());
    }

    #[test]
    fn invalid_status_message() {
        let causes = vec![
            Cause::new(REQUIRED, "spec.containers", "Required value"),
            Cause::new(INVALID, "metadata.name", "Invalid value: \"A\": bad"),
        ];
        assert_eq!(
            invalid_message("apps", "Deployment", "web", &causes),
            "Deployment.apps \"web\" is invalid: [spec.containers: Required value, metadata.name: Invalid value: \"A\": bad]"
        );
        assert_eq!(
            invalid_message("", "Pod", "p", &causes[..1]),
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
    }

    #[test]
    fn claims_and_volumes_need_modes_sizes_and_a_source() {
        let fields = |kind: &str, spec: Value| -> Vec<String> {
            let object = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x", "namespace": "d"}, "spec": spec});
            let mut fields: Vec<String> = validate_object("", kind, &object)
                .into_iter()
                .map(|c| format!("{} {}", c.field, c.message))
                .collect();
            fields.sort();
            fields
        };
        let good = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        assert!(fields("PersistentVolumeClaim", good).is_empty());
        assert_eq!(
            fields(
                "PersistentVolumeClaim",
                json!({"accessModes": ["ReadWriteOncePod", "ReadOnlyMany"]})
            ),
            [
                "spec.accessModes Forbidden: may not use ReadWriteOncePod with other access modes",
                "spec.resources[storage] Required value",
            ]
        );
        assert_eq!(
            fields(
                "PersistentVolume",
                json!({"accessModes": [], "capacity": {"storage": "1Gi"}})
            ),
            [
                "spec Required value: must specify a volume type",
                "spec.accessModes Required value: at least 1 access mode is required",
            ]
        );
        let local = json!({"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "local": {"path": "/d"}});
        assert_eq!(
            fields("PersistentVolume", local),
            ["spec.nodeAffinity Required value: Local volume requires node affinity"]
        );
    }

    fn autoscaler(spec: Value) -> Value {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "n"}, "spec": spec})
    }

    #[test]
    fn horizontal_pod_autoscalers_are_validated() {
        let good = autoscaler(json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                {"type": "ContainerResource", "containerResource": {"name": "memory", "container": "app", "target": {"type": "AverageValue", "averageValue": "64Mi"}}},
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Min",
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}},
        }));
        let causes = validate_object("autoscaling", "HorizontalPodAutoscaler", &good);
        assert!(causes.is_empty(), "{:?}", messages(&causes));

        let inverted = autoscaler(json!({
            "scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 5, "maxReplicas": 2,
        }));
        let causes = validate_object("autoscaling", "HorizontalPodAutoscaler", &inverted);
        assert_eq!(
            messages(&causes),
            ["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"]
        );

        let unknown_type = autoscaler(json!({
            "scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "maxReplicas": 2,
            "metrics": [{"type": "Bogus"}],
        }));
        let causes = validate_object("autoscaling", "HorizontalPodAutoscaler", &unknown_type);
        assert!(
            has(
                &causes,
                "FieldValueNotSupported",
                "spec.metrics[0].type",
                "Unsupported value: \"Bogus\""
            ),
            "{:?}",
            messages(&causes)
        );

        let broken = autoscaler(json!({
            "scaleTargetRef": {"kind": "Deployment"},
            "minReplicas": 0, "maxReplicas": 0,
            "metrics": [
                {"type": "Resource", "pods": {}},
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}},
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Value", "value": "-1"}}},
            ],
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": 4000, "selectPolicy": "Most",
                "policies": [{"type": "Replicas", "value": 0, "periodSeconds": 2000}]}},
        }));
        let causes = validate_object("autoscaling", "HorizontalPodAutoscaler", &broken);
        for (reason, field) in [
            ("FieldValueRequired", "spec.scaleTargetRef.name"),
            ("FieldValueInvalid", "spec.minReplicas"),
            ("FieldValueInvalid", "spec.maxReplicas"),
            ("FieldValueRequired", "spec.metrics[0].resource"),
            ("FieldValueForbidden", "spec.metrics[0].pods"),
            (
                "FieldValueInvalid",
                "spec.metrics[1].resource.target.averageUtilization",
            ),
            ("FieldValueInvalid", "spec.metrics[2].resource.target.value"),
            ("FieldValueInvalid", "spec.metrics[2].resource.target.type"),
            (
                "FieldValueInvalid",
                "spec.behavior.scaleUp.stabilizationWindowSeconds",
            ),
            (
                "FieldValueNotSupported",
                "spec.behavior.scaleUp.selectPolicy",
            ),
            (
                "FieldValueNotSupported",
                "spec.behavior.scaleUp.policies[0].type",
            ),
            (
                "FieldValueInvalid",
                "spec.behavior.scaleUp.policies[0].value",
            ),
            (
                "FieldValueInvalid",
                "spec.behavior.scaleUp.policies[0].periodSeconds",
            ),
        ] {
            assert!(
                has(&causes, reason, field, ""),
                "{reason} {field}: {:?}",
                messages(&causes)
            );
        }

        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "n"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 3,
                "maxReplicas": 1, "targetCPUUtilizationPercentage": 0}});
        let causes = validate_object("autoscaling", "HorizontalPodAutoscaler", &v1);
        assert!(has(
            &causes,
            "FieldValueInvalid",
            "spec.maxReplicas",
            "Invalid value: 1: must be greater than or equal"
        ));
        assert!(has(
            &causes,
            "FieldValueInvalid",
            "spec.targetCPUUtilizationPercentage",
            ""
        ));
    }
}
