//! The nftables model the proxy programs: a [`Ruleset`] (chains with their rules, maps
//! and sets with their elements) and its rendering as one `nft -f` transaction, either
//! the whole table or only the difference from the ruleset applied before.

use std::collections::BTreeMap;
use std::fmt::Write;

/// The table every rule of the proxy lives in.
pub const TABLE: &str = "ip krust-proxy";

/// One chain: its declaration (`type nat hook output priority -100;` for a base
/// chain, empty for a regular one) and its rules in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub declaration: String,
    pub rules: Vec<String>,
}

/// A set or map: its declaration (`type ipv4_addr; flags dynamic,timeout; ...`) and
/// the elements the proxy puts in it (`key`, or `key : value` in a map). Sets the
/// kernel fills itself (session affinity) have no elements here and keep theirs
/// across syncs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collection {
    pub kind: CollectionKind,
    pub declaration: String,
    pub elements: BTreeMap<String, Option<String>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CollectionKind {
    #[default]
    Map,
    /// A set whose elements the proxy writes (keys only).
    Set,
    /// A set the kernel adds elements to (`update @set { ip saddr }`).
    DynamicSet,
}

impl CollectionKind {
    /// The nft keyword declaring a collection of this kind.
    fn keyword(self) -> &'static str {
        match self {
            CollectionKind::Map => "map",
            CollectionKind::Set | CollectionKind::DynamicSet => "set",
        }
    }
}

/// The whole desired content of the proxy's table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: BTreeMap<String, Chain>,
    pub collections: BTreeMap<String, Collection>,
}

impl Ruleset {
    /// Adds a rule at the end of `chain`, declaring the chain (as a regular one) if new.
    pub fn rule(&mut self, chain: &str, rule: impl Into<String>) {
        self.chains
            .entry(chain.to_string())
            .or_default()
            .rules
            .push(rule.into());
    }

    /// Declares an (empty) regular chain.
    pub fn chain(&mut self, chain: &str) {
        self.chains.entry(chain.to_string()).or_default();
    }

    /// Adds `key : value` to the map `map` (which must be declared).
    pub fn map_element(&mut self, map: &str, key: String, value: String) {
        if let Some(collection) = self.collections.get_mut(map) {
            collection.elements.insert(key, Some(value));
        }
    }

    /// Adds `key` to the set `set` (which must be declared).
    pub fn set_element(&mut self, set: &str, key: String) {
        if let Some(collection) = self.collections.get_mut(set) {
            collection.elements.insert(key, None);
        }
    }

    /// Whether the set `set` holds `key`.
    pub fn contains(&self, set: &str, key: &str) -> bool {
        self.collections
            .get(set)
            .is_some_and(|c| c.elements.contains_key(key))
    }

    /// The verdict `key` maps to in `map`, if any (for tests and callers that inspect).
    pub fn lookup(&self, map: &str, key: &str) -> Option<&str> {
        self.collections.get(map)?.elements.get(key)?.as_deref()
    }

