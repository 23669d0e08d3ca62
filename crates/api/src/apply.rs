//! Server-side apply and `metadata.managedFields`, as pure functions over JSON
//! objects.
//!
//! Upstream keeps track of which client ("manager") set which field of an object
//! (`sigs.k8s.io/structured-merge-diff` and the API server's field manager). This
//! module does the same over [`serde_json::Value`]:
//!
//! - [`FieldSet`] is a set of field paths, written to and read from the `FieldsV1`
//!   JSON form that `managedFields[].fieldsV1` holds: `f:<field>`, `k:{"name":"web"}`
//!   (an element of an associative list, by its key), `v:"a"` (an element of a set),
//!   `i:0` (an element by index) and `.` (the node itself is a member as well as
//!   the parent of further paths).
//! - [`update_managed_fields`] records an ordinary write (create, update, patch):
//!   the fields it changed move to the writer's `Update` entry.
//! - [`server_side_apply`] merges an applied configuration into the live object,
//!   reports conflicts with other managers ([`ApplyConflicts`], HTTP 409) unless
//!   forced, removes fields the applier stopped applying, and makes the applier's
//!   `Apply` entry exactly the applied field set.
//!
//! Lists follow the same type knowledge as the strategic merge patch
//! ([`crate::patch::list_strategy`]): a list whose Go type has a patch merge key
//! (containers by `name`, ports by `containerPort`, ...) is an associative list
//! keyed by it, a primitive list tagged `merge` (finalizers) is a set, and every
//! other list is atomic: one field, replaced whole. A list whose elements do not
//! fit its type (a missing or duplicate key) is treated as atomic. Objects are
//! walked field by field, except label selectors (`selector`, `*Selector` holding
//! `matchLabels`/`matchExpressions`), which upstream marks atomic.
//!
//! Fields the server sets are never tracked, as upstream strips them: `apiVersion`,
//! `kind`, and `metadata.{name, namespace, uid, resourceVersion, generation,
//! creationTimestamp, selfLink, clusterName, managedFields}`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use crate::BUILT_IN_GROUPS;
use crate::Cause;
use crate::patch::{ListStrategy, list_strategy};
use crate::resources::split_api_version;

/// `managedFields[].operation` of a server-side apply.
pub const OPERATION_APPLY: &str = "Apply";
/// `managedFields[].operation` of a create, update or patch.
pub const OPERATION_UPDATE: &str = "Update";
/// The manager that is given every field of an object that has no managed fields
/// when it is first applied to (upstream's name).
pub const BEFORE_FIRST_APPLY_MANAGER: &str = "before-first-apply";
/// The cause type of each field in an apply conflict's Status.
pub const CONFLICT_CAUSE_TYPE: &str = "FieldManagerConflict";

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// One step of a field path.
#[derive(Clone, Debug)]
pub enum PathElement {
    /// `f:<name>`: a field of an object.
    Field(String),
    /// `k:{...}`: the element of an associative list whose key fields have these
    /// values (sorted by field name).
    Key(Vec<(String, Value)>),
    /// `v:<json>`: the element of a set (a list of scalars) with this value.
    Value(Value),
    /// `i:<n>`: the element of a list at this position.
    Index(usize),
}

/// A path from the root of an object, e.g. `.spec.template.spec.containers[name="web"]`.
pub type Path = Vec<PathElement>;

impl PathElement {
    /// The element's position among the kinds, as upstream orders them: fields
    /// first, then keys, values and indices.
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The element as a `FieldsV1` key: `f:replicas`, `k:{"name":"web"}`, `v:"a"`, `i:0`.
    pub fn to_fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| {
                        format!(
                            "{}:{}",
                            go_json(&json_string(name)),
                            go_json(&value.to_string())
                        )
                    })
                    .collect();
                format!("k:{{{}}}", body.join(","))
            }
            PathElement::Value(value) => format!("v:{}", go_json(&value.to_string())),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    /// Parses a `FieldsV1` key. `Ok(None)` for a key of an unknown kind, which
    /// upstream skips (a later version may know it).
    pub fn from_fields_v1_key(key: &str) -> Result<Option<PathElement>, String> {
        let Some((kind, body)) = key.split_once(':').filter(|(kind, _)| kind.len() == 1) else {
            return Err(format!("missing colon: {key}"));
        };
        let element = match kind {
            "f" => PathElement::Field(body.to_string()),
            "v" => PathElement::Value(
                serde_json::from_str(body).map_err(|err| format!("parsing {key}: {err}"))?,
            ),
            "k" => {
                let fields: Map<String, Value> =
                    serde_json::from_str(body).map_err(|err| format!("parsing {key}: {err}"))?;
                let mut fields: Vec<(String, Value)> = fields.into_iter().collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                PathElement::Key(fields)
            }
            "i" => PathElement::Index(
                body.parse()
                    .map_err(|err| format!("parsing {key}: {err}"))?,
            ),
            _ => return Ok(None),
        };
        Ok(Some(element))
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => {
                for ((a_name, a_value), (b_name, b_value)) in a.iter().zip(b) {
                    let order = a_name
                        .cmp(b_name)
                        .then_with(|| compare_values(a_value, b_value));
                    if order != Ordering::Equal {
                        return order;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PathElement::Value(a), PathElement::Value(b)) => compare_values(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

/// Upstream's human form: `.spec`, `[name="web"]`, `[="a"]`, `[0]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{name}={}", display_value(value)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(value) => write!(f, "[={}]", display_value(value)),
            PathElement::Index(index) => write!(f, "[{index}]"),
        }
    }
}

/// A path as upstream prints it in conflicts:
/// `.spec.template.spec.containers[name="web"].image`.
pub fn path_to_string(path: &[PathElement]) -> String {
    path.iter().map(PathElement::to_string).collect()
}

/// A value inside a printed path element (Go's `%q` for strings, `%v` otherwise).
fn display_value(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{key}={}", display_value(value)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(display_value).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

fn json_string(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

/// Escapes JSON text the way Go's encoder does (`<`, `>`, `&`, U+2028 and U+2029
/// as `\uXXXX`); these characters only occur inside strings, so the replacement
/// is safe on whole JSON documents.
fn go_json(json: &str) -> String {
    if !json.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return json.to_string();
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// A total order on JSON values, upstream's: numbers, strings, booleans, lists,
/// objects, null.
fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(value: &Value) -> u8 {
        match value {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => {
                let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                a.partial_cmp(&b).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Array(a), Value::Array(b)) => {
            for (a, b) in a.iter().zip(b) {
                let order = compare_values(a, b);
                if order != Ordering::Equal {
                    return order;
                }
            }
            a.len().cmp(&b.len())
        }
        (Value::Object(a), Value::Object(b)) => {
            let mut a: Vec<_> = a.iter().collect();
            let mut b: Vec<_> = b.iter().collect();
            a.sort_by(|x, y| x.0.cmp(y.0));
            b.sort_by(|x, y| x.0.cmp(y.0));
            for ((a_key, a_value), (b_key, b_value)) in a.iter().zip(&b) {
                let order = a_key
                    .cmp(b_key)
                    .then_with(|| compare_values(a_value, b_value));
                if order != Ordering::Equal {
                    return order;
                }
            }
            a.len().cmp(&b.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

// ---------------------------------------------------------------------------
// Field sets
// ---------------------------------------------------------------------------

/// A set of field paths, stored as a tree: `members` are the paths that end at
/// this node, `children` the subtrees below it (never empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        FieldSet::default()
    }

    /// Whether the set has no paths.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// The number of paths in the set.
    pub fn len(&self) -> usize {
        self.members.len() + self.children.values().map(FieldSet::len).sum::<usize>()
    }

    /// Adds a path (the empty path is not a member of anything and is ignored).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Removes a path (not the paths below it); returns whether it was there.
    pub fn remove(&mut self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.remove(last),
            [first, rest @ ..] => {
                let Some(child) = self.children.get_mut(first) else {
                    return false;
                };
                let removed = child.remove(rest);
                if child.is_empty() {
                    self.children.remove(first);
                }
                removed
            }
        }
    }

    /// Whether the path is in the set.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self
                .children
                .get(first)
                .is_some_and(|child| child.contains(rest)),
        }
    }

    /// The paths below `path` (relative to it), if there are any.
    pub fn child(&self, path: &[PathElement]) -> Option<&FieldSet> {
        match path {
            [] => Some(self),
            [first, rest @ ..] => self.children.get(first)?.child(rest),
        }
    }

    /// Adds every path of `other`.
    pub fn union_with(&mut self, other: &FieldSet) {
        self.members.extend(other.members.iter().cloned());
        for (element, child) in &other.children {
            self.children
                .entry(element.clone())
                .or_default()
                .union_with(child);
        }
    }

    /// The paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    /// The paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(element, child)| {
                let common = child.intersection(other.children.get(element)?);
                (!common.is_empty()).then(|| (element.clone(), common))
            })
            .collect();
        FieldSet { members, children }
    }

    /// The paths in `self` that are not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(element, child)| {
                let rest = match other.children.get(element) {
                    Some(other_child) => child.difference(other_child),
                    None => child.clone(),
                };
                (!rest.is_empty()).then(|| (element.clone(), rest))
            })
            .collect();
        FieldSet { members, children }
    }

    /// Every path, in upstream's order: a node's members, then its children's
    /// paths child by child.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for member in &self.members {
            let mut path = prefix.clone();
            path.push(member.clone());
            out.push(path);
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The set in the `FieldsV1` form: one JSON object per node, keys in
    /// upstream's order, `{}` for a member without children and `"."` (written
    /// last) for a node that is both a member and a parent.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.fields_v1_contents(false))
    }

    fn fields_v1_contents(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        let mut members = self.members.iter().peekable();
        let mut children = self.children.iter().peekable();
        loop {
            let order = match (members.peek(), children.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(member), Some((element, _))) => (*member).cmp(element),
            };
            match order {
                Ordering::Less => {
                    let member = members.next().expect("peeked");
                    out.insert(member.to_fields_v1_key(), Value::Object(Map::new()));
                }
                Ordering::Greater => {
                    let (element, child) = children.next().expect("peeked");
                    out.insert(
                        element.to_fields_v1_key(),
                        Value::Object(child.fields_v1_contents(false)),
                    );
                }
                Ordering::Equal => {
                    members.next();
                    let (element, child) = children.next().expect("peeked");
                    out.insert(
                        element.to_fields_v1_key(),
                        Value::Object(child.fields_v1_contents(true)),
                    );
                }
            }
        }
        if include_self && !out.is_empty() {
            out.insert(".".to_string(), Value::Object(Map::new()));
        }
        out
    }

    /// Reads the `FieldsV1` form. Keys of unknown kinds are skipped, as upstream
    /// does; anything else malformed is an error.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = value else {
            return Err("fieldsV1 must be a JSON object".to_string());
        };
        Ok(Self::read_fields_v1(map)?.0)
    }

    /// Reads one node: the set below it, and whether the node itself is a member
    /// (it says `"."`, or has nothing below it).
    fn read_fields_v1(map: &Map<String, Value>) -> Result<(FieldSet, bool), String> {
        let mut set = FieldSet::new();
        let mut is_member = false;
        for (key, value) in map {
            if key == "." {
                is_member = true;
                continue;
            }
            let Some(element) = PathElement::from_fields_v1_key(key)? else {
                continue;
            };
            let Value::Object(inner) = value else {
                return Err(format!("the value of {key} must be a JSON object"));
            };
            let (below, child_is_member) = Self::read_fields_v1(inner)?;
            if child_is_member {
                set.members.insert(element.clone());
            }
            if !below.is_empty() {
                set.children.entry(element).or_default().union_with(&below);
            }
        }
        if set.is_empty() {
            is_member = true;
        }
        Ok((set, is_member))
    }

    /// The fields an object (an applied configuration) sets, as upstream's
    /// `ToFieldSet`: every scalar, atomic list, atomic or empty object and null;
    /// every element of an associative list or set; objects with fields are
    /// represented by their fields only. Server-set metadata is not stripped.
    pub fn from_object(object: &Value, group: &str, kind: &str) -> FieldSet {
        let mut set = FieldSet::new();
        if let Value::Object(map) = object {
            Walker::new(Schema { group, kind }).collect_fields(map, &mut set);
        }
        set
    }
}

