//! Cluster DNS (`krust-dns`): `<svc>.<ns>.svc.cluster.local`, endpoint and pod
//! records from the API; every other name forwarded to an upstream resolver.
