//! The record index: every name the cluster DNS is authoritative for, built from
//! Services and EndpointSlices as the Kubernetes DNS specification (schema 1.0.1)
//! lays them out, and the answer to one question.
//!
//! The index is immutable: a change of the cluster builds a new one (see
//! `crate::run`), so lookups are a hash probe and never wait for a writer.
//! Pod names (`<a-b-c-d>.<ns>.pod.<zone>`) are computed from the question, as
//! CoreDNS does with `pods insecure`, so they need no entries.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Time to live of every record (and the negative-caching time in the SOA): short, so
/// that a deleted Service stops resolving within seconds also behind caches.
pub const TTL: u32 = 5;
/// The version of the Kubernetes DNS schema served at `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.0.1";
/// How many CNAMEs inside the zone an answer follows.
const MAX_CNAME_CHAIN: usize = 8;
/// The label EndpointSlices name their Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Upstream's annotation that publishes not-ready endpoints (as `publishNotReadyAddresses`).
const TOLERATE_UNREADY: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// What the cluster DNS does with one question.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// An authoritative answer: NOERROR with records, NOERROR without any (NODATA),
    /// or NXDOMAIN; negative answers carry the zone's SOA in `authorities`.
    Answer {
        code: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// Not a cluster name: ask the upstream resolvers.
    Forward,
}

impl Outcome {
    /// The CNAME target outside the zone that the answer ends on, if any: the
    /// server resolves it upstream (an ExternalName Service's answer).
    pub fn external_target(&self, zone: &Name) -> Option<Name> {
        let Outcome::Answer { answers, .. } = self else {
            return None;
        };
        match &answers.last()?.data {
            RData::CNAME(CNAME(target)) if !zone.zone_of(target) => Some(target.clone()),
            _ => None,
        }
    }
}

/// Every record of the cluster domain and of the reverse names of cluster addresses.
#[derive(Debug)]
pub struct Index {
    zone: Name,
    soa: Record,
    /// Records by owner name; a name with no records exists (an empty non-terminal
    /// such as `<ns>.svc.<zone>`: NODATA rather than NXDOMAIN).
    names: HashMap<LowerName, Vec<Record>>,
}

impl Index {
    /// An index with only the zone's own records (SOA, NS, schema version).
    pub fn empty(zone: &Name) -> Index {
        Index::build(zone, std::iter::empty(), std::iter::empty())
    }

    /// Builds the index for `zone` (e.g. `cluster.local.`) from every Service and
    /// EndpointSlice of the cluster.
    pub fn build<'a>(
        zone: &Name,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Index {
        let zone = fqdn(zone.to_lowercase());
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let ns_name = child(&zone, "ns.dns");
        let soa = Record::from_rdata(
            zone.clone(),
            TTL,
            RData::SOA(SOA::new(
                ns_name.clone(),
                child(&zone, "hostmaster"),
                serial,
                7200,
                1800,
                86400,
                TTL,
            )),
        );
        let mut builder = Builder {
            zone: zone.clone(),
            names: HashMap::new(),
        };
        builder.add(&zone, soa.data.clone());
        builder.add(&zone, RData::NS(NS(ns_name)));
        builder.add(
            &child(&zone, "dns-version"),
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
        );
        builder.exists(&child(&zone, "svc"));
        builder.exists(&child(&zone, "pod"));

        let mut slices_by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            slices_by_service
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
        for service in services {
            let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
            let name = service.metadata.name.as_deref().unwrap_or_default();
            let slices = slices_by_service
                .get(&(namespace, name))
                .map(Vec::as_slice)
                .unwrap_or_default();
            builder.add_service(service, namespace, name, slices);
        }
        Index {
            zone,
            soa,
            names: builder.names,
        }
    }

