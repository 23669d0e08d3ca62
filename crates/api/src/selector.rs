//! Label and field selectors: parsing the query-string grammar and matching objects.
//!
//! Label selectors follow `k8s.io/apimachinery/pkg/labels`:
//!
//! ```text
//! <selector>    ::= <requirement> | <requirement> "," <selector>
//! <requirement> ::= [!] KEY [ <set-based> | <exact-match> | <comparison> ]
//! <set-based>   ::= ("in" | "notin") "(" VALUE {"," VALUE} ")"
//! <exact-match> ::= ("=" | "==" | "!=") VALUE
//! <comparison>  ::= (">" | "<") INTEGER
//! ```
//!
//! A bare `KEY` requires the label to exist, `!KEY` requires it to be absent;
//! `!=` and `notin` also match objects without the label. Whitespace separates
//! tokens and is otherwise ignored; keys must be qualified names and values valid
//! label values.
//!
//! Field selectors follow `k8s.io/apimachinery/pkg/fields`: comma-separated
//! `field=value`, `field==value` or `field!=value` terms, where `\,`, `\=` and `\\`
//! escape those characters in a value. Which fields may be selected depends on the
//! resource ([`supported_fields`]); a field an object lacks reads as "".
use std::fmt;

use serde_json::{Map, Value};

use crate::validation::{go_quote, go_string_slice, is_qualified_name, is_valid_label_value};

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

/// The operator of one label selector requirement (`selection.Operator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// Upstream's name of the operator (`in`, `notin`, `=`, `==`, `!=`, `exists`,
    /// `!`, `gt`, `lt`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// The binary operators, in upstream's order (used in parse errors).
const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

/// One requirement of a label selector: a key, an operator and its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, checking it as upstream's `labels.NewRequirement` does:
    /// a qualified-name key, values valid label values, `in`/`notin` with at least
    /// one value, `=`/`==`/`!=` with exactly one, `exists`/`!` with none, `gt`/`lt`
    /// with one integer.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        let mut errs: Vec<String> = Vec::new();
        let key_errs = is_qualified_name(key);
        if !key_errs.is_empty() {
            errs.push(format!(
                "key: Invalid value: {}: {}",
                go_quote(key),
                key_errs.join("; ")
            ));
        }
        let shown = go_string_slice(&values);
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errs.push(format!(
                        "values: Invalid value: {shown}: for 'in', 'notin' operators, values set can't be empty"
                    ));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    errs.push(format!(
                        "values: Invalid value: {shown}: exact-match compatibility requires one single value"
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errs.push(format!(
                        "values: Invalid value: {shown}: values set must be empty for exists and does not exist"
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(format!(
                        "values: Invalid value: {shown}: for 'Gt', 'Lt' operators, exactly one value is required"
                    ));
                }
                for (i, value) in values.iter().enumerate() {
                    if value.parse::<i64>().is_err() {
                        errs.push(format!(
                            "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                            go_quote(value)
                        ));
                    }
                }
            }
        }
        for (i, value) in values.iter().enumerate() {
            let value_errs = is_valid_label_value(value);
            if !value_errs.is_empty() {
                errs.push(format!(
                    "values[{i}][{key}]: Invalid value: {}: {}",
                    go_quote(value),
                    value_errs.join("; ")
                ));
            }
        }
        if errs.is_empty() {
            Ok(Requirement {
                key: key.to_string(),
                operator,
                values,
            })
        } else {
            Err(aggregate(errs))
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether the labels satisfy this requirement (upstream's `Requirement.Matches`).
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels
            .and_then(|l| l.get(&self.key))
            .and_then(Value::as_str);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotIn | Operator::NotEquals => {
                value.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), [wanted]) = (value, self.values.as_slice()) else {
                    return false;
                };
                match (actual.parse::<i64>(), wanted.parse::<i64>()) {
                    (Ok(actual), Ok(wanted)) => {
                        if self.operator == Operator::GreaterThan {
                            actual > wanted
                        } else {
                            actual < wanted
                        }
                    }
                    _ => false,
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// Upstream's `Requirement.String()`: `!key`, `key`, `key=v`, `key in (a,b)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (op, parens) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", false),
            Operator::DoubleEquals => ("==", false),
            Operator::NotEquals => ("!=", false),
            Operator::In => (" in ", true),
            Operator::NotIn => (" notin ", true),
            Operator::GreaterThan => (">", false),
            Operator::LessThan => ("<", false),
        };
        f.write_str(op)?;
        let mut values = self.values.clone();
        values.sort();
        if parens {
            write!(f, "({})", values.join(","))
        } else {
            f.write_str(&values.join(","))
        }
    }
}