// ---------------------------------------------------------------------------
// The type knowledge
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Schema<'a> {
    group: &'a str,
    kind: &'a str,
}

/// How a list's elements are identified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListType {
    /// One field, replaced whole.
    Atomic,
    /// Scalars, each a field of its own (`v:`).
    Set,
    /// Objects, each identified by this key field (`k:`).
    Map(&'static str),
}

impl Schema<'_> {
    /// The declared type of the list at `names` (field names from the root,
    /// list elements skipped).
    fn declared_list_type(&self, names: &[String]) -> ListType {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        // ObjectMeta is the same for every kind, custom resources included.
        match names.as_slice() {
            ["metadata", "finalizers"] => return ListType::Set,
            ["metadata", "ownerReferences"] => return ListType::Map("uid"),
            _ => {}
        }
        match list_strategy(self.group, self.kind, &names) {
            ListStrategy::Replace => ListType::Atomic,
            ListStrategy::Merge => ListType::Set,
            ListStrategy::MergeOnKey(key) => ListType::Map(key),
        }
    }
}

/// The path element of a list item, if it fits the list type.
fn item_element(list_type: ListType, item: &Value) -> Option<PathElement> {
    match list_type {
        ListType::Atomic => None,
        ListType::Set => {
            (!item.is_object() && !item.is_array()).then(|| PathElement::Value(item.clone()))
        }
        ListType::Map(key) => {
            let value = item.as_object()?.get(key)?;
            matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
                .then(|| PathElement::Key(vec![(key.to_string(), value.clone())]))
        }
    }
}

/// The path elements of a list's items, if every item fits the type and no two
/// are the same element.
fn item_elements(list_type: ListType, items: &[Value]) -> Option<Vec<PathElement>> {
    let elements: Vec<PathElement> = items
        .iter()
        .map(|item| item_element(list_type, item))
        .collect::<Option<_>>()?;
    let distinct: BTreeSet<&PathElement> = elements.iter().collect();
    (distinct.len() == elements.len()).then_some(elements)
}

/// Whether an object is a label selector, which upstream treats as one field.
fn is_label_selector(name: Option<&String>, value: Option<&Value>) -> bool {
    if !name.is_some_and(|name| name == "selector" || name.ends_with("Selector")) {
        return false;
    }
    value.and_then(Value::as_object).is_some_and(|map| {
        !map.is_empty()
            && map
                .keys()
                .all(|key| key == "matchLabels" || key == "matchExpressions")
    })
}

// ---------------------------------------------------------------------------
// Walking objects: field sets, comparisons, merges
// ---------------------------------------------------------------------------

/// What changed between two objects (upstream's `Comparison`): leaves and
/// whole nodes that appeared or disappeared, and leaves whose value changed.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Comparison {
    /// The fields a write sets: modified and added.
    fn changed(&self) -> FieldSet {
        self.modified.union(&self.added)
    }
}

/// A walk through an object that knows where it is: the field names from the
/// root (for the type lookups) and the path (for the sets).
struct Walker<'a> {
    schema: Schema<'a>,
    names: Vec<String>,
    path: Path,
}

impl<'a> Walker<'a> {
    fn new(schema: Schema<'a>) -> Self {
        Walker {
            schema,
            names: Vec::new(),
            path: Vec::new(),
        }
    }

    fn enter_field(&mut self, name: &str) {
        self.names.push(name.to_string());
        self.path.push(PathElement::Field(name.to_string()));
    }

    fn leave_field(&mut self) {
        self.names.pop();
        self.path.pop();
    }

    /// The type of the list here, given its values on each side present.
    fn list_type(&self, sides: &[Option<&[Value]>]) -> ListType {
        let declared = self.schema.declared_list_type(&self.names);
        let fits = sides
            .iter()
            .flatten()
            .all(|items| item_elements(declared, items).is_some());
        if fits { declared } else { ListType::Atomic }
    }

    /// Whether the object here is atomic, given its values on each side.
    fn atomic_object(&self, sides: &[Option<&Value>]) -> bool {
        sides
            .iter()
            .any(|side| is_label_selector(self.names.last(), *side))
    }

    // --- field sets ---

    fn collect_fields(&mut self, map: &Map<String, Value>, set: &mut FieldSet) {
        for (name, value) in map {
            self.enter_field(name);
            self.collect_value(value, set);
            self.leave_field();
        }
    }