    /// The cluster domain, lowercase and fully qualified.
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    /// How many names the index holds (a measure for logs).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the index holds no names at all (never: the zone apex is always there).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Answers one question. Names inside the zone get an authoritative answer;
    /// reverse names of cluster addresses get their PTR; everything else is forwarded
    /// (unknown reverse names too, as CoreDNS's `fallthrough in-addr.arpa ip6.arpa`).
    pub fn answer(&self, query: &Query) -> Outcome {
        let asked = &query.name;
        let qtype = query.query_type;
        let lower = LowerName::new(asked);
        if !self.zone.zone_of(asked) {
            return match self.names.get(&lower) {
                Some(records) if is_reverse(asked) => self.positive(asked, qtype, records),
                _ => Outcome::Forward,
            };
        }
        if let Some(records) = self.names.get(&lower) {
            return self.positive(asked, qtype, records);
        }
        if let Some(ip) = self.pod_address(asked) {
            let record = match ip {
                IpAddr::V4(ip) => Record::from_rdata(asked.clone(), TTL, RData::A(A(ip))),
                IpAddr::V6(ip) => Record::from_rdata(asked.clone(), TTL, RData::AAAA(AAAA(ip))),
            };
            return self.positive(asked, qtype, &[record]);
        }
        self.negative(ResponseCode::NXDomain)
    }

    /// The answer for a name that exists: its records of the type asked (following
    /// CNAMEs inside the zone), or NODATA; address records of SRV targets as additionals.
    fn positive(&self, asked: &Name, qtype: RecordType, records: &[Record]) -> Outcome {
        let mut answers = Vec::new();
        let mut owner = asked.clone();
        let mut records = records;
        for _ in 0..MAX_CNAME_CHAIN {
            let cname = records
                .iter()
                .find(|r| r.record_type() == RecordType::CNAME);
            match cname {
                Some(cname) if qtype != RecordType::CNAME && qtype != RecordType::ANY => {
                    answers.push(renamed(cname, &owner));
                    let RData::CNAME(CNAME(target)) = &cname.data else {
                        unreachable!("a CNAME record holds a CNAME");
                    };
                    let Some(next) = self
                        .zone
                        .zone_of(target)
                        .then(|| self.names.get(&LowerName::new(target)))
                        .flatten()
                    else {
                        // Outside the zone (resolved upstream by the server) or dangling.
                        return self.answer_records(answers, Vec::new());
                    };
                    owner = target.clone();
                    records = next;
                }
                _ => {
                    answers.extend(
                        records
                            .iter()
                            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                            .map(|r| renamed(r, &owner)),
                    );
                    break;
                }
            }
        }
        let mut additionals = Vec::new();
        for answer in &answers {
            if let RData::SRV(srv) = &answer.data
                && let Some(target) = self.names.get(&LowerName::new(&srv.target))
            {
                additionals.extend(
                    target
                        .iter()
                        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                        .cloned(),
                );
            }
        }
        self.answer_records(answers, additionals)
    }

    fn answer_records(&self, answers: Vec<Record>, additionals: Vec<Record>) -> Outcome {
        if answers.is_empty() {
            return self.negative(ResponseCode::NoError);
        }
        Outcome::Answer {
            code: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
            additionals,
        }
    }

    fn negative(&self, code: ResponseCode) -> Outcome {
        Outcome::Answer {
            code,
            answers: Vec::new(),
            authorities: vec![self.soa.clone()],
            additionals: Vec::new(),
        }
    }

    /// The address in a pod name `<a-b-c-d>.<ns>.pod.<zone>` (IPv6 with `-` for `:`).
    fn pod_address(&self, name: &Name) -> Option<IpAddr> {
        if name.num_labels() != self.zone.num_labels() + 3 {
            return None;
        }
        let labels: Vec<&[u8]> = name.iter().collect();
        if !labels[2].eq_ignore_ascii_case(b"pod") {
            return None;
        }
        let label = std::str::from_utf8(labels[0]).ok()?;
        if let Ok(ip) = label.replace('-', ".").parse::<Ipv4Addr>() {
            return Some(ip.into());
        }
        label
            .replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(Into::into)
    }
}

/// Collects records by owner name while the index is built.
struct Builder {
    zone: Name,
    names: HashMap<LowerName, Vec<Record>>,
}

/// How a Service resolves.
enum Kind<'a> {
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(&'a str),
}