/// Joins error messages as upstream's `utilerrors.Aggregate` does: one message
/// alone, several in brackets, duplicates dropped.
fn aggregate(messages: Vec<String>) -> String {
    let mut unique: Vec<String> = Vec::new();
    for m in messages {
        if !unique.contains(&m) {
            unique.push(m);
        }
    }
    if unique.len() == 1 {
        unique.pop().unwrap_or_default()
    } else {
        format!("[{}]", unique.join(", "))
    }
}

/// A parsed label selector (`a=b,c!=d,e in (f,g),!h,i`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    /// All must match (AND), sorted by key.
    requirements: Vec<Requirement>,
    /// Set for a null metav1.LabelSelector, which selects nothing.
    nothing: bool,
}

impl LabelSelector {
    /// Parses the query-string form. Errors read like upstream's, e.g.
    /// `unable to parse requirement: ...`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Parser::new(s).parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Builds one from a metav1.LabelSelector object (`matchLabels`, `matchExpressions`).
    /// `null` selects nothing, `{}` everything; an unknown operator is an error
    /// (`"Foo" is not a valid label selector operator`).
    pub fn from_json(selector: &Value) -> Result<Self, String> {
        let object = match selector {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(object) => object,
            other => return Err(format!("label selector must be an object, got {other}")),
        };
        let mut requirements = Vec::new();
        match object.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (key, value) in labels {
                    let value = value
                        .as_str()
                        .ok_or_else(|| format!("matchLabels[{key}] must be a string"))?;
                    requirements.push(Requirement::new(
                        key,
                        Operator::Equals,
                        vec![value.to_string()],
                    )?);
                }
            }
            Some(_) => return Err("matchLabels must be an object".to_string()),
        }
        match object.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(expressions)) => {
                for expression in expressions {
                    requirements.push(requirement_from_expression(expression)?);
                }
            }
            Some(_) => return Err("matchExpressions must be an array".to_string()),
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// A selector requiring each given label to have the given value (upstream's
    /// `SelectorFromSet`, used for Service and ReplicationController selectors); an
    /// empty map selects everything. Non-string values are ignored.
    pub fn from_labels(labels: &Map<String, Value>) -> Self {
        let mut requirements: Vec<Requirement> = labels
            .iter()
            .filter_map(|(key, value)| {
                Some(Requirement {
                    key: key.clone(),
                    operator: Operator::Equals,
                    values: vec![value.as_str()?.to_string()],
                })
            })
            .collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// The selector that matches no object (a null metav1.LabelSelector).
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Whether `labels` (an object's metadata.labels, possibly absent) match.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector restricts nothing (matches every object).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The single value the selector requires for `label` (by `=`, `==` or a
    /// one-value `in`), if any — upstream's `RequiresExactMatch`.
    pub fn required_value(&self, label: &str) -> Option<&str> {
        let requirement = self.requirements.iter().find(|r| r.key == label)?;
        match (requirement.operator, requirement.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [value]) => Some(value),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string form (`a=b,c in (d,e)`), as upstream prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

fn requirement_from_expression(expression: &Value) -> Result<Requirement, String> {
    let key = expression.get("key").and_then(Value::as_str).unwrap_or("");
    let operator_name = expression
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or("");
    let operator = match operator_name {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            return Err(format!(
                "{} is not a valid label selector operator",
                go_quote(other)
            ));
        }
    };
    let values = match expression.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("values of {key} must be strings"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(format!("values of {key} must be an array")),
    };
    Requirement::new(key, operator, values)
}

/// Tokens of the label selector lexer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// Where the parser is: in a value list, `in` and `notin` are plain identifiers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

fn literal_token(s: &[u8]) -> Option<Token> {
    Some(match s {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"in" => Token::In,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"notin" => Token::NotIn,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the selector into tokens, as upstream's `Lexer`.
fn lex(input: &str) -> Vec<(Token, String)> {
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut items = Vec::new();
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            items.push((Token::EndOfString, String::new()));
            return items;
        }
        let start = pos;
        if is_special_symbol(bytes[pos]) {
            // The longest run of special symbols that still forms a token.
            let mut last: Option<(Token, usize)> = None;
            while pos < bytes.len() && is_special_symbol(bytes[pos]) {
                match literal_token(&bytes[start..=pos]) {
                    Some(token) => last = Some((token, pos + 1)),
                    None if last.is_some() => break,
                    None => {}
                }
                pos += 1;
            }
            match last {
                Some((token, end)) => {
                    pos = end;
                    items.push((token, input[start..end].to_string()));
                }
                None => items.push((
                    Token::Error,
                    format!("error expected: keyword found '{}'", &input[start..pos]),
                )),
            }
        } else {
            while pos < bytes.len() && !is_special_symbol(bytes[pos]) && !is_whitespace(bytes[pos])
            {
                pos += 1;
            }
            let word = &input[start..pos];
            let token = literal_token(word.as_bytes()).unwrap_or(Token::Identifier);
            items.push((token, word.to_string()));
        }
    }
}

/// Upstream's recursive-descent label selector parser.
struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

impl Parser {
    fn new(input: &str) -> Self {
        Parser {
            items: lex(input),
            position: 0,
        }
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        let index = self.position.min(self.items.len() - 1);
        let (token, literal) = self.items[index].clone();
        (in_context(token, context), literal)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let item = self.lookahead(context);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, next_literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{next_literal}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!(
                                "found '{literal}', expected: ',' or 'end of string'"
                            ));
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{literal}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(operator) = inferred {
            return Requirement::new(&key, operator, Vec::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, operator, values)
    }

    /// The key, and `exists` or `!` when no binary operator follows.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut token, mut literal) = self.consume(Context::Values);
        if token == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        let key_errs = is_qualified_name(&literal);
        if !key_errs.is_empty() {
            return Err(format!(
                "<nil>: Invalid value: {}: {}",
                go_quote(&literal),
                key_errs.join("; ")
            ));
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((literal, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{literal}', expected: {BINARY_OPERATORS}")),
        })
    }

    /// `( v1, v2, ... )`; values form a sorted set, empty entries allowed.
    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (token, literal) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (token, _) = self.consume(Context::Values);
                if token != Token::ClosedPar {
                    return Err(format!("found '{literal}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!(
                "found '{literal}', expected: ',', ')' or identifier"
            )),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut set = std::collections::BTreeSet::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    set.insert(literal);
                    let (next, next_literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(set.into_iter().collect()),
                        _ => {
                            return Err(format!("found '{next_literal}', expected: ',' or ')'"));
                        }
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosedPar {
                        set.insert(String::new());
                        return Ok(set.into_iter().collect());
                    }
                    if next == Token::Comma {
                        set.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (token, _) = self.lookahead(Context::Values);
        if token == Token::EndOfString || token == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            Ok(vec![literal])
        } else {
            Err(format!("found '{literal}', expected: identifier"))
        }
    }
}

fn in_context(token: Token, context: Context) -> Token {
    match (context, token) {
        (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
        _ => token,
    }
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

/// The comparison of one field selector term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldOperator {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

/// One `field=value` / `field!=value` term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub operator: FieldOperator,
    /// The unescaped value.
    pub value: String,
}

/// A parsed field selector (`metadata.name=x,status.phase!=Running`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    /// All must match (AND), in upstream's order (terms sorted as text).
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses the query-string form. Errors read like upstream's, e.g.
    /// `invalid selector: 'a'; can't understand 'a'`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, operator, raw_value)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            terms.push(FieldTerm {
                field: field.to_string(),
                operator,
                value: unescape_value(raw_value)?,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Checks every field is one upstream supports for this resource; the error reads
    /// like upstream's (`field label not supported: spec.foo`).
    pub fn validate_for(&self, group: &str, plural: &str) -> Result<(), String> {
        let supported = supported_fields(group, plural);
        match self
            .terms
            .iter()
            .find(|t| !supported.contains(&t.field.as_str()))
        {
            None => Ok(()),
            Some(term) => Err(unsupported_field_message(group, plural, &term.field)),
        }
    }

    /// Whether the object matches. The object's `apiVersion` and `kind` decide how
    /// fields are read (see [`field_value`]); use [`FieldSelector::matches_kind`]
    /// for objects that may lack them.
    pub fn matches(&self, object: &Value) -> bool {
        let (group, kind) = group_and_kind(object);
        self.matches_kind(group, kind, object)
    }

    /// Whether an object of the given kind (`group` "" for core) matches.
    pub fn matches_kind(&self, group: &str, kind: &str, object: &Value) -> bool {
        self.terms.iter().all(|term| {
            let actual = field_value_of_kind(group, kind, object, &term.field);
            match term.operator {
                FieldOperator::Equals => actual == term.value,
                FieldOperator::NotEquals => actual != term.value,
            }
        })
    }

    /// Whether the selector restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value required for `field` by an `=`/`==` term, if any (lets the server
    /// narrow a list by name or namespace).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.operator == FieldOperator::Equals)
            .map(|t| t.value.as_str())
    }

    /// The terms, in upstream's order.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical string form, values escaped again.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let op = match t.operator {
                    FieldOperator::Equals => "=",
                    FieldOperator::NotEquals => "!=",
                };
                format!("{}{op}{}", t.field, escape_value(&t.value))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Escapes `\`, `,` and `=` in a field selector value.
pub fn escape_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

/// Splits on commas that are not backslash-escaped; the escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at the first operator (`!=`, `==` or `=`); the field part has no
/// escaping.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    const OPERATORS: [(&str, FieldOperator); 3] = [
        ("!=", FieldOperator::NotEquals),
        ("==", FieldOperator::Equals),
        ("=", FieldOperator::Equals),
    ];
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in OPERATORS {
            if rest.starts_with(op) {
                return Some((&term[..i], operator, &term[i + op.len()..]));
            }
        }
    }
    None
}

/// Undoes [`escape_value`]; an unknown escape or a bare `,`/`=` is an error.
fn unescape_value(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut in_slash = false;
    for c in raw.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    ));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Upstream prints the rune with %v, i.e. as its code point.
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ));
            }
            other => out.push(other),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

/// How a resource rejects a field label it does not support.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rejection {
    /// `field label not supported: <label>` (most conversion funcs, custom resources).
    NotSupported,
    /// `field label "<label>" not supported for Job` (batch/v1 Job).
    Job,
    /// `"<label>" is not a known field selector: only "metadata.name",
    /// "metadata.namespace"` (built-in kinds without their own conversion func).
    Default,
}

/// The field labels of one resource and how it words a rejection.
struct FieldLabels {
    group: &'static str,
    plural: &'static str,
    labels: &'static [&'static str],
    rejection: Rejection,
}

/// The field labels upstream's conversion funcs accept, per resource
/// (pkg/apis/core/v1/conversion.go, pkg/apis/events/v1/conversion.go,
/// pkg/apis/batch/v1/conversion.go, pkg/apis/certificates/v1/conversion.go).
/// Aliases (`spec.host`, `regarding.*`) are listed as accepted too.
const FIELD_LABELS: &[FieldLabels] = &[
    FieldLabels {
        group: "",
        plural: "pods",
        labels: &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
            "spec.host",
        ],
        rejection: Rejection::NotSupported,
    },
    FieldLabels {
        group: "",
        plural: "nodes",
        labels: &["metadata.name", "spec.unschedulable"],
        rejection: Rejection::NotSupported,
    },
    FieldLabels {
        group: "",
        plural: "replicationcontrollers",
        labels: &["metadata.name", "metadata.namespace", "status.replicas"],
        rejection: Rejection::NotSupported,
    },
    FieldLabels {
        group: "",
        plural: "events",
        labels: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "metadata.namespace",
            "metadata.name",
        ],
        rejection: Rejection::NotSupported,
    },
    FieldLabels {
        group: "events.k8s.io",
        plural: "events",
        labels: &[
            "reason",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reportingController",
            "source",
            "type",
            "metadata.namespace",
            "metadata.name",
        ],
        rejection: Rejection::NotSupported,
    },
    FieldLabels {
        group: "",
        plural: "namespaces",
        labels: &["status.phase", "metadata.name"],
        rejection: Rejection::NotSupported,
    },
    FieldLabels {
        group: "",
        plural: "secrets",
        labels: &["type", "metadata.namespace", "metadata.name"],
        rejection: Rejection::NotSupported,
    },
    FieldLabels {
        group: "",
        plural: "services",
        labels: &[
            "metadata.namespace",
            "metadata.name",
            "spec.clusterIP",
            "spec.type",
        ],
        rejection: Rejection::NotSupported,
    },
    FieldLabels {
        group: "batch",
        plural: "jobs",
        labels: &["metadata.name", "metadata.namespace", "status.successful"],
        rejection: Rejection::Job,
    },
    FieldLabels {
        group: "certificates.k8s.io",
        plural: "certificatesigningrequests",
        labels: &["metadata.name", "spec.signerName"],
        rejection: Rejection::NotSupported,
    },
];