    fn collect_value(&mut self, value: &Value, set: &mut FieldSet) {
        match value {
            Value::Object(map) if !map.is_empty() && !self.atomic_object(&[Some(value)]) => {
                self.collect_fields(map, set)
            }
            Value::Array(items) => match self.list_type(&[Some(items.as_slice())]) {
                ListType::Atomic => set.insert(&self.path),
                list_type => {
                    for item in items {
                        let element = item_element(list_type, item).expect("checked by list_type");
                        self.path.push(element);
                        set.insert(&self.path);
                        if let Value::Object(map) = item {
                            self.collect_fields(map, set);
                        }
                        self.path.pop();
                    }
                }
            },
            _ => set.insert(&self.path),
        }
    }

    // --- comparisons ---

    fn compare_fields(
        &mut self,
        old: Option<&Map<String, Value>>,
        new: Option<&Map<String, Value>>,
        out: &mut Comparison,
    ) {
        for (name, old_value) in old.into_iter().flatten() {
            self.enter_field(name);
            self.compare_node(Some(old_value), new.and_then(|new| new.get(name)), out);
            self.leave_field();
        }
        for (name, new_value) in new.into_iter().flatten() {
            if old.is_some_and(|old| old.contains_key(name)) {
                continue;
            }
            self.enter_field(name);
            self.compare_node(None, Some(new_value), out);
            self.leave_field();
        }
    }

    fn compare_node(&mut self, old: Option<&Value>, new: Option<&Value>, out: &mut Comparison) {
        match (old, new) {
            (None, None) => {}
            (None | Some(Value::Object(_)), None | Some(Value::Object(_))) => {
                let old_map = old.and_then(Value::as_object);
                let new_map = new.and_then(Value::as_object);
                let empty = old_map.is_none_or(Map::is_empty) && new_map.is_none_or(Map::is_empty);
                if empty || self.atomic_object(&[old, new]) {
                    self.compare_leaf(old, new, out);
                } else {
                    self.compare_fields(old_map, new_map, out);
                    self.mark_node(old, new, out);
                }
            }
            (None | Some(Value::Array(_)), None | Some(Value::Array(_))) => {
                let old_items = old.and_then(Value::as_array);
                let new_items = new.and_then(Value::as_array);
                let empty =
                    old_items.is_none_or(Vec::is_empty) && new_items.is_none_or(Vec::is_empty);
                match self.list_type(&[old_items.map(Vec::as_slice), new_items.map(Vec::as_slice)])
                {
                    ListType::Atomic => self.compare_leaf(old, new, out),
                    _ if empty => self.compare_leaf(old, new, out),
                    list_type => {
                        self.compare_items(list_type, old_items, new_items, out);
                        self.mark_node(old, new, out);
                    }
                }
            }
            (Some(old_value), Some(new_value))
                if old_value.is_object()
                    || old_value.is_array()
                    || new_value.is_object()
                    || new_value.is_array() =>
            {
                // The value changed kind: everything below the old one is gone,
                // everything below the new one is new, and the field itself changed.
                let mut gone = Comparison::default();
                self.compare_node(Some(old_value), None, &mut gone);
                let mut came = Comparison::default();
                self.compare_node(None, Some(new_value), &mut came);
                gone.removed.remove(&self.path);
                came.added.remove(&self.path);
                out.removed.union_with(&gone.removed);
                out.added.union_with(&came.added);
                out.modified.insert(&self.path);
            }
            _ => self.compare_leaf(old, new, out),
        }
    }

    fn compare_items(
        &mut self,
        list_type: ListType,
        old: Option<&Vec<Value>>,
        new: Option<&Vec<Value>>,
        out: &mut Comparison,
    ) {
        let index = |items: Option<&'_ Vec<Value>>| -> Vec<(PathElement, Value)> {
            let Some(items) = items else {
                return Vec::new();
            };
            let elements = item_elements(list_type, items).expect("checked by list_type");
            elements.into_iter().zip(items.iter().cloned()).collect()
        };
        let old_items = index(old);
        let new_items = index(new);
        let old_lookup: BTreeMap<&PathElement, &Value> =
            old_items.iter().map(|(e, v)| (e, v)).collect();
        let new_lookup: BTreeMap<&PathElement, &Value> =
            new_items.iter().map(|(e, v)| (e, v)).collect();
        for (element, old_item) in &old_items {
            self.path.push(element.clone());
            self.compare_node(Some(old_item), new_lookup.get(element).copied(), out);
            self.path.pop();
        }
        for (element, new_item) in &new_items {
            if old_lookup.contains_key(element) {
                continue;
            }
            self.path.push(element.clone());
            self.compare_node(None, Some(new_item), out);
            self.path.pop();
        }
    }

    /// A node with children of its own is added or removed as a whole too.
    fn mark_node(&self, old: Option<&Value>, new: Option<&Value>, out: &mut Comparison) {
        if old.is_none() {
            out.added.insert(&self.path);
        } else if new.is_none() {
            out.removed.insert(&self.path);
        }
    }

    fn compare_leaf(&self, old: Option<&Value>, new: Option<&Value>, out: &mut Comparison) {
        match (old, new) {
            (None, Some(_)) => out.added.insert(&self.path),
            (Some(_), None) => out.removed.insert(&self.path),
            (Some(old), Some(new)) if old != new => out.modified.insert(&self.path),
            _ => {}
        }
    }

    // --- merging an applied configuration ---

    /// The live value with the configuration merged in: objects field by field,
    /// associative lists and sets element by element, everything else replaced.
    /// A `null` in the configuration removes the field.
    fn merge_value(&mut self, live: Option<&Value>, config: &Value) -> Value {
        match config {
            Value::Object(config_map) if !self.atomic_object(&[live, Some(config)]) => {
                Value::Object(self.merge_fields(live.and_then(Value::as_object), config_map))
            }
            Value::Array(config_items) => {
                self.merge_list(live.and_then(Value::as_array), config_items)
            }
            other => without_nulls(other),
        }
    }

    fn merge_fields(
        &mut self,
        live: Option<&Map<String, Value>>,
        config: &Map<String, Value>,
    ) -> Map<String, Value> {
        let mut out = live.cloned().unwrap_or_default();
        for (name, config_value) in config {
            if config_value.is_null() {
                out.shift_remove(name);
                continue;
            }
            self.enter_field(name);
            let merged = self.merge_value(live.and_then(|live| live.get(name)), config_value);
            self.leave_field();
            out.insert(name.clone(), merged);
        }
        out
    }

    fn merge_list(&mut self, live: Option<&Vec<Value>>, config: &[Value]) -> Value {
        let list_type = self.list_type(&[live.map(Vec::as_slice), Some(config)]);
        let live = match (list_type, live) {
            (ListType::Atomic, _) | (_, None) => {
                let items = config
                    .iter()
                    .map(|item| self.merge_item(list_type, None, item))
                    .collect();
                return Value::Array(items);
            }
            (_, Some(live)) => live,
        };
        let live_keys = item_elements(list_type, live).expect("checked by list_type");
        let config_keys = item_elements(list_type, config).expect("checked by list_type");
        let live_lookup: BTreeMap<&PathElement, usize> = live_keys
            .iter()
            .enumerate()
            .map(|(index, key)| (key, index))
            .collect();
        let config_lookup: BTreeMap<&PathElement, usize> = config_keys
            .iter()
            .enumerate()
            .map(|(index, key)| (key, index))
            .collect();
        // The elements on both sides, in the configuration's order: each is
        // written where the configuration puts it, live-only elements stay
        // where they were relative to them.
        let shared: Vec<&PathElement> = config_keys
            .iter()
            .filter(|key| live_lookup.contains_key(key))
            .collect();
        let mut next_shared = 0;
        let (mut live_index, mut config_index) = (0, 0);
        let mut out = Vec::with_capacity(live.len().max(config.len()));
        while live_index < live.len() || config_index < config.len() {
            if live_index < live.len() {
                let key = &live_keys[live_index];
                if !config_lookup.contains_key(key) {
                    out.push(live[live_index].clone());
                    live_index += 1;
                    continue;
                }
                if config_index < config.len() && config_keys[config_index] == *key {
                    out.push(self.merge_item(
                        list_type,
                        Some(&live[live_index]),
                        &config[config_index],
                    ));
                    live_index += 1;
                    config_index += 1;
                    next_shared += 1;
                    continue;
                }
                if config_index >= config.len() || shared.get(next_shared) != Some(&key) {
                    // Written (or to be written) at the configuration's position.
                    live_index += 1;
                    continue;
                }
            }
            let key = &config_keys[config_index];
            let live_item = live_lookup.get(key).map(|&index| &live[index]);
            out.push(self.merge_item(list_type, live_item, &config[config_index]));
            if shared.get(next_shared) == Some(&key) {
                next_shared += 1;
            }
            config_index += 1;
        }
        Value::Array(out)
    }

    fn merge_item(&mut self, list_type: ListType, live: Option<&Value>, config: &Value) -> Value {
        match list_type {
            ListType::Map(_) => self.merge_value(live, config),
            ListType::Atomic | ListType::Set => without_nulls(config),
        }
    }
}