impl Builder {
    fn add_service(
        &mut self,
        service: &Service,
        namespace: &str,
        name: &str,
        slices: &[&EndpointSlice],
    ) {
        let Some(spec) = &service.spec else { return };
        let Ok(base) = Name::from_ascii(format!("{name}.{namespace}.svc."))
            .and_then(|n| n.append_domain(&self.zone))
        else {
            tracing::debug!(namespace, name, "Service name is no DNS name; skipped");
            return;
        };
        let base = base.to_lowercase();
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            match spec.external_name.as_deref() {
                Some(target) if !target.is_empty() => Kind::ExternalName(target),
                _ => return,
            }
        } else if spec.cluster_ip.as_deref() == Some("None") {
            Kind::Headless
        } else {
            let mut ips: Vec<IpAddr> = spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .collect();
            ips.dedup();
            if ips.is_empty() {
                return;
            }
            Kind::ClusterIp(ips)
        };
        match kind {
            Kind::ExternalName(target) => {
                let Ok(target) = Name::from_ascii(target) else {
                    tracing::debug!(namespace, name, target, "externalName is no DNS name");
                    return;
                };
                self.add(&base, RData::CNAME(CNAME(fqdn(target))));
            }
            Kind::ClusterIp(ips) => {
                for ip in ips {
                    self.add(&base, address(ip));
                    self.add(&reverse_name(ip), RData::PTR(PTR(base.clone())));
                }
                for port in spec.ports.iter().flatten() {
                    let protocol = port.protocol.as_deref().unwrap_or("TCP");
                    if let Some(srv_name) = srv_name(&base, port.name.as_deref(), protocol) {
                        let port = u16::try_from(port.port).unwrap_or_default();
                        self.add(&srv_name, RData::SRV(SRV::new(0, 100, port, base.clone())));
                    }
                }
            }
            Kind::Headless => {
                let publish_unready = spec.publish_not_ready_addresses == Some(true)
                    || service
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(TOLERATE_UNREADY))
                        .is_some_and(|v| v == "true");
                for slice in slices {
                    self.add_headless_slice(&base, slice, publish_unready);
                }
            }
        }
    }

    /// A headless Service's records from one of its slices: an address per ready
    /// endpoint at the Service's name and at the endpoint's hostname (its address with
    /// dashes when it has none), the PTR back, and an SRV per named port.
    fn add_headless_slice(&mut self, base: &Name, slice: &EndpointSlice, publish_unready: bool) {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            return;
        }
        for endpoint in &slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready && !publish_unready {
                continue;
            }
            let ips: Vec<IpAddr> = endpoint
                .addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
            let Some(first) = ips.first() else { continue };
            let label = match &endpoint.hostname {
                Some(hostname) if !hostname.is_empty() => hostname.to_lowercase(),
                _ => dashed(*first),
            };
            let Ok(host) = base.prepend_label(label.as_str()) else {
                continue;
            };
            for ip in &ips {
                self.add(base, address(*ip));
                self.add(&host, address(*ip));
                self.add(&reverse_name(*ip), RData::PTR(PTR(host.clone())));
            }
            for port in slice.ports.iter().flatten() {
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                if let Some(srv_name) = srv_name(base, port.name.as_deref(), protocol) {
                    self.add(
                        &srv_name,
                        RData::SRV(SRV::new(0, 100, number, host.clone())),
                    );
                }
            }
        }
    }

    /// Adds a record (once) and makes every name between it and the zone exist.
    fn add(&mut self, owner: &Name, data: RData) {
        let record = Record::from_rdata(owner.clone(), TTL, data);
        let records = self.names.entry(LowerName::new(owner)).or_default();
        if !records.contains(&record) {
            records.push(record);
        }
        self.exists(&owner.base_name());
    }

    /// Makes `name` and its ancestors up to the zone exist (with no records of their own).
    fn exists(&mut self, name: &Name) {
        let mut name = name.clone();
        while self.zone.zone_of(&name) && name.num_labels() > self.zone.num_labels() {
            let entry = self.names.entry(LowerName::new(&name));
            if matches!(entry, std::collections::hash_map::Entry::Occupied(_)) {
                break;
            }
            entry.or_default();
            name = name.base_name();
        }
    }
}

/// `_<port>._<proto>.<base>` for a named port; unnamed ports have no SRV record.
fn srv_name(base: &Name, port: Option<&str>, protocol: &str) -> Option<Name> {
    let port = port.filter(|p| !p.is_empty())?;
    let protocol = format!("_{}", protocol.to_lowercase());
    base.prepend_label(protocol.as_str())
        .and_then(|n| n.prepend_label(format!("_{}", port.to_lowercase()).as_str()))
        .ok()
}