/// The field labels upstream accepts in a field selector for a resource (`group`
/// "" for core, `plural` e.g. "pods"). Resources without their own list accept
/// `metadata.name` and `metadata.namespace`.
pub fn supported_fields(group: &str, plural: &str) -> Vec<&'static str> {
    match FIELD_LABELS
        .iter()
        .find(|f| f.group == group && f.plural == plural)
    {
        Some(entry) => entry.labels.to_vec(),
        None => vec!["metadata.name", "metadata.namespace"],
    }
}

/// Upstream's error for a field label the resource does not accept.
fn unsupported_field_message(group: &str, plural: &str, label: &str) -> String {
    let rejection = FIELD_LABELS
        .iter()
        .find(|f| f.group == group && f.plural == plural)
        .map(|f| f.rejection)
        .unwrap_or(if crate::BUILT_IN_GROUPS.contains(&group) {
            Rejection::Default
        } else {
            Rejection::NotSupported
        });
    match rejection {
        Rejection::NotSupported => format!("field label not supported: {label}"),
        Rejection::Job => format!("field label {} not supported for Job", go_quote(label)),
        Rejection::Default => format!(
            "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
            go_quote(label)
        ),
    }
}

/// The value of a field label for an object, as the resource's upstream
/// `ToSelectableFields` computes it; for other resources, the field read by dotted
/// path. Missing fields read "", booleans "true"/"false", numbers as decimal text.
pub fn field_value(object: &Value, label: &str) -> String {
    let (group, kind) = group_and_kind(object);
    field_value_of_kind(group, kind, object, label)
}