/// A copy of a value without the null fields of its objects (an applied `null`
/// means "unset").
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| (key.clone(), without_nulls(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// What changed from `old` to `new` (both whole objects).
fn compare_objects(schema: Schema<'_>, old: &Value, new: &Value) -> Comparison {
    let mut out = Comparison::default();
    Walker::new(schema).compare_fields(old.as_object(), new.as_object(), &mut out);
    out
}

/// The plain (non-pointer) struct fields of a built-in object, empty: what
/// upstream's comparison always sees on the old side, because a typed object has
/// them even when empty. Creating a Deployment therefore does not "add" `spec`,
/// `spec.template` or `spec.template.spec.containers`, while it does add maps
/// (`labels`) and pointer structs (`rollingUpdate`), which become members (`.`)
/// of the writer's set. Custom resources have none.
fn plain_structs(object: &Value, group: &str) -> Value {
    fn is_plain_struct(names: &[&str]) -> bool {
        match names {
            [] => true,
            ["metadata" | "spec" | "status" | "template"] => true,
            [_] => false,
            [.., parent, last] => {
                let plain = matches!(
                    (*parent, *last),
                    (
                        "spec",
                        "template" | "jobTemplate" | "strategy" | "updateStrategy"
                    ) | ("template" | "jobTemplate", "metadata" | "spec")
                );
                plain && is_plain_struct(&names[..names.len() - 1])
            }
        }
    }
    fn copy<'v>(map: &'v Map<String, Value>, names: &mut Vec<&'v str>) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, value) in map {
            match value {
                Value::Object(child) => {
                    names.push(name);
                    if is_plain_struct(names) {
                        out.insert(name.clone(), Value::Object(copy(child, names)));
                    }
                    names.pop();
                }
                // A pod spec's containers are never omitted.
                Value::Array(_) if name == "containers" && names.last() == Some(&"spec") => {
                    out.insert(name.clone(), Value::Array(Vec::new()));
                }
                _ => {}
            }
        }
        out
    }
    match object {
        Value::Object(map) if BUILT_IN_GROUPS.contains(&group) => {
            Value::Object(copy(map, &mut Vec::new()))
        }
        _ => Value::Object(Map::new()),
    }
}

/// Adds to `target` what `baseline` has and it lacks.
fn add_missing(target: &mut Value, baseline: &Value) {
    let (Value::Object(target), Value::Object(baseline)) = (target, baseline) else {
        return;
    };
    for (name, value) in baseline {
        match target.get_mut(name) {
            Some(existing) => add_missing(existing, value),
            None => {
                target.insert(name.clone(), value.clone());
            }
        }
    }
}

/// Fields the server sets, which no manager owns (upstream's `stripMetaManager`).
fn strip_server_fields(set: &mut FieldSet) {
    let field = |name: &str| PathElement::Field(name.to_string());
    for name in ["apiVersion", "kind", "metadata"] {
        set.remove(&[field(name)]);
    }
    for name in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.remove(&[field("metadata"), field(name)]);
    }
}

// ---------------------------------------------------------------------------
// Removing fields
// ---------------------------------------------------------------------------

enum Removal {
    NotFound,
    /// Removed; whether the container it was removed from is now empty.
    Removed {
        now_empty: bool,
    },
}

/// Whether a list item is the element `element` names.
fn item_matches(element: &PathElement, index: usize, item: &Value) -> bool {
    match element {
        PathElement::Key(fields) => item.as_object().is_some_and(|map| {
            fields.iter().all(|(name, value)| {
                map.get(name)
                    .is_some_and(|item_value| compare_values(item_value, value) == Ordering::Equal)
            })
        }),
        PathElement::Value(value) => compare_values(item, value) == Ordering::Equal,
        PathElement::Index(position) => *position == index,
        PathElement::Field(_) => false,
    }
}

/// Removes the node at `path`; objects and lists it leaves empty go too (upstream
/// turns them into nulls, which the typed object drops).
fn remove_path(node: &mut Value, path: &[PathElement]) -> Removal {
    let Some((first, rest)) = path.split_first() else {
        return Removal::NotFound;
    };
    match node {
        Value::Object(map) => {
            let PathElement::Field(name) = first else {
                return Removal::NotFound;
            };
            let Some(child) = map.get_mut(name) else {
                return Removal::NotFound;
            };
            if !rest.is_empty() {
                match remove_path(child, rest) {
                    Removal::NotFound => return Removal::NotFound,
                    Removal::Removed { now_empty: false } => {
                        return Removal::Removed { now_empty: false };
                    }
                    Removal::Removed { now_empty: true } => {}
                }
            }
            map.shift_remove(name);
            Removal::Removed {
                now_empty: map.is_empty(),
            }
        }
        Value::Array(items) => {
            let Some(index) = items
                .iter()
                .enumerate()
                .position(|(index, item)| item_matches(first, index, item))
            else {
                return Removal::NotFound;
            };
            if !rest.is_empty() {
                match remove_path(&mut items[index], rest) {
                    Removal::NotFound => return Removal::NotFound,
                    Removal::Removed { now_empty: false } => {
                        return Removal::Removed { now_empty: false };
                    }
                    Removal::Removed { now_empty: true } => {}
                }
            }
            items.remove(index);
            Removal::Removed {
                now_empty: items.is_empty(),
            }
        }
        _ => Removal::NotFound,
    }
}

/// Removes from `object` what the applier applied last time (`last_applied`)
/// and nobody owns now (`owned`: the new applied set and every other manager's),
/// as upstream's prune: a field with owned fields below it stays, a list item
/// only stays if it is owned itself, and the key fields of an item are never
/// removed on their own.
fn prune(object: &mut Value, last_applied: &FieldSet, owned: &FieldSet) {
    for path in last_applied.paths() {
        if owned.contains(&path) {
            continue;
        }
        match path.as_slice() {
            [.., PathElement::Field(_)] if owned.child(&path).is_some() => continue,
            [.., PathElement::Key(keys), PathElement::Field(name)]
                if keys.iter().any(|(key, _)| key == name) =>
            {
                continue;
            }
            _ => {}
        }
        remove_path(object, &path);
    }
}

// ---------------------------------------------------------------------------
// managedFields entries
// ---------------------------------------------------------------------------

/// One `metadata.managedFields` entry, decoded.
#[derive(Clone, Debug)]
struct ManagedEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: String,
    fields: FieldSet,
}

impl ManagedEntry {
    /// Whether this is the entry of the given writer. Update entries are per API
    /// version; an applier has one entry whatever version it applies in.
    fn is(&self, manager: &str, operation: &str, subresource: &str, api_version: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == OPERATION_APPLY || self.api_version == api_version)
    }

    /// Reads an entry leniently: missing strings are empty, a missing or
    /// unreadable field set is empty (and the entry is then dropped).
    fn decode(value: &Value) -> Option<ManagedEntry> {
        let map = value.as_object()?;
        let text = |key: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let fields = map
            .get("fieldsV1")
            .and_then(|fields| FieldSet::from_fields_v1(fields).ok())
            .unwrap_or_default();
        Some(ManagedEntry {
            manager: text("manager"),
            operation: text("operation"),
            api_version: text("apiVersion"),
            time: map.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: text("subresource"),
            fields,
        })
    }

    /// The entry as upstream writes it (empty strings left out).
    fn encode(&self) -> Value {
        let mut map = Map::new();
        let mut put = |key: &str, value: &str| {
            if !value.is_empty() {
                map.insert(key.to_string(), Value::String(value.to_string()));
            }
        };
        put("manager", &self.manager);
        put("operation", &self.operation);
        put("apiVersion", &self.api_version);
        put("time", self.time.as_deref().unwrap_or_default());
        put("fieldsType", "FieldsV1");
        map.insert("fieldsV1".to_string(), self.fields.to_fields_v1());
        if !self.subresource.is_empty() {
            map.insert(
                "subresource".to_string(),
                Value::String(self.subresource.clone()),
            );
        }
        Value::Object(map)
    }
}