/// `<name>.<zone>` for a literal relative name.
fn child(zone: &Name, name: &str) -> Name {
    Name::from_ascii(name)
        .and_then(|n| n.append_domain(zone))
        .expect("literal names are valid")
}

fn fqdn(mut name: Name) -> Name {
    name.set_fqdn(true);
    name
}

fn renamed(record: &Record, owner: &Name) -> Record {
    let mut record = record.clone();
    record.name = owner.clone();
    record
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(ip) => RData::A(A(ip)),
        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
    }
}

/// An address written as one DNS label: `10-42-0-5`, or IPv6 with `-` for `:`.
fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string().replace('.', "-"),
        IpAddr::V6(ip) => ip.to_string().replace(':', "-"),
    }
}

/// `<d>.<c>.<b>.<a>.in-addr.arpa.` or the nibble form under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> Name {
    let text = match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(ip) => {
            let mut text = String::with_capacity(72);
            for byte in ip.octets().iter().rev() {
                text.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            text.push_str("ip6.arpa.");
            text
        }
    };
    Name::from_ascii(text).expect("reverse names are valid")
}

fn is_reverse(name: &Name) -> bool {
    let labels: Vec<&[u8]> = name.iter().collect();
    labels.len() >= 2
        && labels[labels.len() - 1].eq_ignore_ascii_case(b"arpa")
        && (labels[labels.len() - 2].eq_ignore_ascii_case(b"in-addr")
            || labels[labels.len() - 2].eq_ignore_ascii_case(b"ip6"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn zone() -> Name {
        Name::from_ascii("cluster.local.").unwrap()
    }

    fn meta(namespace: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        }
    }

    fn port(name: Option<&str>, protocol: &str, number: i32) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            protocol: Some(protocol.into()),
            port: number,
            ..Default::default()
        }
    }

    fn cluster_ip(namespace: &str, name: &str, ips: &[&str], ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: meta(namespace, name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(ips[0].into()),
                cluster_ips: Some(ips.iter().map(|ip| ip.to_string()).collect()),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn headless(namespace: &str, name: &str) -> Service {
        Service {
            metadata: meta(namespace, name),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn external(namespace: &str, name: &str, target: &str) -> Service {
        Service {
            metadata: meta(namespace, name),
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some(target.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// An endpoint: address, hostname, ready condition.
    type Ep<'a> = (&'a str, Option<&'a str>, Option<bool>);

    fn slice(namespace: &str, service: &str, family: &str, endpoints: &[Ep]) -> EndpointSlice {
        let mut metadata = meta(namespace, &format!("{service}-abc"));
        metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into());
        EndpointSlice {
            metadata,
            address_type: family.into(),
            endpoints: endpoints
                .iter()
                .map(|(ip, hostname, ready)| Endpoint {
                    addresses: vec![ip.to_string()],
                    hostname: hostname.map(Into::into),
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![
                EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
                EndpointPort {
                    name: Some(String::new()),
                    port: Some(9090),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
            ]),
        }
    }

    fn ask(index: &Index, name: &str, qtype: RecordType) -> Outcome {
        index.answer(&Query::query(Name::from_ascii(name).unwrap(), qtype))
    }

    /// The answer's code and records as text (`name type data`), sorted.
    fn answered(outcome: &Outcome) -> (ResponseCode, Vec<String>) {
        let Outcome::Answer { code, answers, .. } = outcome else {
            panic!("expected an answer, got {outcome:?}");
        };
        let mut records: Vec<String> = answers
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .collect();
        records.sort();
        (*code, records)
    }

    fn sample() -> Index {
        let services = [
            cluster_ip(
                "default",
                "web",
                &["10.43.0.20", "fd00:43::20"],
                vec![
                    port(Some("http"), "TCP", 80),
                    port(None, "TCP", 81),
                    port(Some("dns"), "UDP", 53),
                ],
            ),
            headless("db", "pg"),
            headless("db", "empty"),
            external("default", "search", "www.example.com"),
            external("default", "alias", "web.default.svc.cluster.local"),
        ];
        let slices = [
            slice(
                "db",
                "pg",
                "IPv4",
                &[
                    ("10.42.1.5", Some("pg-0"), Some(true)),
                    ("10.42.2.6", None, None),
                    ("10.42.2.7", Some("pg-2"), Some(false)),
                ],
            ),
            slice(
                "db",
                "empty",
                "IPv4",
                &[("10.42.1.9", Some("x"), Some(false))],
            ),
            // A slice of a Service that does not exist adds nothing.
            slice("db", "ghost", "IPv4", &[("10.42.1.10", None, Some(true))]),
        ];
        Index::build(&zone(), &services, &slices)
    }

    fn nxdomain(outcome: &Outcome) -> bool {
        matches!(outcome, Outcome::Answer { code: ResponseCode::NXDomain, answers, authorities, .. }
            if answers.is_empty() && authorities.len() == 1 && authorities[0].record_type() == RecordType::SOA)
    }

    fn nodata(outcome: &Outcome) -> bool {
        matches!(outcome, Outcome::Answer { code: ResponseCode::NoError, answers, authorities, .. }
            if answers.is_empty() && authorities.len() == 1 && authorities[0].record_type() == RecordType::SOA)
    }

    #[test]
    fn cluster_ip_service_has_a_aaaa_and_srv_for_named_ports() {
        let index = sample();
        assert_eq!(
            answered(&ask(
                &index,
                "web.default.svc.cluster.local.",
                RecordType::A
            )),
            (
                ResponseCode::NoError,
                vec!["web.default.svc.cluster.local. A 10.43.0.20".into()]
            )
        );
        assert_eq!(
            answered(&ask(
                &index,
                "web.default.svc.cluster.local.",
                RecordType::AAAA
            ))
            .1,
            vec!["web.default.svc.cluster.local. AAAA fd00:43::20".to_string()]
        );
        assert_eq!(
            answered(&ask(&index, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV)).1,
            vec!["_http._tcp.web.default.svc.cluster.local. SRV 0 100 80 web.default.svc.cluster.local.".to_string()]
        );
        let udp = ask(
            &index,
            "_dns._udp.web.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(answered(&udp).1.len(), 1);
        // The SRV target's addresses come along as additionals.
        let Outcome::Answer { additionals, .. } = &udp else {
            unreachable!()
        };
        assert_eq!(additionals.len(), 2, "{additionals:?}");
        // A named port under the other protocol does not exist.
        assert!(nxdomain(&ask(
            &index,
            "_http._udp.web.default.svc.cluster.local.",
            RecordType::SRV
        )));
    }

    #[test]
    fn names_are_case_insensitive_and_answered_as_asked() {
        let index = sample();
        let (code, records) = answered(&ask(
            &index,
            "WEB.Default.SVC.cluster.LOCAL.",
            RecordType::A,
        ));
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(
            records,
            vec!["WEB.Default.SVC.cluster.LOCAL. A 10.43.0.20".to_string()]
        );
    }

    #[test]
    fn headless_service_has_one_address_per_ready_endpoint_and_hostnames() {
        let index = sample();
        assert_eq!(
            answered(&ask(&index, "pg.db.svc.cluster.local.", RecordType::A)).1,
            vec![
                "pg.db.svc.cluster.local. A 10.42.1.5".to_string(),
                "pg.db.svc.cluster.local. A 10.42.2.6".to_string(),
            ]
        );
        assert_eq!(
            answered(&ask(&index, "pg-0.pg.db.svc.cluster.local.", RecordType::A)).1,
            vec!["pg-0.pg.db.svc.cluster.local. A 10.42.1.5".to_string()]
        );
        // An endpoint without a hostname is named by its address.
        assert_eq!(
            answered(&ask(
                &index,
                "10-42-2-6.pg.db.svc.cluster.local.",
                RecordType::A
            ))
            .1,
            vec!["10-42-2-6.pg.db.svc.cluster.local. A 10.42.2.6".to_string()]
        );
        // Not ready: no records at all.
        assert!(nxdomain(&ask(
            &index,
            "pg-2.pg.db.svc.cluster.local.",
            RecordType::A
        )));
        assert_eq!(
            answered(&ask(&index, "_http._tcp.pg.db.svc.cluster.local.", RecordType::SRV)).1,
            vec![
                "_http._tcp.pg.db.svc.cluster.local. SRV 0 100 8080 10-42-2-6.pg.db.svc.cluster.local.".to_string(),
                "_http._tcp.pg.db.svc.cluster.local. SRV 0 100 8080 pg-0.pg.db.svc.cluster.local.".to_string(),
            ]
        );
    }

    #[test]
    fn headless_service_without_ready_endpoints_is_nxdomain() {
        let index = sample();
        assert!(nxdomain(&ask(
            &index,
            "empty.db.svc.cluster.local.",
            RecordType::A
        )));
        assert!(nxdomain(&ask(
            &index,
            "ghost.db.svc.cluster.local.",
            RecordType::A
        )));
    }

    #[test]
    fn publish_not_ready_addresses_serves_unready_endpoints() {
        let mut service = headless("db", "empty");
        service.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let slices = [slice(
            "db",
            "empty",
            "IPv4",
            &[("10.42.1.9", Some("x"), Some(false))],
        )];
        let index = Index::build(&zone(), [&service], &slices);
        assert_eq!(
            answered(&ask(&index, "x.empty.db.svc.cluster.local.", RecordType::A)).1,
            vec!["x.empty.db.svc.cluster.local. A 10.42.1.9".to_string()]
        );
    }

    #[test]
    fn ipv6_headless_endpoints_get_aaaa_and_nibble_ptr() {
        let service = headless("db", "v6");
        let slices = [slice(
            "db",
            "v6",
            "IPv6",
            &[("fd00:42::5", Some("a"), Some(true))],
        )];
        let index = Index::build(&zone(), [&service], &slices);
        assert_eq!(
            answered(&ask(&index, "a.v6.db.svc.cluster.local.", RecordType::AAAA)).1,
            vec!["a.v6.db.svc.cluster.local. AAAA fd00:42::5".to_string()]
        );
        let reverse = reverse_name("fd00:42::5".parse().unwrap()).to_ascii();
        assert_eq!(
            answered(&ask(&index, &reverse, RecordType::PTR)).1,
            vec![format!("{reverse} PTR a.v6.db.svc.cluster.local.")]
        );
    }

    #[test]
    fn ptr_records_for_cluster_ips_and_endpoints() {
        let index = sample();
        assert_eq!(
            answered(&ask(&index, "20.0.43.10.in-addr.arpa.", RecordType::PTR)).1,
            vec!["20.0.43.10.in-addr.arpa. PTR web.default.svc.cluster.local.".to_string()]
        );
        assert_eq!(
            answered(&ask(&index, "5.1.42.10.in-addr.arpa.", RecordType::PTR)).1,
            vec!["5.1.42.10.in-addr.arpa. PTR pg-0.pg.db.svc.cluster.local.".to_string()]
        );
        // An address of nothing in the cluster is left to the upstream resolvers.
        assert_eq!(
            ask(&index, "99.0.43.10.in-addr.arpa.", RecordType::PTR),
            Outcome::Forward
        );
    }

    #[test]
    fn external_name_is_a_cname_resolved_further_upstream() {
        let index = sample();
        let outcome = ask(&index, "search.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            answered(&outcome).1,
            vec!["search.default.svc.cluster.local. CNAME www.example.com.".to_string()]
        );
        assert_eq!(
            outcome.external_target(index.zone()),
            Some(Name::from_ascii("www.example.com.").unwrap())
        );
        // A CNAME to a name in the zone is followed right away.
        let alias = ask(&index, "alias.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            answered(&alias).1,
            vec![
                "alias.default.svc.cluster.local. CNAME web.default.svc.cluster.local.".to_string(),
                "web.default.svc.cluster.local. A 10.43.0.20".to_string(),
            ]
        );
        assert_eq!(alias.external_target(index.zone()), None);
        // Asking for the CNAME itself gives just that.
        assert_eq!(
            answered(&ask(
                &index,
                "search.default.svc.cluster.local.",
                RecordType::CNAME
            ))
            .1
            .len(),
            1
        );
    }

    #[test]
    fn pod_names_resolve_to_the_address_they_spell() {
        let index = sample();
        assert_eq!(
            answered(&ask(
                &index,
                "10-42-1-5.db.pod.cluster.local.",
                RecordType::A
            ))
            .1,
            vec!["10-42-1-5.db.pod.cluster.local. A 10.42.1.5".to_string()]
        );
        assert_eq!(
            answered(&ask(
                &index,
                "fd00-42--5.db.pod.cluster.local.",
                RecordType::AAAA
            ))
            .1,
            vec!["fd00-42--5.db.pod.cluster.local. AAAA fd00:42::5".to_string()]
        );
        assert!(nodata(&ask(
            &index,
            "10-42-1-5.db.pod.cluster.local.",
            RecordType::AAAA
        )));
        assert!(nxdomain(&ask(
            &index,
            "10-42-1-300.db.pod.cluster.local.",
            RecordType::A
        )));
        assert!(nxdomain(&ask(
            &index,
            "10-42-1-5.x.db.pod.cluster.local.",
            RecordType::A
        )));
    }

    #[test]
    fn negative_answers_distinguish_nxdomain_from_nodata() {
        let index = sample();
        // A name that exists with no record of the type asked: NODATA.
        assert!(nodata(&ask(
            &index,
            "web.default.svc.cluster.local.",
            RecordType::MX
        )));
        // Empty non-terminals exist.
        assert!(nodata(&ask(
            &index,
            "default.svc.cluster.local.",
            RecordType::A
        )));
        assert!(nodata(&ask(&index, "svc.cluster.local.", RecordType::A)));
        assert!(nodata(&ask(&index, "pod.cluster.local.", RecordType::A)));
        // Nothing there: NXDOMAIN, with the zone's SOA.
        assert!(nxdomain(&ask(
            &index,
            "nope.default.svc.cluster.local.",
            RecordType::A
        )));
        assert!(nxdomain(&ask(
            &index,
            "nope.svc.cluster.local.",
            RecordType::A
        )));
        assert!(nxdomain(&ask(
            &index,
            "web.default.cluster.local.",
            RecordType::A
        )));
        assert!(nxdomain(&ask(
            &index,
            "x.web.default.svc.cluster.local.",
            RecordType::A
        )));
    }

    #[test]
    fn zone_apex_has_soa_ns_and_the_schema_version() {
        let index = sample();
        let soa = answered(&ask(&index, "cluster.local.", RecordType::SOA)).1;
        assert_eq!(soa.len(), 1);
        assert!(
            soa[0]
                .starts_with("cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local."),
            "{soa:?}"
        );
        assert_eq!(
            answered(&ask(&index, "cluster.local.", RecordType::NS)).1,
            vec!["cluster.local. NS ns.dns.cluster.local.".to_string()]
        );
        assert_eq!(
            answered(&ask(&index, "dns-version.cluster.local.", RecordType::TXT)).1,
            vec![format!("dns-version.cluster.local. TXT {SCHEMA_VERSION}")]
        );
    }

    #[test]
    fn names_outside_the_zone_are_forwarded() {
        let index = sample();
        assert_eq!(ask(&index, "example.com.", RecordType::A), Outcome::Forward);
        assert_eq!(ask(&index, "local.", RecordType::A), Outcome::Forward);
        assert_eq!(
            ask(&index, "web.default.svc.cluster.other.", RecordType::A),
            Outcome::Forward
        );
    }

    #[test]
    fn another_cluster_domain_is_served_instead() {
        let services = [cluster_ip("default", "web", &["10.43.0.20"], vec![])];
        let zone = Name::from_ascii("k8s.example.").unwrap();
        let index = Index::build(&zone, &services, std::iter::empty());
        assert_eq!(
            answered(&ask(&index, "web.default.svc.k8s.example.", RecordType::A)).1,
            vec!["web.default.svc.k8s.example. A 10.43.0.20".to_string()]
        );
        assert_eq!(
            ask(&index, "web.default.svc.cluster.local.", RecordType::A),
            Outcome::Forward
        );
    }

    #[test]
    fn services_without_an_address_yet_or_bad_names_add_nothing() {
        let mut pending = cluster_ip("default", "pending", &[""], vec![]);
        pending.spec.as_mut().unwrap().cluster_ips = None;
        let bad = external("default", "bad", "not a name..");
        let index = Index::build(&zone(), [&pending, &bad], std::iter::empty());
        assert!(nxdomain(&ask(
            &index,
            "pending.default.svc.cluster.local.",
            RecordType::A
        )));
        assert!(nxdomain(&ask(
            &index,
            "bad.default.svc.cluster.local.",
            RecordType::A
        )));
        assert_eq!(index.len(), Index::empty(&zone()).len());
    }
}