/// The API group (from `apiVersion`) and kind of an object, "" when absent.
fn group_and_kind(object: &Value) -> (&str, &str) {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let group = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.rsplit_once('/'))
        .map(|(group, _)| group)
        .unwrap_or("");
    (group, kind)
}

/// [`field_value`] for an object known to be of the given kind (`group` "" for
/// core), whatever its `apiVersion` and `kind` fields say.
pub fn field_value_of_kind(group: &str, kind: &str, object: &Value, label: &str) -> String {
    match (group, kind, label) {
        ("", "Pod", "spec.host") => path_value(object, "spec.nodeName"),
        ("", "Pod", "spec.hostNetwork") | ("", "Node", "spec.unschedulable") => {
            defaulted(path_value(object, label), "false")
        }
        ("", "Pod", "status.podIP") => {
            let first = object
                .pointer("/status/podIPs/0/ip")
                .map(scalar_text)
                .unwrap_or_default();
            if first.is_empty() {
                path_value(object, "status.podIP")
            } else {
                first
            }
        }
        // Accepted upstream but never part of the pod's selectable fields.
        ("", "Pod", "status.podIPs") => String::new(),
        ("", "ReplicationController", "status.replicas") => {
            defaulted(path_value(object, label), "0")
        }
        ("batch", "Job", "status.successful") => {
            defaulted(path_value(object, "status.succeeded"), "0")
        }
        ("" | "events.k8s.io", "Event", _) => event_field_value(object, label),
        _ => path_value(object, label),
    }
}