    /// The `nft -f` script that turns the table from `previous` (what the last
    /// successful apply left, `None` when unknown) into `self`, in one transaction.
    /// Without a previous ruleset the table is deleted and defined from scratch.
    pub fn render(&self, previous: Option<&Ruleset>) -> String {
        let mut out = String::new();
        let empty = Ruleset::default();
        let old = match previous {
            Some(previous) => previous,
            None => {
                // `add` first so that `delete` cannot fail on a missing table.
                let _ = writeln!(
                    out,
                    "add table {TABLE}\ndelete table {TABLE}\nadd table {TABLE}"
                );
                &empty
            }
        };
        // 1. Declare what is new, so rules and elements below may refer to it.
        for (name, chain) in &self.chains {
            if !old.chains.contains_key(name) {
                if chain.declaration.is_empty() {
                    let _ = writeln!(out, "add chain {TABLE} {name}");
                } else {
                    let _ = writeln!(out, "add chain {TABLE} {name} {{ {} }}", chain.declaration);
                }
            }
        }
        for (name, collection) in &self.collections {
            if !old.collections.contains_key(name) {
                let _ = writeln!(
                    out,
                    "add {} {TABLE} {name} {{ {} }}",
                    collection.kind.keyword(),
                    collection.declaration
                );
            }
        }
        // 2. Rewrite every chain whose rules changed.
        for (name, chain) in &self.chains {
            let before = old.chains.get(name);
            if before.map(|c| &c.rules) == Some(&chain.rules) {
                continue;
            }
            if before.is_some() {
                let _ = writeln!(out, "flush chain {TABLE} {name}");
            }
            for rule in &chain.rules {
                let _ = writeln!(out, "add rule {TABLE} {name} {rule}");
            }
        }
        // 3. Set and map elements: drop the stale ones, add the new or changed ones.
        for (name, collection) in &self.collections {
            let before = old.collections.get(name).map(|c| &c.elements);
            let stale: Vec<&String> = before
                .into_iter()
                .flatten()
                .filter(|(key, value)| collection.elements.get(*key) != Some(*value))
                .map(|(key, _)| key)
                .collect();
            if !stale.is_empty() {
                let keys: Vec<&str> = stale.iter().map(|k| k.as_str()).collect();
                let _ = writeln!(
                    out,
                    "delete element {TABLE} {name} {{ {} }}",
                    keys.join(", ")
                );
            }
            let fresh: Vec<String> = collection
                .elements
                .iter()
                .filter(|(key, value)| before.and_then(|b| b.get(*key)) != Some(*value))
                .map(|(key, value)| match value {
                    Some(value) => format!("{key} : {value}"),
                    None => key.clone(),
                })
                .collect();
            if !fresh.is_empty() {
                let _ = writeln!(out, "add element {TABLE} {name} {{ {} }}", fresh.join(", "));
            }
        }
        // 4. Remove what is gone: chains first (emptied, then deleted, as they may
        //    jump to one another), then the sets their rules used.
        let gone: Vec<&String> = old
            .chains
            .keys()
            .filter(|name| !self.chains.contains_key(*name))
            .collect();
        for name in &gone {
            let _ = writeln!(out, "flush chain {TABLE} {name}");
        }
        for name in &gone {
            let _ = writeln!(out, "delete chain {TABLE} {name}");
        }
        for (name, collection) in &old.collections {
            if !self.collections.contains_key(name) {
                let _ = writeln!(out, "delete {} {TABLE} {name}", collection.kind.keyword());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ruleset {
        let mut set = Ruleset::default();
        set.collections.insert(
            "service-ips".into(),
            Collection {
                declaration: "type ipv4_addr . inet_proto . inet_service : verdict;".into(),
                ..Default::default()
            },
        );
        set.rule("svc-a", "goto ep-a");
        set.chain("ep-a");
        set.map_element(
            "service-ips",
            "10.43.0.1 . tcp . 80".into(),
            "goto svc-a".into(),
        );
        set
    }

    #[test]
    fn full_render_replaces_the_table_in_one_script() {
        let script = sample().render(None);
        assert!(script.starts_with(
            "add table ip krust-proxy\ndelete table ip krust-proxy\nadd table ip krust-proxy\n"
        ));
        assert!(script.contains("add chain ip krust-proxy ep-a\n"));
        assert!(script.contains("add rule ip krust-proxy svc-a goto ep-a\n"));
        assert!(script.contains(
            "add element ip krust-proxy service-ips { 10.43.0.1 . tcp . 80 : goto svc-a }\n"
        ));
        // Chains are declared before any rule or element refers to them.
        assert!(
            script.find("add chain ip krust-proxy svc-a").unwrap()
                < script.find("add rule").unwrap()
        );
    }

    #[test]
    fn unchanged_ruleset_renders_nothing() {
        let set = sample();
        assert_eq!(set.render(Some(&set)), "");
    }

    #[test]
    fn diff_touches_only_what_changed() {
        let old = sample();
        let mut new = sample();
        new.chains.remove("ep-a");
        new.chains.get_mut("svc-a").unwrap().rules = vec!["goto ep-b".into()];
        new.chain("ep-b");
        new.map_element(
            "service-ips",
            "10.43.0.1 . tcp . 80".into(),
            "goto svc-b".into(),
        );
        let script = new.render(Some(&old));
        assert_eq!(
            script,
            "add chain ip krust-proxy ep-b\n\
             flush chain ip krust-proxy svc-a\n\
             add rule ip krust-proxy svc-a goto ep-b\n\
             delete element ip krust-proxy service-ips { 10.43.0.1 . tcp . 80 }\n\
             add element ip krust-proxy service-ips { 10.43.0.1 . tcp . 80 : goto svc-b }\n\
             flush chain ip krust-proxy ep-a\n\
             delete chain ip krust-proxy ep-a\n"
        );
    }
}
