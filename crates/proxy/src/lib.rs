//! The service proxy of one node (`krust-proxy`): Services and EndpointSlices turned
//! into one nftables table, applied atomically.