/// Event fields, for core/v1 and events.k8s.io/v1 objects and labels alike.
fn event_field_value(object: &Value, label: &str) -> String {
    let first_of = |paths: &[&str]| {
        paths
            .iter()
            .map(|p| path_value(object, p))
            .find(|v| !v.is_empty())
            .unwrap_or_default()
    };
    let reporting = || first_of(&["reportingComponent", "reportingController"]);
    if let Some(rest) = label
        .strip_prefix("involvedObject.")
        .or_else(|| label.strip_prefix("regarding."))
    {
        let core = format!("involvedObject.{rest}");
        let events = format!("regarding.{rest}");
        return first_of(&[core.as_str(), events.as_str()]);
    }
    match label {
        "reportingComponent" | "reportingController" => reporting(),
        "source" => {
            let component = first_of(&["source.component", "deprecatedSource.component"]);
            if component.is_empty() {
                reporting()
            } else {
                component
            }
        }
        _ => path_value(object, label),
    }
}

fn defaulted(value: String, default: &str) -> String {
    if value.is_empty() {
        default.to_string()
    } else {
        value
    }
}

/// The text of the value at a dotted path, "" when absent.
fn path_value(object: &Value, path: &str) -> String {
    let mut current = object;
    for segment in path.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    scalar_text(current)
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn matches(selector: &str, l: Value) -> bool {
        let labels = labels(l);
        LabelSelector::parse(selector)
            .unwrap()
            .matches(Some(&labels))
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse("a=1,b==2,c!=3,d in (x,y),e notin (z),f,!g,h>4,i<5").unwrap();
        let ops: Vec<Operator> = s.requirements().iter().map(|r| r.operator()).collect();
        assert_eq!(
            ops,
            vec![
                Operator::Equals,
                Operator::DoubleEquals,
                Operator::NotEquals,
                Operator::In,
                Operator::NotIn,
                Operator::Exists,
                Operator::DoesNotExist,
                Operator::GreaterThan,
                Operator::LessThan,
            ]
        );
        assert_eq!(
            s.to_string(),
            "a=1,b==2,c!=3,d in (x,y),e notin (z),f,!g,h>4,i<5"
        );
    }

    #[test]
    fn whitespace_separates_tokens() {
        let s =
            LabelSelector::parse("  env  =  prod ,  tier in ( web , api ) ,\t!canary ").unwrap();
        assert_eq!(s.to_string(), "!canary,env=prod,tier in (api,web)");
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(LabelSelector::parse("   ").unwrap().is_empty());
    }

    #[test]
    fn upstream_example_with_empty_values() {
        let s = LabelSelector::parse("x in (foo,,baz),y,z notin ()").unwrap();
        assert_eq!(s.requirements()[0].values(), ["", "baz", "foo"]);
        assert_eq!(s.requirements()[2].values(), [""]);
        // `in` and `notin` are plain values inside parentheses and after `=`.
        let s = LabelSelector::parse("a in (in,notin),b=in").unwrap();
        assert_eq!(s.requirements()[0].values(), ["in", "notin"]);
        assert_eq!(s.requirements()[1].values(), ["in"]);
        // `a=` requires the empty value.
        assert_eq!(
            LabelSelector::parse("a=").unwrap().requirements()[0].values(),
            [""]
        );
    }

    #[test]
    fn matching_semantics() {
        assert!(matches("app=web", json!({"app": "web"})));
        assert!(!matches("app=web", json!({})));
        // != and notin match objects without the label.
        assert!(matches("app!=web", json!({})));
        assert!(matches("app!=web", json!({"app": "db"})));
        assert!(!matches("app!=web", json!({"app": "web"})));
        assert!(matches("app notin (web,db)", json!({"other": "x"})));
        assert!(!matches("app notin (web,db)", json!({"app": "db"})));
        assert!(matches("app in (web,db)", json!({"app": "db"})));
        assert!(!matches("app in (web,db)", json!({})));
        assert!(matches("app", json!({"app": ""})));
        assert!(!matches("!app", json!({"app": ""})));
        assert!(matches("!app", json!({})));
        assert!(matches("n>3", json!({"n": "4"})));
        assert!(!matches("n>3", json!({"n": "3"})));
        assert!(!matches("n>3", json!({"n": "four"})));
        assert!(!matches("n<3", json!({})));
        assert!(matches("n<3", json!({"n": "-1"})));
        assert!(matches("a=1,b=2", json!({"a": "1", "b": "2", "c": "3"})));
        assert!(!matches("a=1,b=2", json!({"a": "1"})));
        // Absent metadata.labels.
        let s = LabelSelector::parse("a!=1,!b").unwrap();
        assert!(s.matches(None));
        assert!(!LabelSelector::parse("a").unwrap().matches(None));
    }

    #[test]
    fn parse_errors_read_like_upstream() {
        let err = |s: &str| LabelSelector::parse(s).unwrap_err();
        assert_eq!(
            err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            err(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(
            err("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            err("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            err("a>b"),
            "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert_eq!(
            err("a=!b"),
            "unable to parse requirement: found '!', expected: identifier"
        );
        assert!(err("Foo_=bar").starts_with(
            "unable to parse requirement: <nil>: Invalid value: \"Foo_\": name part must consist of alphanumeric characters"
        ));
        assert!(err("a=-b").starts_with(
            "unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be an empty string"
        ));
        assert!(err("a/b/c").contains("a qualified name must consist of"));
    }

    #[test]
    fn from_json_label_selector() {
        let s = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert!(s.matches(Some(&labels(json!({"app": "web", "tier": "fe"})))));
        assert!(!s.matches(Some(&labels(
            json!({"app": "web", "tier": "fe", "canary": "1"})
        ))));
        assert!(!s.matches(Some(&labels(json!({"app": "web"})))));
        assert_eq!(s.to_string(), "app=web,!canary,tier in (be,fe)");

        let everything = LabelSelector::from_json(&json!({})).unwrap();
        assert!(everything.is_empty());
        assert!(everything.matches(None));
        let nothing = LabelSelector::from_json(&Value::Null).unwrap();
        assert!(!nothing.is_empty());
        assert!(!nothing.matches(Some(&labels(json!({"a": "b"})))));
    }

    #[test]
    fn from_json_errors() {
        let err = |v: Value| LabelSelector::from_json(&v).unwrap_err();
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Equals"}]})),
            "\"Equals\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})),
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})),
            "values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist"
        );
        assert!(
            err(json!({"matchLabels": {"a b": "c"}})).starts_with("key: Invalid value: \"a b\"")
        );
        assert!(err(json!("app=web")).contains("must be an object"));
    }

    #[test]
    fn label_required_value_and_from_labels() {
        let s = LabelSelector::parse("a=1,b in (2),c in (3,4),d!=5").unwrap();
        assert_eq!(s.required_value("a"), Some("1"));
        assert_eq!(s.required_value("b"), Some("2"));
        assert_eq!(s.required_value("c"), None);
        assert_eq!(s.required_value("d"), None);
        assert_eq!(s.required_value("e"), None);

        let s = LabelSelector::from_labels(&labels(json!({"b": "2", "a": "1"})));
        assert_eq!(s.to_string(), "a=1,b=2");
        assert!(LabelSelector::from_labels(&Map::new()).is_empty());
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node-a", "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.7"}], "podIP": "10.0.0.7"}
        })
    }

    #[test]
    fn field_selector_parse_and_match() {
        let s = FieldSelector::parse("metadata.name=web-1,status.phase!=Pending").unwrap();
        assert!(s.matches(&pod()));
        assert_eq!(s.required_value("metadata.name"), Some("web-1"));
        assert_eq!(s.required_value("status.phase"), None);
        assert!(
            FieldSelector::parse("spec.nodeName==node-a")
                .unwrap()
                .matches(&pod())
        );
        assert!(
            !FieldSelector::parse("spec.nodeName=node-b")
                .unwrap()
                .matches(&pod())
        );
        // A missing field reads "".
        assert!(
            FieldSelector::parse("spec.schedulerName=")
                .unwrap()
                .matches(&pod())
        );
        assert!(
            FieldSelector::parse("spec.schedulerName!=x")
                .unwrap()
                .matches(&pod())
        );
        // Pod specifics: hostNetwork defaults to false, spec.host aliases nodeName.
        assert!(
            FieldSelector::parse("spec.hostNetwork=false")
                .unwrap()
                .matches(&pod())
        );
        assert!(
            FieldSelector::parse("spec.host=node-a")
                .unwrap()
                .matches(&pod())
        );
        assert!(
            FieldSelector::parse("status.podIP=10.0.0.7")
                .unwrap()
                .matches(&pod())
        );
        let empty = FieldSelector::parse("").unwrap();
        assert!(empty.is_empty());
        assert!(empty.matches(&pod()));
        assert!(FieldSelector::parse(",,").unwrap().is_empty());
    }

    #[test]
    fn field_values_of_scalars() {
        let object = json!({"kind": "Widget", "spec": {"on": true, "n": 3, "list": [1]}});
        assert_eq!(field_value(&object, "spec.on"), "true");
        assert_eq!(field_value(&object, "spec.n"), "3");
        assert_eq!(field_value(&object, "spec.list"), "");
        assert_eq!(field_value(&object, "spec.missing.deeper"), "");
        let node =
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "spec": {}});
        assert!(
            FieldSelector::parse("spec.unschedulable=false")
                .unwrap()
                .matches(&node)
        );
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"succeeded": 2}});
        assert_eq!(field_value(&job, "status.successful"), "2");
        let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "status": {}});
        assert_eq!(field_value(&rc, "status.replicas"), "0");
    }

    #[test]
    fn event_fields_in_both_shapes() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "involvedObject": {"kind": "Pod", "name": "web-1"},
            "reason": "Started", "type": "Normal",
            "reportingComponent": "kubelet"
        });
        let events = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "regarding": {"kind": "Pod", "name": "web-1"},
            "reason": "Started", "type": "Normal",
            "reportingController": "kubelet"
        });
        for object in [&core, &events] {
            for selector in [
                "involvedObject.kind=Pod,involvedObject.name=web-1",
                "regarding.kind=Pod,regarding.name=web-1",
                "reason=Started,type=Normal",
                "reportingComponent=kubelet",
                "reportingController=kubelet",
                "source=kubelet",
            ] {
                assert!(
                    FieldSelector::parse(selector).unwrap().matches(object),
                    "{selector}"
                );
            }
        }
    }

    #[test]
    fn field_selector_escaping() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d,type=x").unwrap();
        assert_eq!(s.terms()[0].value, r"a,b=c\d");
        assert_eq!(s.terms()[1].value, "x");
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d,type=x");
        assert_eq!(escape_value("a,b"), r"a\,b");
    }

    #[test]
    fn field_selector_parse_errors() {
        let err = |s: &str| FieldSelector::parse(s).unwrap_err();
        assert_eq!(
            err("abc"),
            "invalid selector: 'abc'; can't understand 'abc'"
        );
        assert_eq!(
            err("a=b,c"),
            "invalid selector: 'a=b,c'; can't understand 'c'"
        );
        assert_eq!(
            err("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            err(r"a=b\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            err(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
    }

    #[test]
    fn supported_fields_per_resource() {
        assert!(supported_fields("", "pods").contains(&"spec.nodeName"));
        assert!(supported_fields("", "pods").contains(&"status.podIPs"));
        assert_eq!(
            supported_fields("", "nodes"),
            ["metadata.name", "spec.unschedulable"]
        );
        assert_eq!(
            supported_fields("apps", "deployments"),
            ["metadata.name", "metadata.namespace"]
        );
        assert!(supported_fields("events.k8s.io", "events").contains(&"regarding.name"));
        assert!(
            supported_fields("certificates.k8s.io", "certificatesigningrequests")
                .contains(&"spec.signerName")
        );
    }

    #[test]
    fn validate_for_words_rejections_like_upstream() {
        let check = |s: &str, group: &str, plural: &str| {
            FieldSelector::parse(s).unwrap().validate_for(group, plural)
        };
        assert!(check("spec.nodeName=a,status.phase=Running", "", "pods").is_ok());
        assert_eq!(
            check("status.hostIP=1.2.3.4", "", "pods").unwrap_err(),
            "field label not supported: status.hostIP"
        );
        assert_eq!(
            check("metadata.namespace=x", "", "nodes").unwrap_err(),
            "field label not supported: metadata.namespace"
        );
        assert_eq!(
            check("status.replicas=1", "apps", "replicasets").unwrap_err(),
            "\"status.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        assert_eq!(
            check("status.active=1", "batch", "jobs").unwrap_err(),
            "field label \"status.active\" not supported for Job"
        );
        assert!(check("status.successful=1", "batch", "jobs").is_ok());
        assert_eq!(
            check("spec.size=1", "example.com", "widgets").unwrap_err(),
            "field label not supported: spec.size"
        );
        assert!(check("metadata.name=x", "example.com", "widgets").is_ok());
    }
}