/// How a conflict names a manager (upstream's `printManager`): the quoted name,
/// ` with subresource "status"` where there is one, and ` using <apiVersion>`
/// for an `Update` entry (an applier's version is not part of its identity).
fn describe_manager(
    manager: &str,
    operation: &str,
    subresource: &str,
    api_version: &str,
) -> String {
    let mut out = json_string(manager);
    if !subresource.is_empty() {
        out.push_str(&format!(" with subresource {}", json_string(subresource)));
    }
    if operation == OPERATION_UPDATE {
        out.push_str(&format!(" using {api_version}"));
    }
    out
}

/// The entries of an object's `metadata.managedFields`; `None` when it has no
/// list there. Entries of the same writer are merged.
fn decode_entries(object: &Value) -> Option<Vec<ManagedEntry>> {
    let list = object.get("metadata")?.get("managedFields")?.as_array()?;
    let mut entries: Vec<ManagedEntry> = Vec::new();
    for entry in list.iter().filter_map(ManagedEntry::decode) {
        match entries.iter_mut().find(|seen| {
            seen.is(
                &entry.manager,
                &entry.operation,
                &entry.subresource,
                &entry.api_version,
            )
        }) {
            Some(seen) => seen.fields.union_with(&entry.fields),
            None => entries.push(entry),
        }
    }
    Some(entries)
}

/// Writes the entries with a non-empty field set to `metadata.managedFields`,
/// in upstream's order (operation, time, manager, apiVersion, subresource), or
/// removes the field when none is left.
fn write_entries(object: &mut Value, mut entries: Vec<ManagedEntry>) {
    entries.retain(|entry| !entry.fields.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            a.time.as_deref().unwrap_or_default(),
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                b.time.as_deref().unwrap_or_default(),
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(object) = object.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
            metadata.shift_remove("managedFields");
        }
        return;
    }
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(metadata) = metadata {
        let list = entries.iter().map(ManagedEntry::encode).collect();
        metadata.insert("managedFields".to_string(), Value::Array(list));
    }
}

/// A copy of an object without `metadata.managedFields`.
fn without_managed_fields(object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(Value::Object(metadata)) = out.get_mut("metadata") {
        metadata.shift_remove("managedFields");
    }
    out
}

// ---------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------

/// Records an ordinary write (create, update or patch; operation `Update`) by
/// `manager` in `new.metadata.managedFields`.
///
/// The fields that changed from `old` to `new` (every field `new` sets, on a
/// create) join the manager's `Update` entry for this `api_version` and
/// `subresource`, which gets `time` = `now`, and leave every other entry
/// (`Apply` entries included); fields the write removed leave every entry.
/// Entries left empty are dropped. A write that changes nothing tracked leaves
/// the entries as they were.
///
/// As upstream, a client may send `metadata.managedFields` itself on the main
/// resource: a non-empty list is taken as the starting point instead of
/// `old`'s (so `[{}]`, one empty entry, clears them); an absent, null or empty
/// list means "unchanged". An existing object without managed fields (they
/// were cleared) stays untracked until it is applied to. The group comes from
/// `api_version`, the kind from the object.
pub fn update_managed_fields(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    api_version: &str,
    now: &str,
) {
    if !new.is_object() {
        return;
    }
    let (group, _) = split_api_version(api_version);
    let kind = new
        .get("kind")
        .or_else(|| old.and_then(|old| old.get("kind")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let schema = Schema { group, kind: &kind };

    let sent = if subresource.is_empty() {
        decode_entries(new).filter(|sent| !sent.is_empty())
    } else {
        None
    };
    let mut entries = match sent {
        Some(sent) => sent,
        None => old.and_then(decode_entries).unwrap_or_default(),
    };
    if old.is_some() && entries.is_empty() {
        write_entries(new, entries);
        return;
    }

    let new_clean = without_managed_fields(new);
    let mut old_clean = match old {
        Some(old) => without_managed_fields(old),
        None => Value::Object(Map::new()),
    };
    add_missing(&mut old_clean, &plain_structs(&new_clean, group));
    let comparison = compare_objects(schema, &old_clean, &new_clean);
    let mut changed = comparison.changed();
    strip_server_fields(&mut changed);
    for entry in &mut entries {
        entry.fields = entry
            .fields
            .difference(&changed)
            .difference(&comparison.removed);
    }
    if !changed.is_empty() {
        let own = entries
            .iter_mut()
            .find(|entry| entry.is(manager, OPERATION_UPDATE, subresource, api_version));
        match own {
            Some(own) => {
                own.fields.union_with(&changed);
                own.time = Some(now.to_string());
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_string(),
                operation: OPERATION_UPDATE.to_string(),
                api_version: api_version.to_string(),
                time: Some(now.to_string()),
                subresource: subresource.to_string(),
                fields: changed,
            }),
        }
    }
    write_entries(new, entries);
}

// ---------------------------------------------------------------------------
// Apply
// ---------------------------------------------------------------------------

/// One field an apply would take from another manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// Its operation, `Apply` or `Update`.
    pub operation: String,
    /// Its subresource, "" for the main resource.
    pub subresource: String,
    /// The API version of its entry.
    pub api_version: String,
    /// The field as upstream prints it, e.g. `.spec.replicas` or
    /// `.spec.template.spec.containers[name="web"].image`.
    pub field: String,
}

impl Conflict {
    /// How upstream names the manager: `"kubectl"` for an applier,
    /// `"kubectl" using apps/v1` for an updater, with
    /// ` with subresource "status"` after the name where there is one.
    pub fn manager_description(&self) -> String {
        describe_manager(
            &self.manager,
            &self.operation,
            &self.subresource,
            &self.api_version,
        )
    }
}

/// An apply refused because it would change fields other managers own. The API
/// server answers HTTP 409 with reason `Conflict`, [`ApplyConflicts::message`]
/// and [`ApplyConflicts::causes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyConflicts {
    /// Grouped by manager (sorted), fields in path order.
    pub conflicts: Vec<Conflict>,
}

impl ApplyConflicts {
    /// Upstream's message: `Apply failed with 1 conflict: conflict with "kubectl"
    /// using apps/v1: .spec.replicas`, or for several `Apply failed with 2
    /// conflicts: conflicts with "a":\n- .spec.replicas\n- .spec.paused`.
    pub fn message(&self) -> String {
        if let [conflict] = self.conflicts.as_slice() {
            return format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                conflict.manager_description(),
                conflict.field
            );
        }
        let mut lines: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for conflict in &self.conflicts {
            let manager = conflict.manager_description();
            if current.as_ref() != Some(&manager) {
                lines.push(format!("conflicts with {manager}:"));
                current = Some(manager);
            }
            lines.push(format!("- {}", conflict.field));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.conflicts.len(),
            lines.join("\n")
        )
    }

    /// One cause per conflict: type `FieldManagerConflict`, message
    /// `conflict with "kubectl" using apps/v1`, field `.spec.replicas`.
    pub fn causes(&self) -> Vec<Cause> {
        self.conflicts
            .iter()
            .map(|conflict| {
                Cause::new(
                    CONFLICT_CAUSE_TYPE,
                    conflict.field.clone(),
                    format!("conflict with {}", conflict.manager_description()),
                )
            })
            .collect()
    }
}

impl fmt::Display for ApplyConflicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for ApplyConflicts {}

/// Server-side apply of `applied` (the configuration, `metadata.managedFields`
/// ignored: the caller rejects a configuration that sets it) by `manager` to
/// `live` (`None` on create), an object of `group`/`kind`.
///
/// The configuration is merged into the live object: objects field by field,
/// associative lists by key and sets by value (live-only elements kept in
/// place), atomic lists and scalars replaced, `null` removes. Fields the
/// manager applied last time but not now are removed unless another manager
/// (or the new configuration) owns them. A changed field that another manager
/// owns, in an `Apply` or an `Update` entry, is a conflict: the apply fails with
/// [`ApplyConflicts`], or with `force` the field is taken from that manager.
/// Fields the apply removes leave every entry. The manager's `Apply` entry
/// becomes exactly the applied field set, at `api_version`, with `time` = `now`
/// unless nothing changed (re-applying the same configuration returns the live
/// object as it was). An object without managed fields first gives all its
/// fields to the `before-first-apply` manager, as upstream does.
#[allow(clippy::too_many_arguments)]
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    group: &str,
    kind: &str,
    api_version: &str,
    now: &str,
) -> Result<Value, ApplyConflicts> {
    let schema = Schema { group, kind };
    let config = without_managed_fields(applied);
    let base = live
        .map(without_managed_fields)
        .unwrap_or_else(|| Value::Object(Map::new()));

    let mut entries = live.and_then(decode_entries).unwrap_or_default();
    entries.retain(|entry| !entry.fields.is_empty());
    if live.is_some() && entries.is_empty() {
        let mut fields = compare_objects(schema, &plain_structs(&base, group), &base).changed();
        strip_server_fields(&mut fields);
        entries.push(ManagedEntry {
            manager: BEFORE_FIRST_APPLY_MANAGER.to_string(),
            operation: OPERATION_UPDATE.to_string(),
            api_version: api_version.to_string(),
            time: Some(now.to_string()),
            subresource: String::new(),
            fields,
        });
    }
    let previous = entries
        .iter()
        .position(|entry| entry.is(manager, OPERATION_APPLY, "", api_version))
        .map(|index| entries.remove(index));

    let mut applied_set = FieldSet::from_object(&config, group, kind);
    strip_server_fields(&mut applied_set);

    let mut merged = Walker::new(schema).merge_value(Some(&base), &config);
    if let Some(previous) = &previous {
        let mut owned = applied_set.clone();
        for entry in &entries {
            owned.union_with(&entry.fields);
        }
        prune(&mut merged, &previous.fields, &owned);
    }

    let comparison = compare_objects(schema, &base, &merged);
    let mut changed = comparison.changed();
    strip_server_fields(&mut changed);
    if !force {
        let mut owners: Vec<&ManagedEntry> = entries.iter().collect();
        owners.sort_by(|a, b| {
            (&a.manager, &a.operation, &a.api_version, &a.subresource).cmp(&(
                &b.manager,
                &b.operation,
                &b.api_version,
                &b.subresource,
            ))
        });
        let conflicts: Vec<Conflict> = owners
            .into_iter()
            .flat_map(|entry| {
                entry
                    .fields
                    .intersection(&changed)
                    .paths()
                    .into_iter()
                    .map(move |path| Conflict {
                        manager: entry.manager.clone(),
                        operation: entry.operation.clone(),
                        subresource: entry.subresource.clone(),
                        api_version: entry.api_version.clone(),
                        field: path_to_string(&path),
                    })
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(ApplyConflicts { conflicts });
        }
    }
    for entry in &mut entries {
        entry.fields = entry
            .fields
            .difference(&changed)
            .difference(&comparison.removed);
    }

    let object_changed = merged != base;
    let time = match &previous {
        Some(previous) if !object_changed => {
            previous.time.clone().or_else(|| Some(now.to_string()))
        }
        _ => Some(now.to_string()),
    };
    entries.push(ManagedEntry {
        manager: manager.to_string(),
        operation: OPERATION_APPLY.to_string(),
        api_version: api_version.to_string(),
        time,
        subresource: String::new(),
        fields: applied_set,
    });
    write_entries(&mut merged, entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T1: &str = "2025-01-01T00:00:00Z";
    const T2: &str = "2025-01-02T00:00:00Z";
    const T3: &str = "2025-01-03T00:00:00Z";

    fn deployment_config(replicas: i64, containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": containers}
                }
            }
        })
    }

    fn web_container(image: &str) -> Value {
        json!({"name": "web", "image": image, "ports": [{"containerPort": 80}]})
    }

    fn apply(
        live: Option<&Value>,
        config: &Value,
        manager: &str,
        force: bool,
        now: &str,
    ) -> Result<Value, ApplyConflicts> {
        server_side_apply(
            live,
            config,
            manager,
            force,
            "apps",
            "Deployment",
            "apps/v1",
            now,
        )
    }

    fn entries(object: &Value) -> Vec<Value> {
        object["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn entry<'a>(object: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
        object["metadata"]["managedFields"]
            .as_array()?
            .iter()
            .find(|entry| entry["manager"] == manager && entry["operation"] == operation)
    }

    fn owns(object: &Value, manager: &str, operation: &str, path: &str) -> bool {
        let Some(entry) = entry(object, manager, operation) else {
            return false;
        };
        let set = FieldSet::from_fields_v1(&entry["fieldsV1"]).unwrap();
        set.paths()
            .iter()
            .any(|owned| path_to_string(owned) == path)
    }

    fn field(name: &str) -> PathElement {
        PathElement::Field(name.to_string())
    }

    #[test]
    fn apply_create_records_an_apply_entry() {
        let config = deployment_config(3, json!([web_container("nginx:1")]));
        let object = apply(None, &config, "alice", false, T1).unwrap();
        assert_eq!(object["spec"]["replicas"], 3);
        assert_eq!(
            object["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1"
        );
        let managed = entries(&object);
        assert_eq!(managed.len(), 1);
        let expected_fields = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80}": {"f:containerPort": {}, ".": {}}},
                        ".": {}
                    }}}
                }
            }
        });
        assert_eq!(
            managed[0],
            json!({
                "manager": "alice",
                "operation": "Apply",
                "apiVersion": "apps/v1",
                "time": T1,
                "fieldsType": "FieldsV1",
                "fieldsV1": expected_fields
            })
        );
        // "." is written after the fields, as upstream serialises it.
        let text = serde_json::to_string(&managed[0]["fieldsV1"]).unwrap();
        assert!(text.contains(r#""f:containerPort":{},".":{}"#), "{text}");
    }

    #[test]
    fn second_applier_conflicts_on_replicas() {
        let live = apply(
            None,
            &deployment_config(3, json!([web_container("nginx:1")])),
            "alice",
            false,
            T1,
        )
        .unwrap();
        let err = apply(
            Some(&live),
            &deployment_config(5, json!([web_container("nginx:1")])),
            "bob",
            false,
            T2,
        )
        .unwrap_err();
        assert_eq!(
            err.conflicts,
            vec![Conflict {
                manager: "alice".into(),
                operation: "Apply".into(),
                subresource: String::new(),
                api_version: "apps/v1".into(),
                field: ".spec.replicas".into(),
            }]
        );
        assert_eq!(
            err.message(),
            r#"Apply failed with 1 conflict: conflict with "alice": .spec.replicas"#
        );
        assert_eq!(
            err.causes(),
            vec![Cause::new(
                "FieldManagerConflict",
                ".spec.replicas",
                r#"conflict with "alice""#
            )]
        );
        // The same value is no conflict: both own it.
        let shared = apply(
            Some(&live),
            &deployment_config(3, json!([web_container("nginx:1")])),
            "bob",
            false,
            T2,
        )
        .unwrap();
        assert!(owns(&shared, "alice", "Apply", ".spec.replicas"));
        assert!(owns(&shared, "bob", "Apply", ".spec.replicas"));
    }

    #[test]
    fn several_conflicts_are_grouped_by_manager() {
        let live = apply(
            None,
            &deployment_config(3, json!([web_container("nginx:1")])),
            "alice",
            false,
            T1,
        )
        .unwrap();
        let err = apply(
            Some(&live),
            &deployment_config(5, json!([web_container("nginx:2")])),
            "bob",
            false,
            T2,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .spec.replicas\n- \
             .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn forced_apply_takes_the_field() {
        let live = apply(
            None,
            &deployment_config(3, json!([web_container("nginx:1")])),
            "alice",
            false,
            T1,
        )
        .unwrap();
        let object = apply(
            Some(&live),
            &deployment_config(5, json!([web_container("nginx:1")])),
            "bob",
            true,
            T2,
        )
        .unwrap();
        assert_eq!(object["spec"]["replicas"], 5);
        assert!(owns(&object, "bob", "Apply", ".spec.replicas"));
        assert!(!owns(&object, "alice", "Apply", ".spec.replicas"));
        // Alice keeps what she shares with bob.
        assert!(owns(
            &object,
            "alice",
            "Apply",
            ".spec.template.spec.containers[name=\"web\"].image"
        ));
        // Alice now conflicts with bob if she applies her old value again.
        let err = apply(
            Some(&object),
            &deployment_config(3, json!([web_container("nginx:1")])),
            "alice",
            false,
            T3,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            r#"Apply failed with 1 conflict: conflict with "bob": .spec.replicas"#
        );
    }

    #[test]
    fn update_takes_ownership_from_the_applier() {
        let live = apply(
            None,
            &deployment_config(3, json!([web_container("nginx:1")])),
            "alice",
            false,
            T1,
        )
        .unwrap();
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(10);
        update_managed_fields(Some(&live), &mut scaled, "kubectl-scale", "", "apps/v1", T2);
        assert!(owns(&scaled, "kubectl-scale", "Update", ".spec.replicas"));
        assert!(!owns(&scaled, "alice", "Apply", ".spec.replicas"));
        let scale_entry = entry(&scaled, "kubectl-scale", "Update").unwrap();
        assert_eq!(scale_entry["time"], T2);
        assert_eq!(
            scale_entry["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
        // Apply entries sort before Update entries.
        assert_eq!(entries(&scaled)[0]["operation"], "Apply");

        let err = apply(
            Some(&scaled),
            &deployment_config(3, json!([web_container("nginx:1")])),
            "alice",
            false,
            T3,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            r#"Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas"#
        );
        assert_eq!(
            err.causes()[0].message,
            r#"conflict with "kubectl-scale" using apps/v1"#
        );
        // Applying without replicas works, and leaves the field to the scaler.
        let mut config = deployment_config(3, json!([web_container("nginx:1")]));
        config["spec"]
            .as_object_mut()
            .unwrap()
            .shift_remove("replicas");
        let object = apply(Some(&scaled), &config, "alice", false, T3).unwrap();
        assert_eq!(object["spec"]["replicas"], 10);
        assert!(owns(&object, "kubectl-scale", "Update", ".spec.replicas"));
    }

    #[test]
    fn dropping_a_container_from_the_config_removes_it() {
        let two = json!([web_container("nginx:1"), {"name": "sidecar", "image": "envoy:1"}]);
        let live = apply(None, &deployment_config(3, two), "alice", false, T1).unwrap();
        assert_eq!(
            live["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let object = apply(
            Some(&live),
            &deployment_config(3, json!([web_container("nginx:1")])),
            "alice",
            false,
            T2,
        )
        .unwrap();
        let containers = object["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["name"], "web");
        assert!(!owns(
            &object,
            "alice",
            "Apply",
            ".spec.template.spec.containers[name=\"sidecar\"]"
        ));
    }

    #[test]
    fn dropped_fields_owned_by_others_stay() {
        let live = apply(
            None,
            &deployment_config(3, json!([web_container("nginx:1")])),
            "alice",
            false,
            T1,
        )
        .unwrap();
        let live = apply(
            Some(&live),
            &deployment_config(3, json!([web_container("nginx:1")])),
            "bob",
            false,
            T2,
        )
        .unwrap();
        let mut config = deployment_config(3, json!([web_container("nginx:1")]));
        config["spec"]
            .as_object_mut()
            .unwrap()
            .shift_remove("replicas");
        let object = apply(Some(&live), &config, "alice", false, T3).unwrap();
        assert_eq!(object["spec"]["replicas"], 3);
        assert!(owns(&object, "bob", "Apply", ".spec.replicas"));
        assert!(!owns(&object, "alice", "Apply", ".spec.replicas"));
        // With nobody else owning it, it goes.
        let mut labels_config = deployment_config(3, json!([web_container("nginx:1")]));
        labels_config["metadata"]["labels"] = json!({"app": "web", "tier": "front"});
        let live = apply(None, &labels_config, "alice", false, T1).unwrap();
        let object = apply(
            Some(&live),
            &deployment_config(3, json!([web_container("nginx:1")])),
            "alice",
            false,
            T2,
        )
        .unwrap();
        assert_eq!(object["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn reapplying_the_same_config_is_a_no_op() {
        let config = deployment_config(3, json!([web_container("nginx:1")]));
        let live = apply(None, &config, "alice", false, T1).unwrap();
        let again = apply(Some(&live), &config, "alice", false, T2).unwrap();
        assert_eq!(again, live);
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&live).unwrap()
        );
    }

    #[test]
    fn apply_keeps_fields_and_elements_it_does_not_mention() {
        let config = deployment_config(3, json!([web_container("nginx:1")]));
        let mut live = apply(None, &config, "alice", false, T1).unwrap();
        // Defaults and another writer's container.
        live["spec"]["revisionHistoryLimit"] = json!(10);
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .insert(0, json!({"name": "init-ish", "image": "busybox"}));
        live["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"] =
            json!("IfNotPresent");
        let object = apply(
            Some(&live),
            &deployment_config(3, json!([web_container("nginx:2")])),
            "alice",
            false,
            T2,
        )
        .unwrap();
        assert_eq!(object["spec"]["revisionHistoryLimit"], 10);
        let containers = &object["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["name"], "init-ish");
        assert_eq!(containers[1]["image"], "nginx:2");
        assert_eq!(containers[1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(entry(&object, "alice", "Apply").unwrap()["time"], T2);
    }

    #[test]
    fn atomic_lists_are_replaced_and_sets_merged() {
        let mut config = deployment_config(1, json!([web_container("nginx:1")]));
        config["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["a", "b"]);
        config["metadata"]["finalizers"] = json!(["x/a"]);
        let live = apply(None, &config, "alice", false, T1).unwrap();
        assert!(owns(
            &live,
            "alice",
            "Apply",
            ".spec.template.spec.containers[name=\"web\"].args"
        ));
        assert!(owns(
            &live,
            "alice",
            "Apply",
            ".metadata.finalizers[=\"x/a\"]"
        ));

        let mut other =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        other["metadata"]["finalizers"] = json!(["x/b"]);
        let object = apply(Some(&live), &other, "bob", false, T2).unwrap();
        assert_eq!(object["metadata"]["finalizers"], json!(["x/a", "x/b"]));

        config["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["c"]);
        let object = apply(Some(&object), &config, "alice", false, T3).unwrap();
        assert_eq!(
            object["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["c"])
        );
    }

    #[test]
    fn update_on_create_owns_every_field_but_server_metadata() {
        let mut object = deployment_config(2, json!([web_container("nginx:1")]));
        object["metadata"]["uid"] = json!("1234");
        object["metadata"]["resourceVersion"] = json!("5");
        object["metadata"]["creationTimestamp"] = json!(T1);
        object["spec"]["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}});
        update_managed_fields(None, &mut object, "kubectl-create", "", "apps/v1", T1);
        let managed = entries(&object);
        assert_eq!(managed.len(), 1);
        assert_eq!(managed[0]["manager"], "kubectl-create");
        assert_eq!(managed[0]["operation"], "Update");
        assert_eq!(
            managed[0]["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}, ".": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:strategy": {
                        "f:rollingUpdate": {"f:maxSurge": {}, ".": {}},
                        "f:type": {}
                    },
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}, ".": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {
                                "k:{\"containerPort\":80}": {"f:containerPort": {}, ".": {}},
                                ".": {}
                            },
                            ".": {}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn update_merges_into_the_managers_entry_and_drops_empty_entries() {
        let mut object = deployment_config(2, json!([web_container("nginx:1")]));
        update_managed_fields(None, &mut object, "creator", "", "apps/v1", T1);
        let old = object.clone();
        let mut new = object.clone();
        new["spec"]["replicas"] = json!(4);
        update_managed_fields(Some(&old), &mut new, "creator", "", "apps/v1", T2);
        assert_eq!(entries(&new).len(), 1);
        assert_eq!(entries(&new)[0]["time"], T2);
        assert!(owns(&new, "creator", "Update", ".spec.replicas"));
        assert!(owns(
            &new,
            "creator",
            "Update",
            ".spec.template.spec.containers[name=\"web\"].image"
        ));

        // A write that changes nothing keeps the entries, time included.
        let old = new.clone();
        let mut same = new.clone();
        update_managed_fields(Some(&old), &mut same, "someone", "", "apps/v1", T3);
        assert_eq!(same, old);

        // Another manager that rewrites everything leaves the creator nothing.
        let old = new.clone();
        let mut rewritten = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "managedFields": old["metadata"]["managedFields"].clone()},
            "spec": {"replicas": 1}
        });
        update_managed_fields(Some(&old), &mut rewritten, "editor", "", "apps/v1", T3);
        let managed = entries(&rewritten);
        assert_eq!(managed.len(), 1, "{managed:?}");
        assert_eq!(managed[0]["manager"], "editor");
        assert_eq!(
            managed[0]["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
    }

    #[test]
    fn update_with_a_subresource_records_it() {
        let mut object = deployment_config(2, json!([web_container("nginx:1")]));
        update_managed_fields(None, &mut object, "creator", "", "apps/v1", T1);
        let old = object.clone();
        let mut new = object.clone();
        new["status"] = json!({"replicas": 2});
        update_managed_fields(
            Some(&old),
            &mut new,
            "kube-controller-manager",
            "status",
            "apps/v1",
            T2,
        );
        let status_entry = entry(&new, "kube-controller-manager", "Update").unwrap();
        assert_eq!(status_entry["subresource"], "status");
        assert_eq!(
            status_entry["fieldsV1"],
            json!({"f:status": {"f:replicas": {}}})
        );
    }

    #[test]
    fn clients_may_replace_or_clear_managed_fields() {
        let mut object = deployment_config(2, json!([web_container("nginx:1")]));
        update_managed_fields(None, &mut object, "creator", "", "apps/v1", T1);
        let old = object.clone();

        // An empty list means "unchanged".
        let mut new = object.clone();
        new["metadata"]["managedFields"] = json!([]);
        update_managed_fields(Some(&old), &mut new, "editor", "", "apps/v1", T2);
        assert_eq!(
            new["metadata"]["managedFields"],
            old["metadata"]["managedFields"]
        );

        // One empty entry clears them.
        let mut new = object.clone();
        new["metadata"]["managedFields"] = json!([{}]);
        update_managed_fields(Some(&old), &mut new, "editor", "", "apps/v1", T2);
        assert!(new["metadata"].get("managedFields").is_none());

        // The object then stays untracked until an apply.
        let cleared = new.clone();
        let mut next = new.clone();
        next["spec"]["replicas"] = json!(7);
        update_managed_fields(Some(&cleared), &mut next, "editor", "", "apps/v1", T3);
        assert!(next["metadata"].get("managedFields").is_none());

        // A client's own list is kept.
        let mut new = object.clone();
        let mine = json!([{
            "manager": "mine", "operation": "Update", "apiVersion": "apps/v1", "time": T1,
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}
        }]);
        new["metadata"]["managedFields"] = mine.clone();
        update_managed_fields(Some(&old), &mut new, "editor", "", "apps/v1", T2);
        assert_eq!(new["metadata"]["managedFields"], mine);
    }

    #[test]
    fn first_apply_to_an_untracked_object_hands_its_fields_to_before_first_apply() {
        let live = deployment_config(2, json!([web_container("nginx:1")]));
        let err = apply(
            Some(&live),
            &deployment_config(3, json!([web_container("nginx:1")])),
            "alice",
            false,
            T1,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            r#"Apply failed with 1 conflict: conflict with "before-first-apply" using apps/v1: .spec.replicas"#
        );
        let object = apply(
            Some(&live),
            &deployment_config(2, json!([web_container("nginx:1")])),
            "alice",
            false,
            T1,
        )
        .unwrap();
        assert!(owns(
            &object,
            "before-first-apply",
            "Update",
            ".spec.replicas"
        ));
        assert!(owns(&object, "alice", "Apply", ".spec.replicas"));
    }

    #[test]
    fn null_in_the_config_removes_the_field() {
        let config = deployment_config(3, json!([web_container("nginx:1")]));
        let live = apply(None, &config, "alice", false, T1).unwrap();
        let mut unset = config.clone();
        unset["spec"]["replicas"] = Value::Null;
        let object = apply(Some(&live), &unset, "alice", false, T2).unwrap();
        assert!(object["spec"].get("replicas").is_none());
    }

    #[test]
    fn custom_resources_have_atomic_lists_and_set_finalizers() {
        let config = json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "finalizers": ["a"]},
            "spec": {"items": [{"name": "x"}]}
        });
        let object = server_side_apply(
            None,
            &config,
            "alice",
            false,
            "example.com",
            "Widget",
            "example.com/v1",
            T1,
        )
        .unwrap();
        assert_eq!(
            entries(&object)[0]["fieldsV1"],
            json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}}}, "f:spec": {"f:items": {}}})
        );
    }

    #[test]
    fn fields_v1_round_trip_on_a_deployment() {
        let fields = json!({
            "f:metadata": {
                "f:annotations": {"f:deployment.kubernetes.io/revision": {}, ".": {}},
                "f:labels": {"f:app": {}, ".": {}}
            },
            "f:spec": {
                "f:progressDeadlineSeconds": {},
                "f:replicas": {},
                "f:revisionHistoryLimit": {},
                "f:selector": {},
                "f:strategy": {
                    "f:rollingUpdate": {"f:maxSurge": {}, "f:maxUnavailable": {}, ".": {}},
                    "f:type": {}
                },
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}, ".": {}}},
                    "f:spec": {
                        "f:containers": {"k:{\"name\":\"nginx\"}": {
                            "f:env": {"k:{\"name\":\"MODE\"}": {"f:name": {}, "f:value": {}, ".": {}}, ".": {}},
                            "f:image": {},
                            "f:imagePullPolicy": {},
                            "f:name": {},
                            "f:ports": {
                                "k:{\"containerPort\":80}": {"f:containerPort": {}, "f:protocol": {}, ".": {}},
                                ".": {}
                            },
                            "f:resources": {},
                            "f:terminationMessagePath": {},
                            "f:terminationMessagePolicy": {},
                            ".": {}
                        }},
                        "f:dnsPolicy": {},
                        "f:restartPolicy": {},
                        "f:schedulerName": {},
                        "f:securityContext": {},
                        "f:terminationGracePeriodSeconds": {}
                    }
                }
            },
            "f:status": {
                "f:conditions": {"k:{\"type\":\"Available\"}": {"f:status": {}, "f:type": {}, ".": {}}, ".": {}},
                "f:finalizers": {"v:\"a<b\"": {}, "v:2": {}, "i:3": {}}
            }
        });
        let set = FieldSet::from_fields_v1(&fields).unwrap();
        assert!(set.contains(&[
            field("spec"),
            field("template"),
            field("spec"),
            field("containers"),
            PathElement::Key(vec![("name".into(), json!("nginx"))]),
        ]));
        assert!(set.contains(&[field("metadata"), field("labels")]));
        assert!(!set.contains(&[field("spec")]));
        let encoded = set.to_fields_v1();
        // Values sort before... numbers before strings; keys and text survive.
        let status = &encoded["f:status"]["f:finalizers"];
        let keys: Vec<&String> = status.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["v:2", "v:\"a\\u003cb\"", "i:3"]);
        assert_eq!(FieldSet::from_fields_v1(&encoded).unwrap(), set);
        // Apart from the set's own order in finalizers, the document is identical.
        let mut expected = fields.clone();
        expected["f:status"]["f:finalizers"] = encoded["f:status"]["f:finalizers"].clone();
        assert_eq!(
            serde_json::to_string(&encoded).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        assert_eq!(set.len(), set.paths().len());
    }

    #[test]
    fn path_elements_parse_print_and_order() {
        let key = PathElement::from_fields_v1_key(r#"k:{"port":80,"name":"http"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(key.to_fields_v1_key(), r#"k:{"name":"http","port":80}"#);
        assert_eq!(key.to_string(), r#"[name="http",port=80]"#);
        assert_eq!(PathElement::from_fields_v1_key("x:abc").unwrap(), None);
        assert!(PathElement::from_fields_v1_key("fabc").is_err());
        assert!(PathElement::from_fields_v1_key("i:x").is_err());
        let path = vec![
            field("spec"),
            PathElement::Value(json!("a")),
            PathElement::Index(2),
        ];
        assert_eq!(path_to_string(&path), r#".spec[="a"][2]"#);
        let mut elements = [
            PathElement::Index(0),
            PathElement::Value(json!(1)),
            key.clone(),
            field("z"),
        ];
        elements.sort();
        assert_eq!(
            elements,
            [
                field("z"),
                key,
                PathElement::Value(json!(1)),
                PathElement::Index(0)
            ]
        );
        // Unknown kinds are skipped when reading a set.
        let set = FieldSet::from_fields_v1(&json!({"f:a": {}, "z:b": {}})).unwrap();
        assert_eq!(set.paths(), vec![vec![field("a")]]);
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
    }

    #[test]
    fn set_operations() {
        let a =
            FieldSet::from_fields_v1(&json!({"f:a": {"f:b": {}, "f:c": {}}, "f:d": {}})).unwrap();
        let b = FieldSet::from_fields_v1(&json!({"f:a": {"f:c": {}}, "f:e": {}})).unwrap();
        assert_eq!(
            a.intersection(&b).to_fields_v1(),
            json!({"f:a": {"f:c": {}}})
        );
        assert_eq!(
            a.difference(&b).to_fields_v1(),
            json!({"f:a": {"f:b": {}}, "f:d": {}})
        );
        assert_eq!(a.union(&b).len(), 4);
        let mut c = a.clone();
        assert!(c.remove(&[field("a"), field("b")]));
        assert!(c.remove(&[field("a"), field("c")]));
        assert_eq!(c.to_fields_v1(), json!({"f:d": {}}));
    }
}
